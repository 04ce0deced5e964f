"""uvicorn's HTTP protocol (httptools), guarded against slow clients.

uvicorn times out a connection only while it is idle between requests (`--timeout-keep-alive`): a
client that sends half its headers, or half its body, holds the connection, and its request, forever.
This protocol notes when each connection starts waiting for headers (connected, or the first byte of a
request) and for the rest of a body (headers complete), and one sweep a fraction of a second apart
closes what waited too long: a connection whose headers are late is closed, a late body is answered
408 and closed, and a connection idle past uvicorn's keep-alive timeout (5 s) is closed. Per request this
costs three time stamps; there is no timer per request.

The socket is read by a `BufferedProtocol` (`_Reader`), into one 64 KiB buffer per thread that the
parser consumes at once: uvloop would otherwise read up to 256 KB into a new bytes object per read, and
the start of a big body would pass through four copies (uvloop's bytes, httptools' slice, uvicorn's
bytearray, the body's buffer) before the app asked for it.

It also reads a whole body at once where the request pipeline asks for it (`whole_body`): uvicorn
pauses the socket at every 64 KiB the app has not taken, wakes the app for every chunk and copies each
chunk three times after the kernel (httptools' slice, uvicorn's bytearray, the body's buffer), so a
1 MB tensor took some 16 round trips through the event loop and four copies. A body whose length was
declared, checked against --max-body-bytes and reserved by admission is instead read by the reader
straight into one buffer of that length: the kernel copies the rest of the body there, placed so that
the binary tensor data after the JSON header starts 64-byte aligned (numpy then uses it in place); what
the socket already holds is read at once, from the app's task (`read_queued`). Then the parser reads
on, a fresh one for the next request on the connection (httptools never saw those body bytes). Reading
pauses once 32 KiB of a body are held, so the rest waits in the socket for the whole-body read (or for
the app's `receive()`).

V2 infer is answered from these callbacks where it can (`direct_infer`, `service.api.infer`): once a
`POST .../infer` with a declared body length has its headers, the request pipeline checks it (a refusal
is answered at once and the body read and dropped); its body is gathered into its own buffer as above,
and once whole the answer is written in one write (status line, headers, body), from the callback for
a small batch, from a task for one that runs in a worker thread (reading pauses meanwhile, so a
pipelined request waits its turn). No ASGI task, scope or messages: they cost more than the pipeline,
the codec and a small model together. Everything else (a chunked body, an upgrade, the access log on)
goes to the ASGI app, whose V2 infer fast path answers with `write_response` (one write too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, ClassVar, Protocol

import httptools
import numpy as np
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger(__name__)
_BODY_TIMEOUT_MARK = "_recap_body_timed_out"
_WHOLE_BODY_MARK = "_recap_whole_body"
_PROTOCOL_MARK = "_recap_protocol"
_ALIGNMENT = 64
_READ_SIZE = 65536  # uvicorn's high-water mark: a body up to about this size comes with its headers
_PAUSE_AT = _READ_SIZE // 2  # body bytes held before reading stops until the app asks for the rest
_IDLE, _HEADERS, _BODY, _APP = range(4)
_CLOSE = (b"connection", b"close")
Headers = list[tuple[bytes, bytes]]
Response = tuple[int, bytes, Headers]  # status, body, the app's headers (valid, lower case)


class DirectRequest(Protocol):
    """A request the protocol answers itself (service.api.infer.DirectInfer)."""

    length: int  # the declared body's
    align_at: int  # the body's byte to align

    def body(self, body: memoryview) -> Response | Coroutine[Any, Any, Response]:
        """The answer, from the whole body; never raises."""

    def abandon(self, timed_out: bool) -> None:
        """The request ended before it was answered: the client left, or its body was late."""


class DirectEndpoint(Protocol):
    """What answers requests from the protocol's callbacks (service.api.infer.InferHandler)."""

    def start(self, path: str, headers: Headers) -> DirectRequest | Response | None:
        """A request to answer once its body is whole, the answer to one refused before its body, or
        None for a request the ASGI app answers."""


class _NoEvent:
    def set(self) -> None:
        pass


