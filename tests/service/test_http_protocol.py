"""service.http_protocol on uvicorn's real protocol, with a transport that records what it is given.

The event loop is real; only the socket is not: each test hands bytes to the transport's protocol the way
uvloop does (`get_buffer`, fill, `buffer_updated`) and reads back every `write` the server made, so the
number of writes per response and the state after it are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from service.http_protocol import guarded_protocol, whole_body, write_response

App = Callable[[Any, Any, Any], Awaitable[None]]


class RecordingTransport(asyncio.Transport):
    """What uvicorn's protocol needs of a transport; keeps each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True
        self.protocol: Any = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def feed(self, data: bytes) -> None:
        """Hand `data` to the protocol as uvloop would: into the buffer it offers, as often as needed."""
        while data:
            buffer = self.protocol.get_buffer(-1)
            size = min(len(buffer), len(data))
            buffer[:size] = data[:size]
            data = data[size:]
            self.protocol.buffer_updated(size)


async def one_write_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers with write_response where it can, through ASGI where it cannot."""
    body = b"you asked for " + scope["path"].encode()
    while (await receive())["more_body"]:
        pass
    if not write_response(receive, 200, [(b"content-type", b"text/plain")], body):
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class SocketTransport(RecordingTransport):
    """A recording transport over a real (non-blocking) socket, which it offers as its `socket`; bytes
    reach the protocol only through `feed`, as if the loop had read them."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else super().get_extra_info(name, default)


def connect(
    app: App = one_write_app,
    *,
    access_log: bool = False,
    transport: RecordingTransport | None = None,
    direct: Any = None,
) -> RecordingTransport:
    config = uvicorn.Config(app, access_log=access_log, log_config=None, lifespan="off")
    protocol = guarded_protocol(10.0, 60.0, direct)(config=config, server_state=ServerState(), app_state={})
    protocol.access_log = access_log  # uvicorn reads it from the access logger's handlers
    transport = transport or RecordingTransport()
    protocol.connection_made(transport)
    return transport


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_a_whole_response_goes_out_in_one_write() -> None:
    async def test() -> None:
        transport = connect()
        transport.feed(get("/one"))
        await settle()
        assert transport.writes == [
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 18\r\n\r\nyou asked for /one"
        ]
        assert not transport.closed  # keep-alive

    run(test)


def test_pipelined_requests_are_answered_in_order_one_write_each() -> None:
    async def test() -> None:
        transport = connect()
        transport.feed(get("/a") + get("/bb") + get("/ccc"))
        await settle()
        assert [w.rsplit(b"\r\n\r\n", 1)[1] for w in transport.writes] == [
            b"you asked for /a",
            b"you asked for /bb",
            b"you asked for /ccc",
        ]

    run(test)


@pytest.mark.parametrize(
    "request_bytes",
    [get("/x", "Connection: close\r\n"), b"GET /x HTTP/1.0\r\nHost: x\r\n\r\n"],
    ids=["connection-close", "http-1.0"],
)
def test_a_response_that_ends_the_connection_says_so_and_closes(request_bytes: bytes) -> None:
    async def test() -> None:
        transport = connect()
        transport.feed(request_bytes)
        await settle()
        assert len(transport.writes) == 1
        assert b"\r\nconnection: close\r\n" in transport.writes[0]
        assert transport.closed

    run(test)


def test_with_the_access_log_on_the_response_goes_through_uvicorns_send() -> None:
    async def test() -> None:
        transport = connect(access_log=True)
        transport.feed(get("/logged"))
        await settle()
        assert len(transport.writes) == 2  # status and headers, then the body: uvicorn logged it
        assert transport.writes[1] == b"you asked for /logged"

    run(test)


def test_a_response_already_started_is_not_written_again() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        assert not write_response(receive, 500, [], b"no")
        await send({"type": "http.response.body", "body": b"ok"})

    async def test() -> None:
        transport = connect(app)
        transport.feed(get("/"))
        await settle()
        assert b"".join(transport.writes) == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    run(test)


def test_connections_sharing_the_read_buffer_each_get_their_own_request() -> None:
    """One read buffer per thread serves every connection: bytes of two requests that arrive
    interleaved, a few at a time, still make two whole requests."""

    async def test() -> None:
        first, second = connect(), connect()
        a = get("/first-connection", "X-Pad: " + "a" * 300 + "\r\n")
        b = get("/second", "X-Pad: " + "b" * 500 + "\r\n")
        for start in range(0, max(len(a), len(b)), 7):
            first.feed(a[start : start + 7])
            second.feed(b[start : start + 7])
        await settle()
        assert first.writes[0].endswith(b"you asked for /first-connection")
        assert second.writes[0].endswith(b"you asked for /second")

    run(test)


