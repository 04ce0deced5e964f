"""Safe by default, part 2, on real server processes: admission control (server and model caps, body
bytes in flight), deadlines (server-wide, the client's own, streams), slow clients (late headers,
late bodies) and bounded memory."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from tests.helpers.onnx_models import build_repository
from tests.helpers.servers import MODELS, RunningServer, start_server
from tests.helpers.zoo import metric, require_models

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
# Greedy, 4000 tokens: over a second even alone with the KV cache (the fixture raises the cap to fit).
LONG_TOKENS = 4000
LONG = {"text_input": "The ", "parameters": {"max_tokens": LONG_TOKENS}}
IRIS = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


@pytest.fixture
def zoo(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """A zoo server with the settings the test's `settings` marker gives."""
    require_models("pydoc-gpt", "iris-mlp")
    marker = request.node.get_closest_marker("settings")
    env = {"RECAP_GENERATE_MAX_TOKENS": str(LONG_TOKENS)} | (dict(marker.kwargs) if marker else {})
    server = start_server(MODELS, tmp_path / "server.log", env=env)
    try:
        yield server
    finally:
        server.stop()


def in_progress(client: httpx.Client) -> float:
    return metric(client, "recap_requests_in_progress")


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def background(
    calls: list[httpx.Response], server: RunningServer, path: str, body: object
) -> threading.Thread:
    def call() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            calls.append(http.post(path, json=body))

    thread = threading.Thread(target=call)
    thread.start()
    return thread


@pytest.mark.settings(RECAP_MAX_CONCURRENCY="4")
def test_over_the_server_cap_requests_get_503_at_once_and_the_admitted_finish(zoo: RunningServer) -> None:
    finished: list[httpx.Response] = []
    long = [background(finished, zoo, "/v2/models/pydoc-gpt/generate", LONG) for _ in range(4)]
    with httpx.Client(base_url=zoo.url, timeout=30) as client:
        wait_for(lambda: in_progress(client) == 4)  # /metrics is exempt from the cap
        refused = [client.post("/v2/models/iris-mlp/infer", json=IRIS) for _ in range(20)]
        assert client.get("/v2/health/live").status_code == 200  # probes too
        assert in_progress(client) == 4, "the 4 are still running: the 20 came while they did"
        for thread in long:
            thread.join()
        assert [r.status_code for r in refused] == [503] * 20
        assert all(r.headers["retry-after"] == "1" for r in refused)
        assert "requests in progress, its limit" in refused[0].json()["error"]
        assert sorted(r.status_code for r in finished) == [200] * 4
        assert all(r.json()["tokens"] == LONG_TOKENS for r in finished)
        failures = metric(
            client, "recap_request_failures_total", endpoint="infer", model="", protocol="v2",
            reason="server_busy", version="",
        )  # fmt: skip
        assert failures == 20
        assert client.post("/v2/models/iris-mlp/infer", json=IRIS).status_code == 200  # freed again


@pytest.mark.settings(RECAP_MAX_CONCURRENCY="16", RECAP_MODEL_MAX_CONCURRENCY="2")
def test_the_per_model_cap_keeps_a_tabular_model_serving_while_generation_is_saturated(
    zoo: RunningServer,
) -> None:
    finished: list[httpx.Response] = []
    long = [background(finished, zoo, "/v2/models/pydoc-gpt/generate", LONG) for _ in range(2)]
    with httpx.Client(base_url=zoo.url, timeout=30) as client:
        wait_for(lambda: in_progress(client) == 2)
        third = client.post("/v2/models/pydoc-gpt/generate", json=LONG)
        assert third.status_code == 503 and third.headers["retry-after"] == "1"
        assert "model 'pydoc-gpt' version 1 has 2 requests in progress" in third.json()["error"]
        tabular = [client.post("/v2/models/iris-mlp/infer", json=IRIS).status_code for _ in range(20)]
        assert in_progress(client) == 2
        assert tabular == [200] * 20
    for thread in long:
        thread.join()
    assert [r.status_code for r in finished] == [200, 200]


