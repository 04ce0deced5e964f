"""App-level concerns: /metrics names and labels, offline /docs, the OpenAPI schema, settings, CLI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.settings import Settings
from tests.helpers.apps import make_client


def test_metrics_names_and_labels(repo_dir: Path) -> None:
    body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [0.1] * 8}]}
    with make_client(repo_dir) as client:  # a fresh app: exact counts
        assert client.post("/v2/models/iris-like/versions/1/infer", json=body).status_code == 200
        assert client.post("/v2/models/unknown-model/infer", json=body).status_code == 404
        text = client.get("/metrics").text
    labels = 'endpoint="infer",model="iris-like",protocol="v2",version="1"'
    assert f"recap_requests_total{{{labels}}} 1.0" in text
    assert f"recap_request_duration_seconds_count{{{labels}}} 1.0" in text
    assert 'recap_inference_rows_total{model="iris-like",version="1"} 2.0' in text
    assert 'recap_inference_duration_seconds_count{model="iris-like",version="1"} 1.0' in text
    assert 'recap_inference_duration_seconds_bucket{le="1e-05",model="iris-like",version="1"}' in text
    assert 'recap_model_ready{model="corrupt",version="1"} 0.0' in text
    assert 'recap_model_ready{model="iris-like",version="1"} 1.0' in text
    unknown = (
        'recap_request_failures_total{endpoint="infer",model="",protocol="v2",reason="model_not_found",'
        'version=""} 1.0'
    )
    assert unknown in text
    assert 'recap_requests_total{endpoint="infer",model="",protocol="v2",version=""} 1.0' in text
    assert "unknown-model" not in text  # client strings never become label values


def test_docs_work_offline(client: TestClient) -> None:
    page = client.get("/docs").text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page) + re.findall(r"url: ?'([^']+)'", page)
    assert urls
    for url in urls:
        assert not url.startswith(("http:", "https:", "//")), url
        assert client.get(url).status_code == 200, url
    assert (
        client.get("/static/swagger-ui/swagger-ui-bundle.js")
        .headers["content-type"]
        .startswith(("application/javascript", "text/javascript"))
    )


def test_openapi_documents_the_hand_parsed_bodies(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    infer = schema["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/InferenceRequest")
    assert "InferenceRequest" in schema["components"]["schemas"]
    assert "RequestInput" in schema["components"]["schemas"]
    assert "/v1/models/{model_name}:predict" in schema["paths"]


def test_settings_from_environment_and_rejects_impossible_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECAP_MODEL_REPOSITORY", str(tmp_path))
    monkeypatch.setenv("RECAP_PROVIDERS", '["cuda", "cpu"]')
    monkeypatch.setenv("RECAP_PORT", "9001")
    settings = Settings()
    assert settings.providers == ["cuda", "cpu"] and settings.port == 9001
    bad: dict[str, Any]
    for bad in (
        {"port": 0},
        {"port": 70000},
        {"providers": []},
        {"providers": ["cpu", "cpu"]},
        {"providers": ["tpu"]},
        {"intra_op_threads": -1},
        {"max_body_bytes": 10},
        {"model_repository": tmp_path / "missing"},
        {"graph_optimization_level": "max"},
    ):
        with pytest.raises(ValidationError):
            Settings(**bad)


def test_cli_flags(tmp_path: Path) -> None:
    settings = Settings(
        _cli_parse_args=[  # type: ignore[call-arg]
            "--host",
            "0.0.0.0",
            "--port",
            "8123",
            "--model-repository",
            str(tmp_path),
            "--providers",
            '["cpu"]',
            "--strict-providers",
            "--intra-op-threads",
            "2",
        ]
    )
    assert (settings.host, settings.port, settings.model_repository) == ("0.0.0.0", 8123, tmp_path)
    assert settings.strict_providers and settings.intra_op_threads == 2


def test_unexpected_errors_are_logged_and_answered_opaquely(
    repo_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with make_client(repo_dir) as fresh:
        model = fresh.app.state.recap.repository.get("iris-like", "1")  # type: ignore[attr-defined]

        def explode(*args: object, **kwargs: object) -> None:
            raise RuntimeError("secret internal detail /srv/path")

        monkeypatch.setattr(model.session, "run", explode)
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.1] * 4}]}
        with caplog.at_level("ERROR"):
            v2 = fresh.post("/v2/models/iris-like/versions/1/infer", json=body)
            v1 = fresh.post("/v1/models/iris-like/versions/1:predict", json={"instances": [[0.1] * 4]})
        for response in (v2, v1):
            assert response.status_code == 500
            assert response.json() == {"error": "internal server error"}
        assert "secret internal detail" in caplog.text and "Traceback" in caplog.text
        metrics = fresh.get("/metrics").text
        assert 'protocol="v2",reason="internal",version="1"} 1.0' in metrics
