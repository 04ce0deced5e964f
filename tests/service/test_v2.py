"""V2 REST in process: metadata, readiness, infer for every datatype, outputs, classification, binary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.main import create_app
from service.runtime.tensors import numpy_to_binary
from service.settings import Settings
from tests.helpers.apps import make_client
from tests.helpers.tensor_samples import SAMPLES


def test_server_metadata_with_and_without_trailing_slash(client: TestClient) -> None:
    for path in ("/v2", "/v2/"):
        body = client.get(path).json()
        assert body["name"] == "recap-serve"
        assert {"classification", "binary_tensor_data"} <= set(body["extensions"])


def test_health(client: TestClient) -> None:
    assert client.get("/v2/health/live").status_code == 200
    ready = client.get("/v2/health/ready")  # strict readiness: the broken test models
    assert ready.status_code == 503
    assert "corrupt v1" in ready.json()["error"]


def test_model_metadata_and_readiness(client: TestClient) -> None:
    body = client.get("/v2/models/iris-like").json()
    assert body["versions"] == ["1", "2"] and body["platform"] == "onnxruntime_onnx"
    assert body["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert body["providers"] == ["CPUExecutionProvider"] and body["ready"] is True
    assert body["max_batch_size"] == 8  # version 2's model.json
    assert "max_batch_size" not in client.get("/v2/models/iris-like/versions/1").json()
    assert client.get("/v2/models/iris-like/ready").json()["ready"] is True
    assert client.get("/v2/models/iris-like/versions/1/ready").status_code == 200
    assert client.get("/v2/models/corrupt/ready").status_code == 503
    assert client.get("/v2/models/nope/ready").status_code == 404
    corrupt = client.get("/v2/models/corrupt").json()
    assert corrupt["ready"] is False and "INVALID_PROTOBUF" in corrupt["reason"]


def infer(client: TestClient, model: str, body: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_every_datatype_round_trips(client: TestClient, datatype: str) -> None:
    data = SAMPLES[datatype][:3]
    body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": datatype, "data": data}]}
    output = infer(client, f"identity-{datatype.lower()}", body)["outputs"][0]
    assert output["name"] == "output" and output["datatype"] == datatype and output["shape"] == [1, 3]
    expected = data if datatype != "FP16" else np.array(data, np.float16).astype(float).tolist()
    assert output["data"] == expected


def test_probabilities_match_onnxruntime(client: TestClient, repo_dir: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    body = {
        "id": "req-7",
        "parameters": {"trace": "abc", "priority": 1},
        "inputs": [{"name": "input", "shape": [5, 4], "datatype": "FP32", "data": rows.tolist()}],
        "outputs": [{"name": "probabilities"}],
    }
    answer = infer(client, "iris-like", body, version="1")
    assert answer["id"] == "req-7" and answer["model_version"] == "1"
    assert answer["parameters"] == {"trace": "abc", "priority": 1}
    assert [o["name"] for o in answer["outputs"]] == ["probabilities"]
    got = np.array(answer["outputs"][0]["data"], np.float32).reshape(5, 3)
    session = ort.InferenceSession(str(repo_dir / "iris-like" / "1" / "model.onnx"))
    (expected,) = session.run(["probabilities"], {"input": rows})
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-6)


def test_classification_extension(client: TestClient) -> None:
    rows = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    body = {
        "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": rows.ravel().tolist()}],
        "outputs": [
            {"name": "probabilities", "parameters": {"classification": 2}},
            {"name": "probabilities2"},
        ],
    }
    response = client.post("/v2/models/iris-like/infer", json=body)
    assert response.status_code == 400  # unknown second output
    body["outputs"] = [
        {"name": "probabilities", "parameters": {"classification": 2}},
        {"name": "probabilities"},
    ]
    assert "requested twice" in client.post("/v2/models/iris-like/infer", json=body).json()["error"]
    body["outputs"] = [{"name": "probabilities", "parameters": {"classification": 2}}]
    output = infer(client, "iris-like", body)["outputs"][0]
    assert output["datatype"] == "BYTES" and output["shape"] == [2, 2]
    plain = infer(client, "iris-like", {"inputs": body["inputs"], "outputs": [{"name": "probabilities"}]})
    probabilities = np.array(plain["outputs"][0]["data"]).reshape(2, 3)
    labels = ["setosa", "versicolor", "virginica"]
    for row, strings in zip(probabilities, np.array(output["data"]).reshape(2, 2), strict=True):
        best = np.argsort(-row)[:2]
        for index, text in zip(best, strings, strict=True):
            score, idx, label = text.split(":")
            assert int(idx) == index and label == labels[index]
            assert float(score) == pytest.approx(row[index], abs=1e-6)


def test_binary_classifier_classification_is_two_classes(client: TestClient) -> None:
    body = {
        "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [0.3] * 30}],
        "outputs": [{"name": "probabilities"}, {"name": "logits", "parameters": {"classification": 2}}],
    }
    outputs = infer(client, "binary-like", body)["outputs"]
    p = outputs[0]["data"][0]
    assert 0 <= p <= 1
    top = outputs[1]["data"]
    assert {t.split(":")[2] for t in top} == {"malignant", "benign"}
    assert top[0].endswith("benign" if p > 0.5 else "malignant")


def test_multiple_inputs_and_output_selection(client: TestClient) -> None:
    body = {
        "inputs": [
            {"name": "b", "shape": [2, 2], "datatype": "FP32", "data": [1, 1, 1, 1]},
            {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]},
        ],
        "outputs": [{"name": "difference"}],
    }
    outputs = infer(client, "adder", body)["outputs"]
    assert outputs == [
        {"name": "difference", "datatype": "FP32", "shape": [2, 2], "data": [0.0, 1.0, 2.0, 3.0]}
    ]


def test_binary_tensor_data_extension(client: TestClient) -> None:
    rows = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    raw = numpy_to_binary(rows)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [3, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "logits"}],
        }
    ).encode()
    response = client.post(
        "/v2/models/iris-like/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    document = json.loads(response.content[:length])
    probabilities, logits = document["outputs"]
    assert probabilities["parameters"]["binary_data_size"] == 3 * 3 * 4 and "data" not in probabilities
    got = np.frombuffer(response.content[length:], np.float32).reshape(3, 3)
    np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-6)
    assert len(logits["data"]) == 9
    bad = client.post(
        "/v2/models/iris-like/infer",
        content=header + raw[:-4],
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert bad.status_code == 400 and "binary_data_size does not fit" in bad.json()["error"]


def test_body_limit_gives_413(repo_dir: Path) -> None:
    with make_client(repo_dir, max_body_bytes=1024) as small:
        body = {"inputs": [{"name": "input", "shape": [100, 4], "datatype": "FP32", "data": [0.5] * 400}]}
        response = small.post("/v2/models/iris-like/versions/1/infer", json=body)
        assert response.status_code == 413
        assert "over the limit of 1024" in response.json()["error"]

        def chunks() -> Iterator[bytes]:
            yield b'{"inputs": ['
            yield b" " * 2000
            yield b"]}"

        chunked = small.post("/v2/models/iris-like/versions/1/infer", content=chunks())
        assert chunked.status_code == 413
        good = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}]}
        assert small.post("/v2/models/iris-like/versions/1/infer", json=good).status_code == 200


def test_big_batches_run_in_a_worker_thread(repo_dir: Path) -> None:
    with make_client(repo_dir, offload_min_rows=2) as offloading:
        body = {"inputs": [{"name": "input", "shape": [5, 4], "datatype": "FP32", "data": [0.5] * 20}]}
        response = offloading.post("/v2/models/iris-like/versions/1/infer", json=body)
        assert response.status_code == 200 and len(response.json()["outputs"][0]["data"]) == 15


def test_the_documented_infer_routes_answer_too(client: TestClient, repo_dir: Path) -> None:
    # The front door answers infer before routing; the routes behind it must answer the same.
    app = create_app(Settings(model_repository=repo_dir))
    app.build_middleware_stack = lambda: FastAPI.build_middleware_stack(app)  # type: ignore[method-assign]
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.1] * 4}]}
    with TestClient(app) as router_client:
        via_route = router_client.post("/v2/models/iris-like/versions/1/infer", json=body)
        missing = router_client.post("/v2/models/nope/infer", json=body)
    layer, layers = app.middleware_stack, []
    while layer is not None:
        layers.append(type(layer).__name__)
        layer = getattr(layer, "app", None)
    assert "FrontDoor" not in layers
    assert via_route.status_code == 200
    assert via_route.json() == client.post("/v2/models/iris-like/versions/1/infer", json=body).json()
    assert missing.status_code == 404 and missing.json() == {"error": "unknown model 'nope'"}
