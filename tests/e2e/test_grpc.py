"""The Open Inference Protocol over gRPC against real servers, spoken to with tritonclient.grpc (and, for
what tritonclient never sends, its generated stub): health, metadata, every zoo classifier equal to
onnxruntime, every datatype, typed contents, classification, status codes, deadlines, keys, and a fuzz run.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers.onnx_models import V2_TO_ONNX, classifier, write_model
from tests.helpers.servers import E2E, MODELS, RunningServer, start_server, stop
from tests.helpers.zoo import session

pytestmark = pytest.mark.e2e
CLASSIFIER_TASKS = {
    "binary_classification",
    "multiclass_classification",
    "sequence_classification",
    "discriminator",
}
NUMPY_OF = {"BOOL": np.bool_, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}
NUMPY_OF |= {name: getattr(np, name.lower()) for name in V2_TO_ONNX if name[:3] in ("INT", "UIN")}


def grpc_client(server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")


@pytest.fixture(scope="module")
def client(e2e: E2E) -> triton.InferenceServerClient:
    return grpc_client(e2e.server)


@pytest.fixture(scope="module")
def stub(e2e: E2E) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{e2e.server.grpc_port}") as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def zoo_classifiers() -> list[str]:
    names = []
    for path in sorted(MODELS.glob("*/1/model.json")):
        document = json.loads(path.read_text())
        if document.get("task") in CLASSIFIER_TASKS:
            names.append(document["name"])
    return names


def test_health_and_metadata(client: triton.InferenceServerClient, e2e: E2E) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris-like") and client.is_model_ready("iris-like", "1")
    assert not client.is_model_ready("corrupt")
    metadata = client.get_server_metadata()
    assert metadata.name == "recap-serve" and "classification" in metadata.extensions
    model = client.get_model_metadata("iris-like")
    assert list(model.versions) == ["1", "2"] and model.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("input", "FP32", [-1, 4])]
    with grpc.insecure_channel(f"127.0.0.1:{e2e.server.grpc_port}") as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("name", zoo_classifiers())
def test_every_zoo_classifier_equals_onnxruntime(zoo_server: RunningServer, name: str) -> None:
    reference = session(name)
    spec = reference.get_inputs()[0]
    shape = [3 if i == 0 else (5 if not isinstance(d, int) else d) for i, d in enumerate(spec.shape)]
    data = np.random.default_rng(7).normal(size=shape).astype(np.float32)
    expected = reference.run(["probabilities"], {spec.name: data})[0]
    client = grpc_client(zoo_server)
    tensor = triton.InferInput(spec.name, shape, "FP32")
    tensor.set_data_from_numpy(data)
    result = client.infer(name, [tensor], outputs=[triton.InferRequestedOutput("probabilities")])
    got = result.as_numpy("probabilities")
    assert got is not None and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert result.get_response().model_version == "1"


def _sample(datatype: str, rows: int = 2, width: int = 3) -> np.ndarray:
    rng = np.random.default_rng(3)
    if datatype == "BYTES":
        return np.array(
            [f"r{i}-{j}".encode() for i in range(rows) for j in range(width)], dtype=np.object_
        ).reshape(rows, width)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=(rows, width)).astype(np.bool_)
    dtype = np.dtype(NUMPY_OF[datatype])
    if dtype.kind == "f":
        return rng.normal(size=(rows, width)).astype(dtype)
    info = np.iinfo(dtype)  # type: ignore[type-var]
    return rng.integers(info.min, info.max, size=(rows, width), dtype=dtype, endpoint=True)


@pytest.mark.parametrize("datatype", list(V2_TO_ONNX))
def test_every_datatype_round_trips_in_raw(client: triton.InferenceServerClient, datatype: str) -> None:
    data = _sample(datatype)
    tensor = triton.InferInput("input", list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    got = client.infer(f"identity-{datatype.lower()}", [tensor]).as_numpy("output")
    assert got is not None
    assert got.dtype == data.dtype or datatype == "BYTES"  # tritonclient gives BYTES as object arrays
    np.testing.assert_array_equal(got, data)


@pytest.mark.parametrize(
    ("datatype", "field", "values"),
    [
        ("FP32", "fp32_contents", [0.5, -1.25, 3.0, 4.0, 5.5, -6.0]),
        ("INT8", "int_contents", [-128, 127, 0, 1, -1, 5]),
        ("UINT64", "uint64_contents", [0, 2**64 - 1, 3, 4, 5, 6]),
        ("BOOL", "bool_contents", [True, False, True, True, False, False]),
        ("BYTES", "bytes_contents", [b"a", b"", b"ccc", b"d", b"e", b"f"]),
    ],
)
def test_typed_contents_are_accepted(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, datatype: str, field: str, values: list[object]
) -> None:
    request = service_pb2.ModelInferRequest(model_name=f"identity-{datatype.lower()}")
    tensor = request.inputs.add(name="input", datatype=datatype, shape=[2, 3])
    getattr(tensor.contents, field).extend(values)
    response = stub.ModelInfer(request)
    expected = np.array(values, dtype=np.dtype(NUMPY_OF[datatype])).reshape(2, 3)
    got = triton.InferResult(response).as_numpy("output")
    np.testing.assert_array_equal(got, expected)


def test_classification_with_class_count(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
    output = triton.InferRequestedOutput("probabilities", class_count=2)
    top = client.infer("iris-like", [tensor], outputs=[output]).as_numpy("probabilities")
    assert top is not None and top.shape == (1, 2)
    labels = [entry.decode().split(":")[2] for entry in top[0]]
    assert set(labels) <= {"setosa", "versicolor", "virginica"} and len(set(labels)) == 2
    scores = [float(entry.decode().split(":")[0]) for entry in top[0]]
    assert scores == sorted(scores, reverse=True)


def test_status_codes_and_the_server_stays_alive(
    client: triton.InferenceServerClient, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    tensor = triton.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("no-such-model", [tensor])
    assert unknown.value.status() == "StatusCode.NOT_FOUND" and "unknown model" in unknown.value.message()
    bad = triton.InferInput("input", [1, 5], "FP32")
    bad.set_data_from_numpy(np.ones((1, 5), dtype=np.float32))
    with pytest.raises(InferenceServerException) as shape:
        client.infer("iris-like", [bad])
    assert (
        shape.value.status() == "StatusCode.INVALID_ARGUMENT" and "axis 1 must be 4" in shape.value.message()
    )
    with pytest.raises(InferenceServerException) as not_ready:
        client.infer("corrupt", [tensor])
    assert not_ready.value.status() == "StatusCode.UNAVAILABLE"
    short = service_pb2.ModelInferRequest(model_name="iris-like")
    short.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    short.raw_input_contents.append(b"\x00" * 12)  # 3 floats for a [1, 4] tensor
    with pytest.raises(grpc.RpcError) as size:
        stub.ModelInfer(short)
    assert size.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        client.is_server_live() and client.infer("iris-like", [tensor]).as_numpy("probabilities") is not None
    )


def test_a_client_deadline_is_honoured(zoo_server: RunningServer) -> None:
    client = grpc_client(zoo_server)
    rows = 200_000  # a batch that runs in a worker thread, well over the 50 ms allowed
    tensor = triton.InferInput("input", [rows, 30], "FP32")
    tensor.set_data_from_numpy(np.random.default_rng(1).normal(size=(rows, 30)).astype(np.float32))
    with pytest.raises(InferenceServerException) as late:
        client.infer("breast-cancer-mlp", [tensor], client_timeout=0.05)
    assert late.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert client.is_server_live()
    small = triton.InferInput("input", [1, 30], "FP32")
    small.set_data_from_numpy(np.zeros((1, 30), dtype=np.float32))
    assert client.infer("breast-cancer-mlp", [small], client_timeout=10).as_numpy("probabilities") is not None


def test_keys_in_the_metadata(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    write_model(repository, "m", classifier(4, 3, seed=1), manifest={"task": "multiclass_classification"})
    keys = tmp_path / "api-keys"
    keys.write_text("inference grpc-key-0123456789abcdef\n")
    server = start_server(repository, tmp_path / "server.log", env={"RECAP_API_KEYS_FILE": str(keys)})
    try:
        client = grpc_client(server)
        tensor = triton.InferInput("input", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        with pytest.raises(InferenceServerException) as missing:
            client.infer("m", [tensor])
        assert missing.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as wrong:
            client.infer("m", [tensor], headers={"authorization": "Bearer not-a-key"})
        assert wrong.value.status() == "StatusCode.UNAUTHENTICATED"
        headers = {"authorization": "Bearer grpc-key-0123456789abcdef"}
        assert client.infer("m", [tensor], headers=headers).as_numpy("probabilities") is not None
        with pytest.raises(InferenceServerException) as scope:
            client.get_model_repository_index(headers=headers)  # needs the admin scope
        assert scope.value.status() == "StatusCode.PERMISSION_DENIED"
        assert client.is_server_live()  # health needs no key, as REST's probes
    finally:
        stop(server.process)


def _mutate(rng: random.Random, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(rng.randint(1, 6)):
        choice = rng.random()
        if choice < 0.4 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.6 and data:
            del data[rng.randrange(len(data)) :]
        elif choice < 0.8:
            position = rng.randrange(len(data) + 1)
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif data:
            start = rng.randrange(len(data))
            data[start : start + rng.randint(1, 16)] = b""
    return bytes(data)


def _seeds() -> list[bytes]:
    seeds = []
    for name, datatype, shape in [("iris-like", "FP32", [2, 4]), ("identity-bytes", "BYTES", [1, 3])]:
        data = _sample(datatype, shape[0], shape[1]) if datatype == "BYTES" else np.ones(shape, np.float32)
        tensor = triton.InferInput("input", shape, datatype)
        tensor.set_data_from_numpy(data)
        request = service_pb2.ModelInferRequest(model_name=name, id="fuzz")
        request.inputs.extend([tensor._get_tensor()])
        request.raw_input_contents.append(tensor._get_content())
        request.outputs.add(name="output" if name.startswith("identity") else "probabilities")
        seeds.append(request.SerializeToString())
    typed = service_pb2.ModelInferRequest(model_name="identity-int16")
    typed.inputs.add(name="input", datatype="INT16", shape=[1, 3]).contents.int_contents.extend([1, 2, 3])
    seeds.append(typed.SerializeToString())
    return seeds


def test_a_thousand_mutated_infer_requests_get_no_unknown_or_internal(e2e: E2E) -> None:
    rng = random.Random(20261202)
    seeds = _seeds()
    seen: dict[str, int] = {}
    with grpc.insecure_channel(f"127.0.0.1:{e2e.server.grpc_port}") as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        for _ in range(1000):
            try:
                infer(_mutate(rng, rng.choice(seeds)), timeout=10)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
            seen[code.name] = seen.get(code.name, 0) + 1
    assert "UNKNOWN" not in seen and "INTERNAL" not in seen, seen
    assert sum(seen.values()) == 1000 and seen.get("OK", 0) > 0 and seen.get("INVALID_ARGUMENT", 0) > 0
    assert grpc_client(e2e.server).is_server_live()
    print(f"grpc fuzz: {seen}")
