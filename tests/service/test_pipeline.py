"""The request pipeline: one lookup, one count, one error mapping for every protocol; request ids; logs."""

from __future__ import annotations

import ast
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service import logs
from service.api import pipeline
from tests.helpers.apps import make_client

API = Path(pipeline.__file__).parent
IRIS_ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.1] * 4}]}
GENERATE_BODY = {"text_input": "ab", "parameters": {"max_tokens": 2}}
# (protocol, endpoint, method, path, body): every route that names a model, with an unknown one.
UNKNOWN_MODEL_ROUTES = [
    ("v2", "infer", "POST", "/v2/models/nope/infer", IRIS_ROW),
    ("v2", "infer", "POST", "/v2/models/iris-like/versions/9/infer", IRIS_ROW),
    ("v2", "metadata", "GET", "/v2/models/nope", None),
    ("v2", "ready", "GET", "/v2/models/nope/versions/1/ready", None),
    ("v1", "predict", "POST", "/v1/models/nope:predict", {"instances": [[0.1] * 4]}),
    ("v1", "classify", "POST", "/v1/models/nope/versions/1:classify", {"instances": [[0.1] * 4]}),
    ("v1", "status", "GET", "/v1/models/nope", None),
    ("v1", "samples", "GET", "/v1/models/nope/samples.png", None),
    ("generate", "generate", "POST", "/v2/models/nope/generate", GENERATE_BODY),
    ("generate", "generate_stream", "POST", "/v2/models/nope/generate_stream", GENERATE_BODY),
]


