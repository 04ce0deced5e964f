"""V1 / TF-Serving style REST in process: status, predict (rows and columns), classify."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi.testclient import TestClient


def test_status(client: TestClient) -> None:
    body = client.get("/v1/models/iris-like").json()
    assert [v["version"] for v in body["model_version_status"]] == ["1", "2"]
    assert all(v["state"] == "AVAILABLE" for v in body["model_version_status"])
    one = client.get("/v1/models/iris-like/versions/1").json()["model_version_status"]
    assert len(one) == 1 and one[0]["status"]["error_code"] == "OK"
    broken = client.get("/v1/models/corrupt").json()["model_version_status"][0]
    assert broken["state"] == "UNAVAILABLE" and "could not load" in broken["status"]["error_message"]
    assert client.get("/v1/models/nope").status_code == 404


def test_predict_rows_and_columns(client: TestClient, repo_dir: Path) -> None:
    rows = np.random.default_rng(4).normal(size=(3, 4)).astype(np.float32)
    session = ort.InferenceSession(str(repo_dir / "iris-like" / "1" / "model.onnx"))
    logits, probabilities = session.run(["logits", "probabilities"], {"input": rows})
    predictions = client.post(
        "/v1/models/iris-like/versions/1:predict", json={"instances": rows.tolist()}
    ).json()
    assert len(predictions["predictions"]) == 3
    got = np.array([p["probabilities"] for p in predictions["predictions"]])
    np.testing.assert_allclose(got, probabilities, atol=1e-6)
    outputs = client.post("/v1/models/iris-like/versions/1:predict", json={"inputs": rows.tolist()}).json()
    np.testing.assert_allclose(np.array(outputs["outputs"]["logits"]), logits, atol=1e-5)


def test_predict_multi_input_and_single_output(client: TestClient) -> None:
    instances = [{"a": [1, 2], "b": [3, 4]}, {"a": [0, 0], "b": [1, 1]}]
    answer = client.post("/v1/models/adder:predict", json={"instances": instances}).json()
    assert answer["predictions"][0] == {"sum": [4.0, 6.0], "difference": [-2.0, -2.0]}
    single = client.post("/v1/models/identity-int64:predict", json={"instances": [[1, 2, 3]]}).json()
    assert single == {"predictions": [[1, 2, 3]]}
    texts = client.post("/v1/models/identity-bytes:predict", json={"inputs": [["a", "b", "c"]]}).json()
    assert texts == {"outputs": [["a", "b", "c"]]}


def test_classify_ranks_labels_best_first(client: TestClient) -> None:
    rows = np.random.default_rng(5).normal(size=(2, 4)).tolist()
    results = client.post("/v1/models/iris-like:classify", json={"instances": rows}).json()["results"]
    assert len(results) == 2
    for ranking in results:
        assert {label for label, _ in ranking} == {"setosa", "versicolor", "virginica"}
        scores = [score for _, score in ranking]
        assert scores == sorted(scores, reverse=True)
        assert abs(sum(scores) - 1) < 1e-6
    binary = client.post("/v1/models/binary-like:classify", json={"instances": [[0.2] * 30]}).json()
    (ranking,) = binary["results"]
    assert {label for label, _ in ranking} == {"malignant", "benign"}
    assert abs(sum(score for _, score in ranking) - 1) < 1e-6
