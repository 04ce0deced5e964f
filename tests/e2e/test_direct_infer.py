"""V2 infer answered from the HTTP protocol's callbacks (service.http_protocol's `direct_infer`), on real
servers through raw sockets: what the ASGI cycle did for free (pipelining, refusals before the body,
keep-alive and close, deadlines, a SIGTERM mid-body) still holds, and what it cannot take (a chunked
body) goes the ASGI way."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.helpers.onnx_models import build_repository
from tests.helpers.raw_http import IRIS, Responses, binary_infer, binary_output, json_infer
from tests.helpers.servers import RunningServer, start_server
from tests.helpers.zoo import metric

pytestmark = pytest.mark.e2e
KEY = "direct-infer-key-0123456789abcdef"
SETTINGS = {
    "RECAP_STRICT_READINESS": "false",  # the test repository holds broken models on purpose
    "RECAP_OFFLOAD_MIN_ROWS": "1000",  # the big batches here run in a worker thread
    "RECAP_MAX_BODY_BYTES": str(4 << 20),
}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text(f"inference,metrics {KEY}\n")
    env = SETTINGS | {"RECAP_API_KEYS_FILE": str(keys)}
    running = start_server(repository, tmp_path_factory.mktemp("direct") / "server.log", env=env)
    try:
        yield running
    finally:
        running.stop()


def keyed(request: bytes, key: str = KEY) -> bytes:
    """The request with an Authorization header after its request line."""
    line, rest = request.split(b"\r\n", 1)
    return line + f"\r\nAuthorization: Bearer {key}\r\n".encode() + rest


def closed_after(responses: Responses) -> bool:
    """Whether the server closes the connection once its answers were read."""
    responses.sock.settimeout(5)
    return not responses.buffer and responses.sock.recv(1) == b""


def test_pipelined_requests_behind_batches_in_worker_threads_are_answered_in_order(
    server: RunningServer,
) -> None:
    rng = np.random.default_rng(7)
    big = [rng.normal(size=(30_000 + i, 3)).astype(np.float32) for i in range(3)]
    burst = b""
    for rows in big:  # big (offloaded), small (inline), big, small, ... in one write
        burst += keyed(binary_infer("identity-fp32", {"input": rows}, request_id="b")) + keyed(
            json_infer(IRIS)
        )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(burst)
        responses = Responses(sock)
        for rows in big:
            status, headers, body = responses.next()
            assert status == 200, body[:300]
            np.testing.assert_array_equal(binary_output(headers, body, "output"), rows)
            status, headers, body = responses.next()
            assert status == 200, body[:300]
            assert orjson.loads(body)["model_name"] == "iris-like"
            assert headers["x-request-id"]


def test_a_refusal_before_the_body_is_answered_and_the_connection_serves_on(server: RunningServer) -> None:
    rows = np.ones((80_000, 3), dtype=np.float32)  # about 1 MB the server reads and drops
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        responses = Responses(sock)
        sock.sendall(keyed(binary_infer("no-such-model", {"input": rows})))
        status, headers, body = responses.next()
        assert status == 404 and "no-such-model" in orjson.loads(body)["error"], body[:300]
        assert headers.get("connection") != "close"
        sock.sendall(keyed(json_infer(IRIS), key="x" * 30))  # a key the server does not hold
        status, headers, body = responses.next()
        assert status == 401 and "API key" in orjson.loads(body)["error"]
        assert headers["connection"] == "close" and headers["www-authenticate"].startswith("Bearer")
        assert closed_after(responses), "a 401 closes the connection"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        responses = Responses(sock)
        sock.sendall(keyed(json_infer(IRIS)))
        assert responses.next()[0] == 200


def test_a_declared_body_over_the_limit_is_413_and_closed_without_reading_it(server: RunningServer) -> None:
    head = b"POST /v2/models/iris-like/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (5 << 20)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(keyed(head))
        responses = Responses(sock)
        status, headers, body = responses.next()
        assert status == 413 and "over the limit" in orjson.loads(body)["error"], body
        assert headers["connection"] == "close"
        assert closed_after(responses)


def test_a_chunked_body_is_answered_the_asgi_way(server: RunningServer) -> None:
    body = orjson.dumps(IRIS)
    chunks = (
        b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (body[:20], body[20:])) + b"0\r\n\r\n"
    )
    request = b"POST /v2/models/iris-like/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(keyed(request + chunks) + keyed(json_infer(IRIS)))
        responses = Responses(sock)
        for _ in range(2):
            status, headers, answer = responses.next()
            assert status == 200, answer[:300]
            assert orjson.loads(answer)["model_name"] == "iris-like" and headers["x-request-id"]


def test_a_past_deadline_in_a_worker_thread_is_504_and_frees_its_slot(server: RunningServer) -> None:
    rows = np.ones((50_000, 3), dtype=np.float32)
    header = orjson.dumps(
        {
            "inputs": [{"name": "input", "shape": [50_000, 3], "datatype": "FP32",
                        "parameters": {"binary_data_size": rows.nbytes}}],
            "parameters": {"timeout": 1},
        }
    )  # fmt: skip
    body = header + rows.tobytes()
    request = (
        b"POST /v2/models/identity-fp32/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: %d\r\n"
        b"Content-Length: %d\r\n\r\n" % (len(header), len(body))
    ) + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(keyed(request) + keyed(json_infer(IRIS)))
        responses = Responses(sock)
        status, _, answer = responses.next()
        assert status == 504 and "deadline" in orjson.loads(answer)["error"], answer[:300]
        assert responses.next()[0] == 200
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        assert metric(http, "recap_requests_in_progress") == 0


def test_a_client_leaving_mid_body_or_mid_run_frees_its_slot(server: RunningServer) -> None:
    rows = np.ones((200_000, 3), dtype=np.float32)
    request = keyed(binary_infer("identity-fp32", {"input": rows}))
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        labels = {"endpoint": "infer", "model": "identity-fp32", "protocol": "v2"}
        labels |= {"reason": "client_disconnected", "version": "1"}  # in /metrics' order
        before = metric(http, "recap_request_failures_total", **labels)
        for cut in (len(request) // 3, len(request)):  # mid-body; whole, gone before the answer
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                sock.sendall(request[:cut])
                time.sleep(0.05)
        deadline = time.monotonic() + 10
        while metric(http, "recap_requests_in_progress") != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(http, "recap_requests_in_progress") == 0
        after = metric(http, "recap_request_failures_total", **labels)
        assert before + 1 <= after <= before + 2  # the second may have been answered before it left
        assert http.post("/v2/models/iris-like/infer", json=IRIS).status_code == 200


def test_sigterm_while_a_body_arrives_answers_it_with_connection_close_then_exits_0(
    repository: Path, tmp_path: Path
) -> None:
    server = start_server(repository, tmp_path / "server.log", env=SETTINGS)
    try:
        rows = np.random.default_rng(3).normal(size=(20_000, 3)).astype(np.float32)
        request = binary_infer("identity-fp32", {"input": rows})
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(request[: len(request) // 2])
            time.sleep(0.2)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(1.0)  # the drain's grace (0 s) is over: uvicorn asked the connection to close
            sock.sendall(request[len(request) // 2 :])
            responses = Responses(sock)
            status, headers, body = responses.next()
            assert status == 200, body[:300]
            assert headers["connection"] == "close"
            np.testing.assert_array_equal(binary_output(headers, body, "output"), rows)
            assert closed_after(responses)
        assert server.process.wait(timeout=15) == 0, server.log_tail()
    finally:
        server.stop()


def test_an_idle_keep_alive_connection_is_closed_after_uvicorns_5_s(server: RunningServer) -> None:
    """The protocol's sweep times idle connections out instead of a timer per response."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        responses = Responses(sock)
        sock.sendall(keyed(json_infer(IRIS)))
        assert responses.next()[0] == 200
        answered = time.monotonic()
        sock.settimeout(15)
        assert sock.recv(1) == b""
        idle = time.monotonic() - answered
    assert 4.5 < idle < 7.5, idle


def test_the_log_has_no_traceback(server: RunningServer) -> None:
    assert "Traceback" not in server.log(), server.log_tail()
