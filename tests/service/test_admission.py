"""Admission control and deadlines in process: the counters, what a refusal says, a chunked body counted
as it arrives, a client timeout that only shortens, and a worker stopped at the deadline."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.api.admission import Admission, Limits
from service.api.pipeline import Call, Endpoint, Pipeline
from service.errors import (
    ClientDisconnectedError,
    DeadlineExceededError,
    InflightBytesError,
    InvalidInputError,
    ModelBusyError,
    ServerBusyError,
)
from service.metrics import Metrics
from service.runtime.model import LoadedModel
from service.runtime.repository import Repository
from service.runtime.session import SessionConfig
from service.settings import Settings
from tests.helpers.apps import make_client
from tests.helpers.onnx_models import classifier, write_model

ENDPOINT = Endpoint("v2", "infer")


@dataclass
class Held:
    reserved: int = 0
    held_model: LoadedModel | None = None


def test_the_server_cap_the_model_cap_and_the_bytes_are_given_back(repo_dir: Path) -> None:
    metrics = Metrics()
    admission = Admission(Limits(max_body_bytes=100, max_concurrency=2, max_inflight_bytes=100), metrics)
    repository = Repository(repo_dir, SessionConfig(), metrics, default_concurrency_limit=1)
    repository.load_all()
    model = repository.get("iris-like")
    first, second = Held(), Held()
    admission.admit(first, 60)
    admission.admit(second, None)
    with pytest.raises(ServerBusyError, match="2 requests in progress, its limit") as busy:
        admission.admit(Held(), None)
    assert busy.value.retry_after_s == 1
    assert metrics.registry.get_sample_value("recap_requests_in_progress") == 2  # read when scraped
    admission.admit_model(first, model)
    with pytest.raises(ModelBusyError, match="model 'iris-like' version 2 has 1 requests in progress"):
        admission.admit_model(second, model)
    with pytest.raises(InflightBytesError, match="60 more would pass its limit of 100"):
        admission.reserve(second, 60)
    admission.release(first)
    assert (admission.in_progress, admission.inflight_bytes, model.in_progress) == (1, 0, 0)
    admission.admit_model(second, model)  # the model's slot is free again
    admission.reserve(second, 60)
    admission.release(second)
    assert (admission.in_progress, admission.inflight_bytes, model.in_progress) == (0, 0, 0)
    assert metrics.registry.get_sample_value("recap_requests_in_progress") == 0


def call_of(limits: Limits) -> Call:
    pipeline = Pipeline(Repository(Path("."), SessionConfig(), Metrics()), Metrics(), limits)
    call = Call(ENDPOINT, "test", pipeline.unknown, pipeline)
    pipeline.admission.admit(call, None)
    call.admitted = True
    return call


def test_a_chunked_body_is_counted_against_the_bytes_in_flight_as_it_arrives() -> None:
    call = call_of(Limits(max_body_bytes=100, max_inflight_bytes=100))
    other = Held()
    call.admission.admit(other, 70)  # another request holds 70 bytes
    chunks = [{"type": "http.request", "body": b"x" * 20, "more_body": True}] * 3

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    with pytest.raises(InflightBytesError):
        asyncio.run(call.read_body(receive))  # 20 fit beside the 70, the next 20 do not
    assert call.reserved == 20
    call.finish()
    assert call.admission.inflight_bytes == 70 and call.reserved == 0


def test_a_client_timeout_only_shortens_the_deadline() -> None:
    call = call_of(Limits(max_body_bytes=100, request_timeout_s=2.0))
    call.shorten_deadline(10_000_000)  # 10 s asks for more: the server's 2 s stay
    assert call.deadline - call.start == pytest.approx(2.0)
    call.shorten_deadline(500_000)
    assert call.deadline - call.start == pytest.approx(0.5)
    for bad in (0, -5, 1.5, "100", True):
        with pytest.raises(InvalidInputError, match="positive integer of microseconds"):
            call.shorten_deadline(bad)


def test_work_in_a_thread_is_stopped_at_the_deadline_or_when_the_client_leaves() -> None:
    async def scenario(receive: Any) -> tuple[type[Exception], float]:
        call = call_of(Limits(max_body_bytes=100, request_timeout_s=0.2))
        stop = threading.Event()

        def slow() -> str:
            stop.wait(5)
            return "done"

        started = time.perf_counter()
        try:
            await call.in_thread(slow, stop=stop.set, receive=receive)
        except (DeadlineExceededError, ClientDisconnectedError) as error:
            assert stop.is_set(), "the work was told to stop"
            return type(error), time.perf_counter() - started
        raise AssertionError("the slow work was not given up")

    async def stays() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def leaves() -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    kind, elapsed = asyncio.run(scenario(stays))
    assert kind is DeadlineExceededError and 0.15 < elapsed < 1.0
    kind, elapsed = asyncio.run(scenario(leaves))
    assert kind is ClientDisconnectedError and elapsed < 0.15


def test_503_and_its_retry_after_come_before_the_body_is_read(repo_dir: Path) -> None:
    with make_client(repo_dir, max_concurrency=1) as client:
        app_state = client.app.state.recap  # type: ignore[attr-defined]
        app_state.pipeline.admission.in_progress = 1  # as if one request were in progress
        answer = client.post("/v2/models/iris-like/infer", content=b"not even JSON")
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert "connection" not in answer.headers, "the client reads the 503; the body is drained"
        routed = client.post("/v1/models/iris-like:predict", content=b"{}")
        assert routed.status_code == 503 and routed.headers["retry-after"] == "1"
        assert client.get("/metrics").status_code == 200  # exempt
        assert client.get("/v2/health/ready").status_code in (200, 503)
        app_state.pipeline.admission.in_progress = 0


def test_inflight_bytes_must_hold_a_whole_body(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="below --max-body-bytes"):
        Settings(model_repository=tmp_path, max_body_bytes=2048, max_inflight_bytes=1024)
    Settings(model_repository=tmp_path, max_body_bytes=2048, max_inflight_bytes=0)  # 0: no limit


def test_a_model_json_cap_overrides_the_default(tmp_path: Path) -> None:
    write_model(tmp_path, "capped", classifier(4, 3), manifest={"max_concurrency": 3})
    write_model(tmp_path, "default", classifier(4, 3), manifest={})
    repository = Repository(tmp_path, SessionConfig(), Metrics(), default_concurrency_limit=8)
    repository.load_all()
    loaded: dict[str, LoadedModel] = {m.name: m for m in repository.models()}
    assert loaded["capped"].concurrency_limit == 3 and loaded["default"].concurrency_limit == 8
