"""A real server process, spoken to with tritonclient's HTTP client (V2), as Triton users would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.helpers.servers import E2E

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(e2e: E2E) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=e2e.server.url.removeprefix("http://"))


def onnx_run(path: Path, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path)).run([output], feeds)[0]


def classifier(e2e: E2E, zoo_name: str, stand_in: str) -> tuple[str, Path, int]:
    """The zoo model when it has landed, else the test model of the same kind; with its width."""
    name = zoo_name if zoo_name in e2e.zoo else stand_in
    path = e2e.repository / name / "1" / "model.onnx"
    width = ort.InferenceSession(str(path)).get_inputs()[0].shape[1]
    return name, path, int(width)


def test_server_and_model_readiness(client: triton.InferenceServerClient, e2e: E2E) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris-like")
    assert client.is_model_ready("iris-like", "1")
    assert not client.is_model_ready("corrupt")
    assert not client.is_model_ready("no-such-model")
    for name in e2e.zoo:
        assert client.is_model_ready(name)
    metadata = client.get_server_metadata()
    assert metadata["name"] == "recap-serve" and "classification" in metadata["extensions"]


def test_model_metadata(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("iris-like")
    assert metadata["versions"] == ["1", "2"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in metadata["outputs"]] == ["logits", "probabilities"]
    assert client.get_model_metadata("iris-like", "1")["name"] == "iris-like"
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("no-such-model")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(
    ("zoo_name", "stand_in"), [("breast-cancer-mlp", "binary-like"), ("iris-mlp", "iris-like")]
)
def test_infer_probabilities_match_onnxruntime(
    client: triton.InferenceServerClient, e2e: E2E, zoo_name: str, stand_in: str, binary: bool
) -> None:
    name, path, width = classifier(e2e, zoo_name, stand_in)
    rows = np.random.default_rng(0).normal(size=(6, width)).astype(np.float32)
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    result = client.infer(
        name,
        [tensor],
        outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary)],
        request_id="e2e-1",
    )
    got = result.as_numpy("probabilities")
    assert result.get_response()["id"] == "e2e-1"
    expected = onnx_run(path, "probabilities", {"input": rows})
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert ((got >= 0) & (got <= 1)).all()
    if got.shape[1] > 1:
        np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-6)


def test_infer_with_tritonclient_defaults_all_outputs(client: triton.InferenceServerClient) -> None:
    rows = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    tensor = triton.InferInput("input", [2, 4], "FP32")
    tensor.set_data_from_numpy(rows)  # tritonclient's default: binary tensor data, binary outputs
    result = client.infer("iris-like", [tensor])
    assert result.as_numpy("logits").shape == (2, 3)
    assert result.as_numpy("probabilities").shape == (2, 3)


@pytest.mark.parametrize(
    ("zoo_name", "stand_in"), [("breast-cancer-mlp", "binary-like"), ("iris-mlp", "iris-like")]
)
def test_classification_extension(
    client: triton.InferenceServerClient, e2e: E2E, zoo_name: str, stand_in: str
) -> None:
    name, path, width = classifier(e2e, zoo_name, stand_in)
    labels = client.get_model_metadata(name)["labels"]
    rows = np.random.default_rng(2).normal(size=(3, width)).astype(np.float32)
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=False)
    result = client.infer(
        name, [tensor], outputs=[triton.InferRequestedOutput("probabilities", class_count=2)]
    )
    top = result.as_numpy("probabilities")
    assert top.shape == (3, 2)
    probabilities = onnx_run(path, "probabilities", {"input": rows})
    if probabilities.shape[1] == 1:  # binary: P(labels[1]) widened to two classes
        probabilities = np.concatenate([1 - probabilities, probabilities], axis=1)
    for row, entries in zip(probabilities, top, strict=True):
        best = np.argsort(-row)[:2]
        for index, entry in zip(best, entries, strict=True):
            text = entry.decode() if isinstance(entry, bytes) else str(entry)
            score, idx, label = text.split(":")
            assert int(idx) == index and label == labels[index]
            assert float(score) == pytest.approx(float(row[index]), abs=1e-6)


def test_errors_come_back_as_triton_exceptions(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("input", [1, 5], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 5), np.float32), binary_data=False)
    with pytest.raises(InferenceServerException, match="axis 1 must be 4"):
        client.infer("iris-like", [tensor])
    with pytest.raises(InferenceServerException, match="is not ready"):
        client.infer("corrupt", [tensor])
