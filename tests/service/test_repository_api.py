"""Triton's model repository and statistics extensions, and readiness, through the app in process."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.apps import make_client
from tests.helpers.onnx_models import classifier, write_model

MANIFEST = {"task": "multiclass_classification", "labels": ["a", "b", "c"]}
ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write_model(tmp_path, "m", classifier(4, 3, seed=1), manifest=MANIFEST)
    write_model(tmp_path, "other", classifier(4, 3, seed=2), manifest=MANIFEST)
    return tmp_path


def test_server_metadata_lists_both_extensions(repo: Path) -> None:
    with make_client(repo) as client:
        extensions = client.get("/v2").json()["extensions"]
    assert "model_repository" in extensions and "statistics" in extensions


def test_explicit_load_unload_and_the_index(repo: Path) -> None:
    with make_client(repo, model_control_mode="explicit", load_model=["other"]) as client:
        index = client.post("/v2/repository/index").json()
        assert {"name": "other", "version": "1", "state": "READY"} in index
        assert {"name": "m", "state": "UNAVAILABLE", "reason": "not loaded"} in index
        assert client.post("/v2/models/m/infer", json=ROW).status_code == 404
        loaded = client.post("/v2/repository/models/m/load")
        assert loaded.status_code == 200 and loaded.json() == [
            {"name": "m", "version": "1", "state": "READY"}
        ]
        assert client.post("/v2/models/m/infer", json=ROW).status_code == 200
        assert client.post("/v2/repository/index", json={"ready": True}).json() == [
            {"name": "m", "version": "1", "state": "READY"},
            {"name": "other", "version": "1", "state": "READY"},
        ]
        assert client.post("/v2/repository/models/m/unload", json={}).status_code == 200
        after = client.post("/v2/models/m/infer", json=ROW)
        assert after.status_code == 404 and "unknown model" in after.json()["error"]
        # ../x decodes to a path no route takes (404); the others reach the lookup.
        for bad, status in (("..%2Fx", 404), ("nope", 404), ("x" * 300, 400), (".x", 400), ("M", 400)):
            answer = client.post(f"/v2/repository/models/{bad}/load")
            assert answer.status_code == status, (bad, answer.text)
            assert "error" in answer.json()
        refused = client.post("/v2/repository/models/m/load", json={"parameters": {"config": "{}"}})
        assert refused.status_code == 400 and "not supported" in refused.json()["error"]
        assert client.post("/v2/repository/index", json={"ready": "yes"}).status_code == 400


def test_a_failed_explicit_load_is_400_with_the_reason(repo: Path) -> None:
    write_model(repo, "broken", b"not onnx", manifest=MANIFEST)
    with make_client(repo, model_control_mode="explicit") as client:
        answer = client.post("/v2/repository/models/broken/load")
        assert answer.status_code == 400 and "could not load model.onnx" in answer.json()["error"]
        assert client.get("/v2/health/ready").status_code == 503  # strict: a model without a ready version


@pytest.mark.parametrize("mode", ["none", "poll"])
def test_load_and_unload_outside_explicit_mode_are_400_naming_the_mode(repo: Path, mode: str) -> None:
    with make_client(repo, model_control_mode=mode) as client:
        for action in ("load", "unload"):
            answer = client.post(f"/v2/repository/models/m/{action}")
            assert answer.status_code == 400
            assert f"--model-control-mode {mode}" in answer.json()["error"]


def test_readiness_counts_default_versions_only(repo: Path) -> None:
    write_model(repo, "m", b"broken newer version", version=2, manifest=MANIFEST)
    with make_client(repo) as client:
        assert client.get("/v2/health/ready").status_code == 200  # m's default (v1) is ready
        states = client.get("/v2/models/m").json()["version_states"]
        assert states[0] == {"version": "1", "state": "READY", "reason": None}
        assert states[1]["state"] == "UNAVAILABLE" and "could not load" in states[1]["reason"]
        assert client.post("/v2/models/m/infer", json=ROW).json()["model_version"] == "1"


def _metric_sum(text: str, family: str, model: str) -> float:
    for metric in text_string_to_metric_families(text):
        if metric.name == family:
            return sum(
                s.value for s in metric.samples if s.name.endswith("_sum") and s.labels.get("model") == model
            )
    raise AssertionError(f"no {family}")


def test_statistics_count_the_requests_sent(repo: Path) -> None:
    with make_client(repo) as client:
        for rows in (1, 2, 3):
            row = {
                "inputs": [
                    {"name": "input", "datatype": "FP32", "shape": [rows, 4], "data": [1.0] * 4 * rows}
                ]
            }
            assert client.post("/v2/models/m/infer", json=row).status_code == 200
        assert client.post("/v1/models/m:predict", json={"instances": [[1, 2, 3, 4]]}).status_code == 200
        bad = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 5], "data": [1] * 5}]}
        assert client.post("/v2/models/m/infer", json=bad).status_code == 400
        stats = client.get("/v2/models/m/stats").json()["model_stats"]
        metrics = client.get("/metrics").text
        assert client.get("/v2/models/m/versions/1/stats").json()["model_stats"] == stats
        everything = client.get("/v2/models/stats").json()["model_stats"]
        assert client.get("/v2/models/nope/stats").status_code == 404
    assert [(s["name"], s["version"]) for s in everything] == [("m", "1"), ("other", "1")]
    (entry,) = stats
    assert entry["inference_count"] == 1 + 2 + 3 + 1 and entry["execution_count"] == 4
    inference = entry["inference_stats"]
    assert inference["success"]["count"] == 4 and inference["fail"]["count"] == 1
    for phase in ("compute_input", "compute_infer", "compute_output", "queue"):
        assert inference[phase]["count"] == 4
    assert inference["compute_infer"]["ns"] > 0 and inference["compute_input"]["ns"] > 0
    assert inference["success"]["ns"] > inference["compute_infer"]["ns"]
    assert entry["last_inference"] > 1_700_000_000_000  # ms since the epoch
    histogram_ns = _metric_sum(metrics, "recap_inference_duration_seconds", "m") * 1e9
    assert abs(inference["compute_infer"]["ns"] - histogram_ns) <= 0.1 * histogram_ns


def test_readiness_is_503_while_draining(repo: Path) -> None:
    with make_client(repo) as client:
        assert client.get("/v2/health/ready").status_code == 200
        client.app.state.recap.drain.begin()  # type: ignore[attr-defined]
        answer = client.get("/v2/health/ready")
        assert answer.status_code == 503 and "shutting down" in answer.json()["error"]
        assert client.post("/v2/models/m/infer", json=ROW).status_code == 200  # still served