class _DirectCycle:
    """`self.cycle` while a request is answered directly: what uvicorn and this protocol read of it."""

    __slots__ = ("disconnected", "keep_alive", "response_complete", "response_started")
    message_event = _NoEvent()

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_started = self.response_complete = self.disconnected = False


def whole_response(
    default_headers: Headers, status: int, headers: Headers, body: bytes, keep_alive: bool
) -> tuple[bytes, bool]:
    """A whole response (status line, headers with its content-length, body) as one bytes, and whether
    the connection stays open after it (not where the app's headers close it)."""
    parts = [STATUS_LINE[status]]
    for name, value in (*default_headers, *headers):
        parts += (name, b": ", value, b"\r\n")
    if _CLOSE in headers:
        keep_alive = False
    elif not keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"content-length: %d\r\n\r\n" % len(body), body)
    return b"".join(parts), keep_alive


def body_timed_out(receive: Any) -> bool:
    """Whether the request behind this ASGI `receive` was cut off for a late body (the pipeline then
    counts a 408, not a client that went away)."""
    return bool(getattr(getattr(receive, "__self__", None), _BODY_TIMEOUT_MARK, False))


class _WholeBody:
    """A body being gathered into its final buffer; `done`, if any, gets the body (None: it never came
    whole)."""

    __slots__ = ("buffer", "done", "end", "filled", "pad")

    def __init__(self, length: int, align_at: int, done: asyncio.Future[memoryview | None] | None) -> None:
        # Not zeroed (a bytearray's zeroing costs a pass over the body): only filled bytes are handed out.
        storage = np.empty(length + _ALIGNMENT, dtype=np.uint8)
        address: int = storage.__array_interface__["data"][0]
        self.pad = self.filled = -(address + align_at) % _ALIGNMENT
        self.end = self.pad + length
        self.buffer = memoryview(storage.data)
        self.done = done

    def add(self, chunk: bytes | bytearray) -> None:
        end = self.filled + len(chunk)
        if end <= self.end:  # the parser holds a body to its Content-Length
            self.buffer[self.filled : end] = chunk
        self.filled = end

    def whole(self) -> memoryview | None:
        return self.buffer[self.pad : self.end] if self.filled == self.end else None

    def finish(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.whole())


class _ReadBuffers(threading.local):
    """One read buffer per thread: the loop fills it and the parser consumes it in one callback, so the
    connections of a loop can share it."""

    def __init__(self) -> None:
        self.view = memoryview(bytearray(_READ_SIZE))


_read_buffers = _ReadBuffers()


class _Reader(asyncio.BufferedProtocol):
    """The transport's protocol (uvloop reads into a buffer only for a protocol that is not an
    `asyncio.Protocol`, as uvicorn's is). It reads for the HTTP protocol, into the thread's read buffer,
    or, while the rest of a body is gathered (`pending`), straight into that body's buffer, exactly to
    its end (what follows is the next request's); everything else goes to the HTTP protocol."""

    def __init__(self, protocol: GuardedHttpToolsProtocol) -> None:
        self.protocol = protocol
        self.pending: _WholeBody | None = None
        self.buffer = _read_buffers.view

    def get_buffer(self, sizehint: int) -> memoryview:
        pending = self.pending
        if pending is not None:
            return pending.buffer[pending.filled : pending.end]
        self.buffer = _read_buffers.view
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        pending = self.pending
        if pending is None:
            # httptools copies what it keeps (url, headers, body slices) before this returns.
            self.protocol.data_received(self.buffer[:nbytes])  # type: ignore[arg-type]
            return
        pending.filled += nbytes
        if pending.filled == pending.end:
            self.pending = None
            self.protocol.body_read()

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.connection_lost(exc)

    def eof_received(self) -> None:
        self.protocol.eof_received()

    def pause_writing(self) -> None:
        self.protocol.pause_writing()

    def resume_writing(self) -> None:
        self.protocol.resume_writing()


