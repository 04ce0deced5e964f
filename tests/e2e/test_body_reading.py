"""Big request bodies on a real server: a declared body is read in one go into one buffer
(service.http_protocol's whole-body reader), however it arrives, and the connection goes on serving.

Raw sockets control how the bytes arrive: in pieces with pauses, with the next request pipelined right
behind the body, or cut off half way. The identity models answer their input, so every answer is
checked byte for byte.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pytest

from tests.helpers.onnx_models import build_repository
from tests.helpers.raw_http import IRIS, Responses, binary_infer, binary_output, json_infer
from tests.helpers.servers import RunningServer, start_server
from tests.helpers.zoo import metric


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = build_repository(tmp_path_factory.mktemp("models"))
    running = start_server(
        repository, tmp_path_factory.mktemp("body") / "server.log", env={"RECAP_STRICT_READINESS": "false"}
    )
    try:
        yield running
    finally:
        running.stop()


def test_a_body_in_pieces_with_the_next_request_pipelined_behind_it(server: RunningServer) -> None:
    rows = np.random.default_rng(1).normal(size=(60_000, 3)).astype(np.float32)  # 720 kB
    big = binary_infer("identity-fp32", {"input": rows}, request_id="odd-length-id-7")
    small = json_infer(IRIS)
    cut = big.index(b"\r\n\r\n") + 4 + 1000  # the headers and the first kilobyte, then pauses
    pieces = [big[:cut], *(big[i : i + 150_000] for i in range(cut, len(big), 150_000))]
    pieces[-1] += small  # the next request in the same segment as the body's end
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.03)
        responses = Responses(sock)
        status, headers, body = responses.next()
        assert status == 200, body[:300]
        np.testing.assert_array_equal(binary_output(headers, body, "output"), rows)
        status, _, body = responses.next()
        assert status == 200, body[:300]
        assert orjson.loads(body)["model_name"] == "iris-like"


def test_a_client_that_expects_100_continue_gets_it_before_sending_the_body(server: RunningServer) -> None:
    """curl sends `Expect: 100-continue` for big bodies and waits for the interim answer."""
    rows = np.random.default_rng(4).normal(size=(40_000, 3)).astype(np.float32)
    request = binary_infer("identity-fp32", {"input": rows})
    head, body = request.split(b"\r\n\r\n", 1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + b"\r\nExpect: 100-continue\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(4096)
            assert chunk, "closed before 100 Continue"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        sock.sendall(body)
        responses = Responses(sock)
        responses.buffer = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        status, headers, answer = responses.next()
        assert status == 200, answer[:300]
        np.testing.assert_array_equal(binary_output(headers, answer, "output"), rows)


def test_one_connection_alternates_big_and_small_bodies(server: RunningServer) -> None:
    """Keep-alive across bodies read whole (the parser is renewed) and small ones read as before."""
    rng = np.random.default_rng(2)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        responses = Responses(sock)
        for index in range(12):
            a, b = (rng.normal(size=(20_000 + index, 2)).astype(np.float32) for _ in range(2))
            sock.sendall(binary_infer("adder", {"a": a, "b": b}, request_id="x" * index))
            status, headers, body = responses.next()
            assert status == 200, body[:300]
            np.testing.assert_array_equal(binary_output(headers, body, "sum"), a + b)
            np.testing.assert_array_equal(binary_output(headers, body, "difference"), a - b)
            sock.sendall(json_infer(IRIS))
            status, _, body = responses.next()
            assert status == 200, body[:300]


def test_a_client_leaving_mid_body_is_counted_and_harms_no_one(server: RunningServer) -> None:
    rows = np.ones((100_000, 3), dtype=np.float32)
    request = binary_infer("identity-fp32", {"input": rows})
    with httpx.Client(base_url=server.url, timeout=30) as http:
        before = metric(
            http, "recap_request_failures_total", endpoint="infer", model="identity-fp32", protocol="v2",
            reason="client_disconnected", version="1",
        )  # fmt: skip
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                sock.sendall(request[: len(request) // 2])
                time.sleep(0.1)
        deadline = time.monotonic() + 10
        while True:
            after = metric(
                http, "recap_request_failures_total", endpoint="infer", model="identity-fp32", protocol="v2",
                reason="client_disconnected", version="1",
            )  # fmt: skip
            if after == before + 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert after == before + 3
        assert http.post("/v2/models/iris-like/infer", json=IRIS).status_code == 200
        assert http.get("/v2/health/live").status_code == 200


def test_the_log_has_no_traceback(server: RunningServer) -> None:
    assert "Traceback" not in server.log(), server.log_tail()


@pytest.fixture(autouse=True)
def _server_alive(server: RunningServer) -> Iterator[None]:
    yield
    assert server.process.poll() is None, server.log_tail()