def test_a_big_body_pauses_reading_until_the_app_asks_for_it() -> None:
    """The rest waits in the socket (for whole_body, or for receive(), which resumes reading)."""
    seen: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        size = 0
        while True:
            message = await receive()
            size += len(message["body"])
            if not message["more_body"]:
                break
        seen.append(size)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def test() -> None:
        transport = connect(app)
        body = b"z" * 200_000
        head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        transport.feed(head + body[:40_000])
        assert not transport.reading
        await settle()
        assert transport.reading  # receive() asked for more
        transport.feed(body[40_000:])
        await settle()
        assert seen == [200_000]
        assert transport.writes[0].startswith(b"HTTP/1.1 204 ")

    run(test)


def test_a_body_left_unread_by_an_answered_request_is_drained_and_the_connection_goes_on() -> None:
    """An app that answers before the body (admission's 503, say) must not leave reading paused."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b"busy"
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def test() -> None:
        transport = connect(app)
        body = b"z" * 300_000
        head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        transport.feed(head + body[:40_000])
        await settle()
        assert transport.writes[0].startswith(b"HTTP/1.1 503 ")
        for start in range(40_000, len(body), 50_000):
            assert transport.reading, f"reading paused at byte {start} of a body nobody will read"
            transport.feed(body[start : start + 50_000])
        transport.feed(get("/next"))
        await settle()
        answers = [w for w in transport.writes if w.startswith(b"HTTP/1.1 ")]  # ASGI: head, then body
        assert len(answers) == 2 and answers[1].startswith(b"HTTP/1.1 503 ")

    run(test)


async def gathering_app(scope: Any, receive: Any, send: Any) -> None:
    """Gathers its declared body with whole_body (as the request pipeline does) and answers its length
    and a digest of it."""
    length = int(dict(scope["headers"])[b"content-length"])
    pending = whole_body(receive, length)
    assert pending is not None
    body = await pending
    assert body is not None
    answer = b"%d %d" % (len(body), sum(bytes(body[::997])))
    assert write_response(receive, 200, [], answer)


@contextlib.contextmanager
def gathering_connection() -> Iterator[tuple[SocketTransport, socket.socket]]:
    """gathering_app on a transport over one end of a socket pair (non-blocking, as the loop's); the
    test writes to the other end what has arrived in the socket."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    with ours, peer:
        transport = SocketTransport(ours)
        connect(gathering_app, transport=transport)
        yield transport, peer


def big_post(body: bytes) -> bytes:
    return f"POST /gather HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def expected_answer(body: bytes) -> bytes:
    return b"%d %d" % (len(body), sum(body[::997]))


def test_a_body_waiting_in_the_socket_is_read_at_once_and_the_next_request_is_left_there() -> None:
    """The rest of the body was in the socket when the app asked: read from the app's task, without a
    read by the loop, exactly to the body's end (the pipelined request behind it stays in the socket)."""
    body = bytes(range(256)) * 700  # 179,200 bytes: the rest fits a socket pair's default buffer
    request = big_post(body)
    following = get("/next")

    async def test() -> None:
        with gathering_connection() as (transport, peer):
            peer.sendall(request[40_000:] + following)  # waiting before the loop could read any of it
            transport.feed(request[:40_000])  # the loop's read: the headers and the body's start
            await settle()
            assert transport.writes[0].endswith(b"\r\n\r\n" + expected_answer(body))
            assert transport.protocol.pending is None  # the reader gathered nothing
            assert transport.sock.recv(1 << 16) == following

    run(test)


def test_a_body_partly_in_the_socket_gets_the_rest_through_the_reader() -> None:
    body = bytes(range(251)) * 1000
    request = big_post(body)

    async def test() -> None:
        with gathering_connection() as (transport, peer):
            peer.sendall(request[40_000:100_000])  # only part of the rest has arrived
            transport.feed(request[:40_000])
            await settle()
            assert transport.writes == [] and transport.reading  # the reader waits for the rest
            transport.feed(request[100_000:])  # the loop reads on, as it arrives
            await settle()
            assert len(transport.writes) == 1
            assert transport.writes[0].endswith(b"\r\n\r\n" + expected_answer(body))

    run(test)


def test_nothing_is_read_from_the_socket_of_a_closing_transport() -> None:
    """Once the transport is closing its descriptor may be closed and its number reused: the body is
    left to the loop's reads (which end with the connection)."""
    body = bytes(range(256)) * 400
    request = big_post(body)

    async def test() -> None:
        with gathering_connection() as (transport, peer):
            peer.sendall(request[40_000:])
            transport.feed(request[:40_000])
            transport.closed = True  # closing before the app asks for the body
            await settle()
            assert transport.writes == []
            assert transport.sock.recv(1 << 20) == request[40_000:]

    run(test)


class Direct:
    """A direct endpoint for `connect(direct=...)`: takes POST .../infer with a declared length, echoes
    the body; `hold` (an event) makes its answer come from a coroutine that waits for it."""

    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.hold = hold
        self.started: list[str] = []
        self.abandoned: list[bool] = []

    def start(self, path: str, headers: list[tuple[bytes, bytes]]) -> Any:
        declared = dict(headers).get(b"content-length")
        if declared is None:
            return None
        self.started.append(path)
        if "refuse" in path:
            return 404, b"no such model", [(b"content-type", b"text/plain")]
        endpoint, length = self, int(declared)

        class Request:
            align_at = 0

            def __init__(self) -> None:
                self.length = length

            def body(self, body: memoryview) -> Any:
                answer = (200, b"echo " + bytes(body), [(b"content-type", b"text/plain")])
                if endpoint.hold is None:
                    return answer
                hold = endpoint.hold

                async def later() -> Any:
                    await hold.wait()
                    return answer

                return later()

            def abandon(self, timed_out: bool) -> None:
                endpoint.abandoned.append(timed_out)

        return Request()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def test_a_direct_request_gets_its_body_whole_and_its_answer_in_one_write_before_the_next() -> None:
    async def test() -> None:
        direct = Direct()
        transport = connect(direct=direct)
        body = bytes(range(256)) * 800  # 200 KiB: the first read, then straight into its buffer
        request = post("/v2/models/m/infer", body)
        transport.feed(request[:1000])
        transport.feed(request[1000:150_000])
        transport.feed(request[150_000:] + get("/after"))
        await settle()
        assert direct.started == ["/v2/models/m/infer"]
        assert len(transport.writes) == 2
        assert (
            transport.writes[0]
            == (
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\necho "
                % (len(body) + 5)
            )
            + body
        )
        assert transport.writes[1].endswith(b"you asked for /after")  # the ASGI app answered the GET
        assert not transport.closed

    run(test)


def test_what_the_direct_path_cannot_take_goes_to_the_app() -> None:
    async def test() -> None:
        for request, access_log in [
            (post("/v2/models/m/infer?x=1", b"{}"), False),  # a query
            (post("/v2/models/m%2Fx/infer", b"{}"), False),  # an escaped path
            (post("/v2/models/m/infer", b"{}", "Expect: 100-continue\r\n"), False),
            (post("/v2/models/m/infer", b"{}"), True),  # the access log wants the ASGI cycle
            (
                b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                False,
            ),
        ]:
            direct = Direct()
            transport = connect(direct=direct, access_log=access_log)
            transport.feed(request)
            await settle()
            assert b"you asked for" in b"".join(transport.writes), request
            assert direct.started == []

    run(test)


def test_a_refusal_before_the_body_is_answered_and_the_body_dropped() -> None:
    async def test() -> None:
        direct = Direct()
        transport = connect(direct=direct)
        transport.feed(post("/v2/models/refuse/infer", b"x" * 100_000) + post("/v2/models/m/infer", b"ok"))
        await settle()
        assert [w.split(b"\r\n", 1)[0] for w in transport.writes] == [
            b"HTTP/1.1 404 Not Found",
            b"HTTP/1.1 200 OK",
        ]
        assert transport.writes[1].endswith(b"echo ok") and not transport.closed

    run(test)


def test_a_direct_answer_from_a_task_holds_the_pipelined_request_behind_it() -> None:
    async def test() -> None:
        hold = asyncio.Event()
        transport = connect(direct=Direct(hold))
        transport.feed(post("/v2/models/m/infer", b"first") + get("/second"))
        await settle()
        assert transport.writes == [] and not transport.reading  # the GET waits for the answer
        hold.set()
        await settle()
        assert transport.writes[0].endswith(b"echo first")
        assert transport.writes[1].endswith(b"you asked for /second")
        assert transport.reading

    run(test)


def test_a_direct_request_whose_client_leaves_is_abandoned_once() -> None:
    async def test() -> None:
        direct = Direct()
        transport = connect(direct=direct)
        transport.feed(post("/v2/models/m/infer", b"x" * 1000)[:-10])
        transport.protocol.connection_lost(None)
        assert direct.abandoned == [False]
        hold = asyncio.Event()
        running = Direct(hold)
        transport = connect(direct=running)
        transport.feed(post("/v2/models/m/infer", b"y"))
        await settle()
        transport.protocol.connection_lost(None)  # while its answer is worked out
        assert running.abandoned == [False]
        hold.set()
        await settle()
        assert transport.writes == []  # nobody to answer

    run(test)


def test_a_direct_request_on_http_1_0_is_answered_and_closed() -> None:
    async def test() -> None:
        transport = connect(direct=Direct())
        transport.feed(b"POST /v2/models/m/infer HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
        await settle()
        assert b"connection: close\r\n" in transport.writes[0] and transport.writes[0].endswith(b"echo hi")
        assert transport.closed

    run(test)