def whole_body(receive: Any, length: int, align_at: int = 0) -> asyncio.Future[memoryview | None] | None:
    """The rest of the request's body as one buffer, read without pauses; None where `receive` is not
    this protocol's or the body came whole already (then read it through `receive`). Only for a body
    whose declared `length` is within the limits: it is buffered whole. `align_at`: the offset in the
    body to align (the binary tensor data). Call it before any `receive()`. The future's None: the
    client left or was too slow."""
    cycle: Any = getattr(receive, "__self__", None)
    protocol = getattr(cycle, _PROTOCOL_MARK, None)
    if protocol is None or getattr(cycle, _WHOLE_BODY_MARK, None) is not None:
        return None
    if cycle.disconnected or not cycle.more_body:
        return None  # it came whole with the headers (a small body): one `receive()` takes it as it is
    if cycle.waiting_for_100_continue and not protocol.transport.is_closing():
        protocol.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # as uvicorn's receive() does
        cycle.waiting_for_100_continue = False
    pending = _WholeBody(length, align_at, protocol.loop.create_future())
    if cycle.body:  # what arrived with the headers
        pending.add(cycle.body)
        cycle.body = bytearray()
    setattr(cycle, _WHOLE_BODY_MARK, pending)
    if not protocol.read_queued(pending):
        protocol.reader.pending = pending
        protocol.flow.resume_reading()
    return pending.done