def samples(client: TestClient, family: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of one metric family in /metrics."""
    text = client.get("/metrics").text
    return [
        (dict(sample.labels), sample.value)
        for metric in text_string_to_metric_families(text)
        if metric.name == family
        for sample in metric.samples
        if sample.name == family + "_total"
    ]


@pytest.fixture
def fresh(repo_dir: Path) -> Iterator[TestClient]:
    """A new app per test: exact counts."""
    with make_client(repo_dir) as client:
        yield client


@pytest.mark.parametrize(
    "route", UNKNOWN_MODEL_ROUTES, ids=[f"{r[0]}-{r[1]}-{r[3]}" for r in UNKNOWN_MODEL_ROUTES]
)
def test_an_unknown_model_is_counted_exactly_once(
    fresh: TestClient, route: tuple[str, str, str, str, Any]
) -> None:
    protocol, endpoint, method, path, body = route
    response = fresh.request(method, path, content=orjson.dumps(body) if body is not None else None)
    assert response.status_code == 404
    assert "unknown model 'nope'" in response.json()["error"] or "has no version" in response.json()["error"]
    labels = {"model": "", "version": "", "protocol": protocol, "endpoint": endpoint}
    assert samples(fresh, "recap_request_failures") == [(labels | {"reason": "model_not_found"}, 1.0)]
    assert samples(fresh, "recap_requests") == [(labels, 1.0)]


def test_a_body_over_the_limit_is_refused_before_it_is_read_and_counted_once(repo_dir: Path) -> None:
    with make_client(repo_dir, max_body_bytes=1024) as small:
        big = orjson.dumps({"inputs": [{"name": "input", "data": [0.5] * 1000}]})
        response = small.post("/v1/models/iris-like:predict", content=big)
        assert response.status_code == 413 and response.headers["connection"] == "close"
        assert "over the limit of 1024" in response.json()["error"]
        failures = samples(small, "recap_request_failures")
    # Refused at admission, before the model is looked up: counted as model="".
    assert failures == [
        (
            {
                "model": "",
                "version": "",
                "protocol": "v1",
                "endpoint": "predict",
                "reason": "payload_too_large",
            },
            1.0,
        )
    ]


def test_requests_are_counted_per_endpoint_and_reason(fresh: TestClient) -> None:
    assert fresh.post("/v2/models/iris-like/infer", json=IRIS_ROW).status_code == 200
    assert fresh.get("/v2/models/iris-like").status_code == 200
    assert fresh.post("/v1/models/iris-like:predict", json={"instances": [[1, 2]]}).status_code == 400
    assert fresh.get("/v2/models/corrupt/ready").status_code == 503
    iris = {"model": "iris-like", "version": "2"}
    requests = {
        (s["protocol"], s["endpoint"], s["model"]): value for s, value in samples(fresh, "recap_requests")
    }
    assert requests == {("v2", "infer", "iris-like"): 1, ("v2", "metadata", "iris-like"): 1,
                        ("v1", "predict", "iris-like"): 1, ("v2", "ready", "corrupt"): 1}  # fmt: skip
    assert samples(fresh, "recap_request_failures") == [
        (iris | {"protocol": "v1", "endpoint": "predict", "reason": "invalid_input"}, 1.0),
        (
            {
                "model": "corrupt",
                "version": "1",
                "protocol": "v2",
                "endpoint": "ready",
                "reason": "model_not_ready",
            },
            1.0,
        ),
    ]


def test_every_response_carries_a_request_id(fresh: TestClient) -> None:
    answers = [
        fresh.post("/v2/models/iris-like/infer", json=IRIS_ROW),  # the front door's fast path
        fresh.post("/v2/models/nope/infer", json=IRIS_ROW),
        fresh.get("/v2/models/iris-like"),  # a FastAPI route
        fresh.get("/no/such/route"),
        fresh.get("/metrics"),
    ]
    ids = [answer.headers["x-request-id"] for answer in answers]
    assert len(set(ids)) == len(ids) and all(ids)
    prefix = ids[0].rsplit("-", 1)[0]
    assert all(i.startswith(prefix + "-") for i in ids)  # one process, one prefix, a counter


def test_the_front_door_is_outside_fastapis_own_middleware(fresh: TestClient) -> None:
    """V2 infer passes none of FastAPI's layers, and even FastAPI's own 500 gets the request id."""

    def boom() -> None:
        raise RuntimeError("secret internal detail")

    fresh.app.add_api_route("/boom", boom)  # type: ignore[attr-defined]
    assert fresh.get("/v2/health/live").status_code == 200  # the stack is built
    assert type(fresh.app.middleware_stack).__name__ == "FrontDoor"  # type: ignore[attr-defined]
    answer = fresh.get("/boom", headers={"x-request-id": "the-500"})
    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "the-500"
    assert "secret" not in answer.text


def test_the_client_request_id_comes_back_and_the_v2_id_stays(fresh: TestClient) -> None:
    body = IRIS_ROW | {"id": "v2-request-7"}
    answer = fresh.post("/v2/models/iris-like/infer", json=body, headers={"x-request-id": "client-id.42"})
    assert answer.headers["x-request-id"] == "client-id.42"
    assert answer.json()["id"] == "v2-request-7"
    routed = fresh.get("/v2/models/iris-like", headers={"x-request-id": "abc"})
    assert routed.headers["x-request-id"] == "abc"


@pytest.mark.parametrize("bad", ["x" * 129, "has space", "tab\tin", "é"])
def test_an_unusable_client_request_id_is_replaced(fresh: TestClient, bad: str) -> None:
    answer = fresh.get("/v2/models/iris-like", headers={"x-request-id": bad.encode("utf-8")})
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] not in (bad, "")


def test_log_lines_about_a_request_carry_its_id_as_json(
    fresh: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = fresh.app.state.recap.repository.get("iris-like", "1")  # type: ignore[attr-defined]

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(model.session, "run", explode)
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.addFilter(logs.RequestIdFilter())
    handler.setFormatter(logs.JsonFormatter())
    logging.getLogger("service").addHandler(handler)
    try:
        answer = fresh.post(
            "/v2/models/iris-like/versions/1/infer", json=IRIS_ROW, headers={"x-request-id": "r-1"}
        )
    finally:
        logging.getLogger("service").removeHandler(handler)
    assert answer.status_code == 500 and answer.json() == {"error": "internal server error"}
    assert answer.headers["x-request-id"] == "r-1"
    lines = [orjson.loads(line) for line in sink.getvalue().splitlines()]
    (line,) = [entry for entry in lines if entry["level"] == "error"]
    assert line["request_id"] == "r-1" and line["logger"] == "service.api.pipeline"
    assert "unexpected error in v2 infer for model 'iris-like'" in line["message"]
    assert "secret internal detail" in line["exc_info"] and "Traceback" in line["exc_info"]


def test_text_log_lines_name_the_request_or_a_dash() -> None:
    record = logging.LogRecord("service.x", logging.INFO, __file__, 1, "hello", None, None)
    logs.RequestIdFilter().filter(record)
    assert logging.Formatter(logs.TEXT_FORMAT).format(record).endswith("service.x [-]: hello")
    token = logs.REQUEST_ID.set("abc-1")
    try:
        logs.RequestIdFilter().filter(record)
    finally:
        logs.REQUEST_ID.reset(token)
    assert logging.Formatter(logs.TEXT_FORMAT).format(record).endswith("service.x [abc-1]: hello")


# What only the pipeline may do: count requests or failures, time them, catch and answer errors, log a
# traceback. An endpoint module that does one of these has grown its own copy of a pipeline step
# (a handler that only notes something and re-raises is fine).
METRIC_CHILDREN = {"requests", "duration", "failures", "_children"}


def _own_bookkeeping(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            names = {n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)}
            reraises = any(isinstance(n, ast.Raise) and n.exc is None for n in node.body)
            if names & {"RecapError", "Exception"} and not reraises:
                found.append(f"line {node.lineno}: except {', '.join(sorted(names))}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target, attribute = node.func.value, node.func.attr
            logs = isinstance(target, ast.Name) and target.id in {"log", "logger", "logging"}
            if attribute == "failure" or (attribute == "exception" and logs):
                found.append(f"line {node.lineno}: .{attribute}(...)")
            counted = isinstance(target, ast.Attribute) and target.attr in METRIC_CHILDREN
            if attribute in {"inc", "observe"} and counted:
                found.append(f"line {node.lineno}: {ast.unparse(target)}.{attribute}(...)")
    return found


@pytest.mark.parametrize("module", sorted(p.name for p in API.glob("*.py") if p.name != "pipeline.py"))
def test_no_endpoint_module_keeps_its_own_request_bookkeeping(module: str) -> None:
    assert _own_bookkeeping((API / module).read_text()) == []


def test_the_bookkeeping_check_finds_a_copy() -> None:
    copy = (
        "try:\n    pass\nexcept RecapError as e:\n    metrics.failure('v1', e.code)\n    x.requests.inc()\n"
    )
    assert len(_own_bookkeeping(copy)) == 3
    assert len(_own_bookkeeping("log.exception('boom')\ntask.exception()\n")) == 1
