"""Request ids and JSON logs on a real server process: every log line is one JSON object, and the lines
about a request (uvicorn's access log included) carry the id its client sees."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from tests.helpers.onnx_models import build_repository
from tests.helpers.servers import start_server

pytestmark = pytest.mark.e2e
ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.1] * 4}]}


def test_json_log_lines_name_the_request_the_client_was_told(tmp_path: Path) -> None:
    repository = build_repository(tmp_path / "models")
    env = {"RECAP_LOG_FORMAT": "json", "RECAP_ACCESS_LOG": "true", "RECAP_STRICT_READINESS": "false"}
    server = start_server(repository, tmp_path / "server.log", env=env)
    try:
        with httpx.Client(base_url=server.url) as client:
            chosen = client.post("/v2/models/iris-like/infer", json=ROW, headers={"x-request-id": "e2e-1"})
            given = client.post("/v1/models/nope:predict", json={"instances": [[1, 2, 3, 4]]})
    finally:
        server.stop()
    assert chosen.status_code == 200 and chosen.headers["x-request-id"] == "e2e-1"
    assert given.status_code == 404
    new_id = given.headers["x-request-id"]
    lines = [orjson.loads(line) for line in server.log().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "request_id", "message"} <= set(line) for line in lines)
    startup = [line for line in lines if "loaded iris-like" in line["message"]]
    assert startup and all(line["request_id"] == "-" for line in startup)  # no request: "-"
    access = {line["request_id"]: line["message"] for line in lines if line["logger"] == "uvicorn.access"}
    assert "/v2/models/iris-like/infer" in access["e2e-1"] and "200" in access["e2e-1"]
    assert "/v1/models/nope" in access[new_id] and "404" in access[new_id]