def write_response(receive: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
    """Send a whole response (status line, headers with its content-length, body) in one write, where
    uvicorn's ASGI `send` takes two writes, so two system calls and two wake-ups of the client (some
    3 % of a 1 MB infer's server time, 6 % of a one-row one's). `headers` are the app's, valid and
    lower case. False where `receive` is not this protocol's, a response has started, writes are
    paused or the access log is on: then send through ASGI."""
    cycle: Any = getattr(receive, "__self__", None)
    if getattr(cycle, _PROTOCOL_MARK, None) is None:
        return False
    if cycle.response_started or cycle.flow.write_paused or cycle.access_log:
        return False
    if cycle.disconnected:
        return True  # as uvicorn's send(): nobody to answer
    cycle.response_started = cycle.response_complete = True
    cycle.waiting_for_100_continue = False
    response, keep_alive = whole_response(cycle.default_headers, status, headers, body, cycle.keep_alive)
    cycle.transport.write(response)
    cycle.message_event.set()  # what uvicorn's send() does once the body is out
    if not keep_alive:
        cycle.keep_alive = False
        cycle.transport.close()
    cycle.on_response()
    return True


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Set `header_timeout_s`, `body_timeout_s` and `direct_infer` in a subclass (`guarded_protocol`)."""

    header_timeout_s = 10.0
    body_timeout_s = 60.0
    direct_infer: ClassVar[DirectEndpoint | None] = None
    # A request answered directly: while its body is gathered (`_direct`, `_gather`), or while its answer
    # is worked out in a task (`_direct_running`).
    _direct: DirectRequest | None = None
    _gather: _WholeBody | None = None
    _direct_running: DirectRequest | None = None
    _watched: ClassVar[weakref.WeakSet[GuardedHttpToolsProtocol]] = weakref.WeakSet()
    _sweeper: ClassVar[asyncio.Task[None] | None] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.reader = _Reader(self)
        transport.set_protocol(self.reader)
        # A plain TCP socket's descriptor, for read_queued (TLS bytes must go through the transport).
        sock = transport.get_extra_info("socket")
        plain = sock is not None and transport.get_extra_info("ssl_object") is None
        self.socket_fd: int | None = sock.fileno() if plain else None
        self._wait(_HEADERS)  # a connection that never sends a byte is a slow client too
        cls = type(self)
        cls._watched.add(self)
        if cls._sweeper is None or cls._sweeper.done():
            cls._sweeper = self.loop.create_task(cls._sweep())

    def connection_lost(self, exc: Exception | None) -> None:
        type(self)._watched.discard(self)
        super().connection_lost(exc)
        self._end_whole_body()
        direct = self._direct or self._direct_running
        if direct is not None:
            self._direct = self._gather = self._direct_running = None
            direct.abandon(timed_out=False)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        gather = self._gather
        if gather is not None and self.reader.pending is None and not self.read_queued(gather):
            # The rest of a directly answered body goes straight into its buffer (see body_read).
            self.reader.pending = gather

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase == _IDLE:
            self._wait(_HEADERS)

    def on_headers_complete(self) -> None:
        direct = self.direct_infer
        if direct is not None and self._takes_direct():
            started = direct.start(self.url.decode("latin-1"), self.headers)
            if started is not None:
                self._start_direct(started)
                return
        super().on_headers_complete()
        setattr(self.cycle, _PROTOCOL_MARK, self)  # whole_body() may gather this request's body
        self._wait(_BODY)

    def _takes_direct(self) -> bool:
        """Whether this request may be answered directly: a POST to a path ending in /infer, with
        nothing else in progress on the connection and nothing that needs the ASGI cycle (an upgrade,
        100-continue, an escaped or rooted path, a query, the access log, a write backlog)."""
        url = self.url
        cycle = self.cycle
        return (
            url.endswith(b"/infer")
            and url.startswith(b"/")
            and b"%" not in url
            and b"?" not in url
            and self.parser.get_method() == b"POST"
            and (cycle is None or cycle.response_complete)
            and not self.pipeline
            and not self.expect_100_continue
            and not self.root_path
            and not self.access_log
            and self.limit_concurrency is None
            and not self.flow.write_paused
            and not self.parser.should_upgrade()
        )

    def _start_direct(self, started: DirectRequest | Response) -> None:
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        self.cycle = cycle = _DirectCycle(keep_alive)  # type: ignore[assignment]
        self._wait(_BODY)
        if isinstance(started, tuple):
            # Refused before its body: answered now; the parser reads the body on and drops it (on_body
            # drops what comes after a complete response), so the client reads this, not a reset.
            self._write_direct(started, cycle)
            return
        self._direct = started
        self._gather = _WholeBody(started.length, started.align_at, None)

    def _answer_direct(self, direct: DirectRequest, body: memoryview) -> None:
        cycle: _DirectCycle = self.cycle  # type: ignore[assignment]
        answer = direct.body(body)
        if isinstance(answer, tuple):
            self._write_direct(answer, cycle)
            return
        # Worked out in a worker thread: what follows on the connection waits in the socket (or, already
        # read, in uvicorn's pipeline: the cycle is not complete) until this is answered.
        self.flow.pause_reading()
        self._direct_running = direct
        task = self.loop.create_task(self._answer_later(answer, cycle))
        self.tasks.add(task)  # uvicorn's shutdown waits for it
        task.add_done_callback(self.tasks.discard)

    async def _answer_later(self, answer: Coroutine[Any, Any, Response], cycle: _DirectCycle) -> None:
        try:
            response = await answer
        finally:
            self._direct_running = None
        self._write_direct(response, cycle)

    def _write_direct(self, response: Response, cycle: _DirectCycle) -> None:
        cycle.response_started = cycle.response_complete = True
        if self.transport.is_closing():
            return  # the client left, or the server closed the connection (a late body)
        status, content, headers = response
        whole, keep_alive = whole_response(
            self.server_state.default_headers, status, headers, content, cycle.keep_alive
        )
        self.transport.write(whole)
        if not keep_alive:
            cycle.keep_alive = False
            self.transport.close()
        self.on_response_complete()

    def on_body(self, body: bytes) -> None:
        gather = self._gather
        if gather is not None:
            gather.add(body)
            return
        super().on_body(body)
        cycle = self.cycle
        if not cycle.response_complete and len(cycle.body) >= _PAUSE_AT:
            # The rest of a big body waits in the socket: for whole_body() to read it straight into its
            # buffer, or for the app's receive(), which resumes reading (uvicorn pauses at 64 KiB). Once
            # answered (a 503 before the body, say), the rest is read and dropped as uvicorn does.
            self.flow.pause_reading()

    def read_queued(self, pending: _WholeBody) -> bool:
        """Read what the socket already holds of a gathered body straight into its buffer, now, from the
        app's task; True if that made it whole. A big body has usually arrived by the time the app asks
        for it, and a read here spares the loop's round trip (a wake-up of the reader, then of the task).
        Safe beside the loop: it reads a connection between callbacks and tasks, and every byte it read
        went through the parser, so the socket's next bytes are the body's; the read stops at the body's
        end (what follows is the next request's). Not once the transport is closing: its descriptor may
        be closed, and its number another connection's."""
        if self.socket_fd is None or self.transport.is_closing():
            return False
        try:
            got = os.readv(self.socket_fd, [pending.buffer[pending.filled : pending.end]])
        except OSError:  # nothing waiting (EAGAIN), or an error the loop's own read reports next
            return False
        pending.filled += got  # 0: the client closed; the loop's read finds that out
        if pending.filled < pending.end:
            return False
        self.body_read()
        return True

    def body_read(self) -> None:
        """The reader filled the body: the HTTP protocol reads the connection again, and the body is
        whole, as if the parser had seen it."""
        self.parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):  # as uvicorn's __init__ (httptools < 0.6.3 lacks it)
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.on_message_complete()

    def on_message_complete(self) -> None:
        gather = self._gather
        if gather is not None:
            direct = self._direct
            self._direct = self._gather = None
            self._phase = _APP
            body = gather.whole()
            if direct is not None and body is not None:
                self._answer_direct(direct, body)
            return
        self._end_whole_body()
        super().on_message_complete()
        # The request is whole: the pipeline's deadline takes over, unless it was answered already (a
        # refusal before its body), when the connection is idle again.
        self._phase = _IDLE if self.cycle.response_complete else _APP

    def on_response_complete(self) -> None:
        """uvicorn's, with the keep-alive timeout left to the sweep: uvicorn arms a timer per response
        (and cancels it at the next request's first bytes), some 2 % of a small request's cost."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:  # the next request was read already: it runs now
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._wait(_IDLE)

    def _end_whole_body(self) -> None:
        """Hand a gathered body over: whole, or None when the request ended before it was."""
        pending = getattr(self.cycle, _WHOLE_BODY_MARK, None)
        if pending is not None:
            pending.finish()

    def _wait(self, phase: int) -> None:
        self._phase = phase
        self._since = self.loop.time()

    @classmethod
    async def _sweep(cls) -> None:
        interval = max(0.05, min(1.0, cls.header_timeout_s / 4, cls.body_timeout_s / 4))
        while cls._watched:
            await asyncio.sleep(interval)
            now = asyncio.get_running_loop().time()
            for connection in list(cls._watched):
                waited = now - connection._since
                if connection._phase == _HEADERS and waited > cls.header_timeout_s:
                    connection._close_late_headers()
                elif connection._phase == _BODY and waited > cls.body_timeout_s:
                    connection._answer_late_body()
                elif connection._phase == _IDLE and waited > connection.timeout_keep_alive:
                    connection.timeout_keep_alive_handler()

    def _write_408(self) -> None:
        message = f"the request body did not arrive within {self.body_timeout_s:.3g} s"
        body = orjson.dumps({"error": message})
        head = (
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        with contextlib.suppress(RuntimeError):  # the transport may be closing already
            self.transport.write(head + body)

    def _close_late_headers(self) -> None:
        type(self)._watched.discard(self)
        log.info("closed a connection whose request headers took over %.3g s", self.header_timeout_s)
        self.transport.close()

    def _answer_late_body(self) -> None:
        type(self)._watched.discard(self)
        cycle = self.cycle
        direct = self._direct
        if direct is not None:
            self._direct = self._gather = None
            self.reader.pending = None
            direct.abandon(timed_out=True)
            self._write_408()
            cycle.response_started = cycle.response_complete = True
        elif cycle is not None and not cycle.response_started:
            setattr(cycle, _BODY_TIMEOUT_MARK, True)  # read by body_timed_out()
            self._write_408()
            cycle.response_started = cycle.response_complete = True  # the app's answer is not sent
            cycle.disconnected = True
            cycle.message_event.set()  # the app's read of the body ends: a disconnect, marked late
            self._end_whole_body()
        log.info("answered 408 to a request whose body took over %.3g s", self.body_timeout_s)
        self.transport.close()


def guarded_protocol(
    header_timeout_s: float, body_timeout_s: float, direct_infer: DirectEndpoint | None = None
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=`, with these timeouts and its own set of connections;
    with `direct_infer`, V2 infer is answered from its callbacks."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout_s": header_timeout_s,
            "body_timeout_s": body_timeout_s,
            "direct_infer": direct_infer,
            "_watched": weakref.WeakSet(),
        },
    )
