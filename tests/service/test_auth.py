"""API keys in process: every protected route answers 401 without a key or with a wrong one, 403 with a
key of the wrong scope and 200 with the right one; the probes and the static pages stay open."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from tests.helpers.apps import make_client
from tests.helpers.onnx_models import LATENT, build_repository, generator_model, write_model

KEYS = {
    "inference": "inference-key-0123456789abcdef",
    "admin": "admin-key-0123456789abcdefghij",
    "metrics": "metrics-key-0123456789abcdefgh",
}
EVERYTHING = "every-scope-key-0123456789abcd"  # stored hashed in the file
ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.1] * 4}]}
TEXT = {"text_input": "ab", "parameters": {"max_tokens": 3}}
# (scope, method, path, body): every protected route
ROUTES: list[tuple[str, str, str, Any]] = [
    ("inference", "GET", "/v2", None),
    ("inference", "GET", "/v2/", None),
    ("inference", "GET", "/v2/models/iris-like", None),
    ("inference", "GET", "/v2/models/iris-like/versions/1", None),
    ("inference", "GET", "/v2/models/iris-like/ready", None),
    ("inference", "GET", "/v2/models/iris-like/versions/2/ready", None),
    ("inference", "POST", "/v2/models/iris-like/infer", ROW),
    ("inference", "POST", "/v2/models/iris-like/versions/1/infer", ROW),
    ("inference", "POST", "/v1/models/iris-like:predict", {"instances": [[0.1] * 4]}),
    ("inference", "POST", "/v1/models/iris-like/versions/1:classify", {"instances": [[0.1] * 4]}),
    ("inference", "GET", "/v1/models/iris-like", None),
    ("inference", "GET", "/v1/models/iris-like/versions/1", None),
    ("inference", "POST", "/v2/models/sequence/generate", TEXT),
    ("inference", "POST", "/v2/models/sequence/generate_stream", TEXT),
    ("inference", "GET", "/v1/models/gan/samples.png?count=2&seed=1", None),
    ("admin", "POST", "/v2/repository/index", None),
    ("metrics", "GET", "/metrics", None),
]
OPEN = ["/v2/health/live", "/v2/health/ready", "/docs", "/openapi.json", "/static/swagger-ui/swagger-ui.css"]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = build_repository(tmp_path_factory.mktemp("models"))
    gan = {"task": "generator", "latent_dim": LATENT, "image_shape": [8, 8], "pixel_range": [0, 16]}
    write_model(root, "gan", generator_model(), manifest=gan)
    keys_file = tmp_path_factory.mktemp("keys") / "api-keys"
    digest = hashlib.sha256(EVERYTHING.encode()).hexdigest()
    lines = [f"{scope} {key}" for scope, key in KEYS.items()] + [f"inference,admin,metrics sha256:{digest}"]
    keys_file.write_text("\n".join(lines) + "\n")
    with make_client(root, api_keys_file=keys_file, strict_readiness=False) as client:
        yield client


def call(
    client: TestClient, method: str, path: str, body: Any, key: str | None = None, *, scheme: str = "Bearer"
) -> httpx.Response:
    headers = {"Authorization": f"{scheme} {key}"} if key is not None else {}
    content = orjson.dumps(body) if body is not None else None
    return client.request(method, path, content=content, headers=headers)


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r[1]} {r[2]}" for r in ROUTES])
def test_each_protected_route_wants_the_right_key(
    keyed: TestClient, route: tuple[str, str, str, Any]
) -> None:
    scope, method, path, body = route
    for key, scheme in ((None, "Bearer"), ("not-a-key-0123456789abcdef", "Bearer"), (KEYS[scope], "Basic")):
        refused = call(keyed, method, path, body, key, scheme=scheme)
        assert refused.status_code == 401, (key, refused.text)
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json() == {
            "error": "missing or unknown API key: send the header `Authorization: Bearer <key>`"
        }
    other = next(k for s, k in KEYS.items() if s != scope)
    forbidden = call(keyed, method, path, body, other)
    assert forbidden.status_code == 403 and f"lacks the '{scope}' scope" in forbidden.json()["error"]
    for key in (KEYS[scope], EVERYTHING):
        allowed = call(keyed, method, path, body, key)
        assert allowed.status_code == 200, allowed.text[:300]
    assert call(keyed, method, path, body, f"  {KEYS[scope]}  ", scheme="bearer").status_code == 200


@pytest.mark.parametrize("path", OPEN)
def test_probes_and_static_pages_stay_open(keyed: TestClient, path: str) -> None:
    assert keyed.get(path).status_code == 200


def test_refusals_are_counted_and_never_echo_a_key(keyed: TestClient) -> None:
    wrong = "wrong-key-0123456789abcdefghij"
    answer = call(keyed, "POST", "/v2/models/iris-like/infer", ROW, wrong)
    assert wrong not in answer.text
    metrics = call(keyed, "GET", "/metrics", None, KEYS["metrics"]).text
    assert 'endpoint="infer",model="",protocol="v2",reason="unauthenticated",version=""' in metrics
    assert wrong not in metrics


def test_the_openapi_document_offers_swaggers_authorize_button(keyed: TestClient) -> None:
    schema = keyed.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "An API key from --api-keys-file."
    }  # fmt: skip
    assert schema["paths"]["/v2/models/{model_name}/infer"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"]["/v2/health/ready"]["get"]


def test_without_keys_every_route_is_open(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200
    assert client.post("/v2/repository/index").status_code == 200


def test_settings_refuse_half_a_tls_pair_and_missing_files(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ValueError, match="go together"):
        Settings(model_repository=tmp_path, tls_cert_file=cert)
    with pytest.raises(ValueError, match="is not a file"):
        Settings(model_repository=tmp_path, api_keys_file=tmp_path / "absent")
    with pytest.raises(ValueError, match="is the main --port"):
        Settings(model_repository=tmp_path, metrics_port=8000)
