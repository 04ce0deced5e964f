"""A real server process: V1 over httpx, and how bare/corrupt/tampered models show in metadata and log."""

from __future__ import annotations

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.helpers.servers import E2E

pytestmark = pytest.mark.e2e


def test_v1_predict_and_classify_match_onnxruntime(e2e: E2E) -> None:
    name = "iris-mlp" if "iris-mlp" in e2e.zoo else "iris-like"
    path = e2e.repository / name / "1" / "model.onnx"
    session = ort.InferenceSession(str(path))
    width = int(session.get_inputs()[0].shape[1])
    rows = np.random.default_rng(3).normal(size=(4, width)).astype(np.float32)
    (expected,) = session.run(["probabilities"], {"input": rows})
    with httpx.Client(base_url=e2e.server.url) as client:
        status = client.get(f"/v1/models/{name}").json()["model_version_status"]
        assert status[0]["state"] == "AVAILABLE"
        predictions = client.post(f"/v1/models/{name}/versions/1:predict", json={"instances": rows.tolist()})
        assert predictions.status_code == 200
        got = np.array([p["probabilities"] for p in predictions.json()["predictions"]])
        np.testing.assert_allclose(got, expected, atol=1e-6)
        np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-6)
        columns = client.post(f"/v1/models/{name}:predict", json={"inputs": {"input": rows.tolist()}}).json()
        np.testing.assert_allclose(np.array(columns["outputs"]["probabilities"]), expected, atol=1e-6)
        labels = client.get(f"/v2/models/{name}").json()["labels"]
        results = client.post(f"/v1/models/{name}:classify", json={"instances": rows.tolist()}).json()[
            "results"
        ]
    for row, ranking in zip(expected, results, strict=True):
        assert [label for label, _ in ranking] == [labels[i] for i in np.argsort(-row, kind="stable")]
        np.testing.assert_allclose([score for _, score in ranking], np.sort(row)[::-1], atol=1e-6)


def test_bare_model_serves_from_its_graph(e2e: E2E) -> None:
    with httpx.Client(base_url=e2e.server.url) as client:
        metadata = client.get("/v2/models/adder").json()
        assert metadata["ready"] and [i["name"] for i in metadata["inputs"]] == ["a", "b"]
        body = {
            "inputs": [
                {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
                {"name": "b", "shape": [1, 2], "datatype": "FP32", "data": [10, 20]},
            ]
        }
        outputs = client.post("/v2/models/adder/infer", json=body).json()["outputs"]
    assert outputs[0] == {"name": "sum", "datatype": "FP32", "shape": [1, 2], "data": [11.0, 22.0]}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("corrupt", "INVALID_PROTOBUF"),
        ("tampered", "sha256 mismatch"),
        ("unsupported", "could not load model.onnx"),
    ],
)
def test_broken_models_are_not_ready_and_say_why(e2e: E2E, name: str, reason: str) -> None:
    with httpx.Client(base_url=e2e.server.url) as client:
        metadata = client.get(f"/v2/models/{name}").json()
        assert metadata["ready"] is False and reason in metadata["reason"]
        assert client.get(f"/v2/models/{name}/ready").status_code == 503
        index = {m["name"]: m for m in client.post("/v2/repository/index").json()}
        assert index[name]["state"] == "UNAVAILABLE"
        assert client.get("/v2/models/iris-like/ready").status_code == 200  # the others serve
    assert f"{name} version 1 failed to load" in e2e.server.log()
    assert reason in e2e.server.log()