@pytest.mark.settings(RECAP_REQUEST_TIMEOUT_SECONDS="0.3")
def test_a_generate_past_the_server_deadline_gets_504_and_a_stream_a_timeout_event(
    zoo: RunningServer,
) -> None:
    with httpx.Client(base_url=zoo.url, timeout=30) as client:
        started = time.monotonic()
        late = client.post("/v2/models/pydoc-gpt/generate", json=LONG)
        elapsed = time.monotonic() - started
        assert late.status_code == 504 and "deadline of 0.3 s" in late.json()["error"]
        assert elapsed < 1.0, f"answered after {elapsed:.2f} s"
        with client.stream("POST", "/v2/models/pydoc-gpt/generate_stream", json=LONG) as stream:
            assert stream.status_code == 200
            events = [orjson.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
        assert events[-1]["finish_reason"] == "timeout" and 0 < events[-1]["tokens"] < LONG_TOKENS
        assert all("finish_reason" not in e for e in events[:-1])
        time.sleep(0.5)
        assert in_progress(client) == 0, "nothing keeps running for the answered requests"
        assert client.post("/v2/models/iris-mlp/infer", json=IRIS).status_code == 200


@pytest.mark.settings(RECAP_OFFLOAD_MIN_ROWS="1")
def test_tritonclients_timeout_in_microseconds_is_honoured(zoo: RunningServer) -> None:
    client = triton.InferenceServerClient(zoo.url.removeprefix("http://"), network_timeout=60)
    ids = triton.InferInput("input_ids", [64, 128], "INT64")
    ids.set_data_from_numpy(np.random.default_rng(0).integers(4, 90, size=(64, 128)).astype(np.int64))
    with pytest.raises(triton.InferenceServerException, match=r"deadline of 0\.001 s") as info:
        client.infer("pydoc-gpt", [ids], timeout=1_000)  # 1 ms: the batch needs tens of ms
    assert info.value.status() == "504"
    assert client.infer("pydoc-gpt", [ids], timeout=30_000_000).as_numpy("logits").shape == (64, 128, 100)
    with httpx.Client(base_url=zoo.url) as http:
        bad = http.post("/v2/models/iris-mlp/infer", json=IRIS | {"parameters": {"timeout": "soon"}})
        assert bad.status_code == 400 and "positive integer of microseconds" in bad.json()["error"]
        generate = http.post(
            "/v2/models/pydoc-gpt/generate",
            json={**LONG, "parameters": {"max_tokens": LONG_TOKENS, "timeout": 200_000}},
        )
        assert generate.status_code == 504


def vm_hwm_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


@pytest.mark.settings(RECAP_MAX_INFLIGHT_BYTES="67108864", RECAP_MAX_BODY_BYTES="33554432")
def test_sixteen_24_mb_bodies_at_once_stay_under_700_mb(zoo: RunningServer) -> None:
    require_models("breast-cancer-mlp")
    rows = np.random.default_rng(0).normal(size=(100_000, 30)).round(4)
    body = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [100_000, 30], "datatype": "FP32", "data": rows.ravel().tolist()}
            ]
        }
    ).encode()
    assert 20e6 < len(body) < 28e6
    statuses: list[int] = []
    barrier = threading.Barrier(16)

    def post() -> None:
        with httpx.Client(base_url=zoo.url, timeout=120) as http:
            barrier.wait()
            statuses.append(http.post("/v2/models/breast-cancer-mlp/infer", content=body).status_code)

    threads = [threading.Thread(target=post) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    peak = vm_hwm_mib(zoo.process.pid)
    assert len(statuses) == 16 and set(statuses) <= {200, 503}, statuses
    assert 200 in statuses
    assert peak < 700, f"peak RSS {peak:.0f} MiB"
    answered, refused = statuses.count(200), statuses.count(503)
    print(f"16 bodies of {len(body) / 1e6:.1f} MB: {answered} answered, {refused} 503; peak {peak:.0f} MiB")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = build_repository(tmp_path_factory.mktemp("models"))
    env = {
        "RECAP_STRICT_READINESS": "false",
        "RECAP_HEADER_TIMEOUT_SECONDS": "1",
        "RECAP_BODY_TIMEOUT_SECONDS": "1",
    }
    server = start_server(repository, tmp_path_factory.mktemp("guarded") / "server.log", env=env)
    try:
        yield server
    finally:
        server.stop()


def _until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and when it closed (seconds)."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received, time.monotonic() - started


def test_late_headers_are_closed_and_a_late_body_gets_408_while_others_are_served(
    guarded: RunningServer,
) -> None:
    served: list[int] = []
    stop = threading.Event()

    def other_client() -> None:
        with httpx.Client(base_url=guarded.url, timeout=10) as http:
            while not stop.is_set():
                served.append(http.post("/v2/models/iris-like/infer", json=IRIS).status_code)
                time.sleep(0.02)

    worker = threading.Thread(target=other_client)
    worker.start()
    try:
        with socket.create_connection(("127.0.0.1", guarded.port)) as silent:
            nothing, silent_closed = _until_closed(silent, 10)
        with socket.create_connection(("127.0.0.1", guarded.port)) as half_headers:
            half_headers.sendall(b"POST /v2/models/iris-like/infer HTTP/1.1\r\nHost: x\r\nContent-")
            nothing_either, headers_closed = _until_closed(half_headers, 10)
        with socket.create_connection(("127.0.0.1", guarded.port)) as half_body:
            half_body.sendall(
                b"POST /v2/models/iris-like/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n" + b'{"inputs": [' + b" " * 488
            )
            answer, body_closed = _until_closed(half_body, 10)
    finally:
        stop.set()
        worker.join()
    assert nothing == b"" and 0.9 < silent_closed < 2.5, silent_closed
    assert nothing_either == b"" and 0.9 < headers_closed < 2.5, headers_closed
    assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 s" in answer, answer[:300]
    assert 0.9 < body_closed < 2.5, body_closed
    assert served and set(served) == {200}, "the other client was served meanwhile"
    with httpx.Client(base_url=guarded.url) as http:
        reasons = http.get("/metrics").text
    assert 'reason="body_timeout"' in reasons
