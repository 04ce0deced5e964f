"""uvicorn's HTTP protocol (httptools), guarded against slow clients.

uvicorn times out a connection only while it is idle between requests (`--timeout-keep-alive`): a
client that sends half its headers, or half its body, holds the connection, and its request, forever.
This protocol notes when each connection starts waiting for headers (connected, or the first byte of a
request) and for the rest of a body (headers complete), and one sweep a fraction of a second apart
closes what waited too long: a connection whose headers are late is closed, a late body is answered
408 and closed. Per request this costs three time stamps; there is no timer per request.

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

The V2 infer fast path answers with `write_response`: status line, headers and body in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import weakref
from typing import Any, ClassVar

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


def body_timed_out(receive: Any) -> bool:
    """Whether the request behind this ASGI `receive` was cut off for a late body (the pipeline then
    counts a 408, not a client that went away)."""
    return bool(getattr(getattr(receive, "__self__", None), _BODY_TIMEOUT_MARK, False))


class _WholeBody:
    """A body being gathered into its final buffer; `done` gets the body (None: it never came whole)."""

    __slots__ = ("buffer", "done", "end", "filled", "pad")

    def __init__(self, length: int, align_at: int, done: asyncio.Future[memoryview | None]) -> None:
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

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(self.buffer[self.pad : self.end] if self.filled == self.end else None)


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
    parts = [STATUS_LINE[status]]
    for name, value in (*cycle.default_headers, *headers):
        parts += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"content-length: %d\r\n\r\n" % len(body), body)
    cycle.transport.write(b"".join(parts))
    cycle.message_event.set()  # what uvicorn's send() does once the body is out
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Set `header_timeout_s` and `body_timeout_s` in a subclass (`guarded_protocol`)."""

    header_timeout_s = 10.0
    body_timeout_s = 60.0
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

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase == _IDLE:
            self._wait(_HEADERS)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        setattr(self.cycle, _PROTOCOL_MARK, self)  # whole_body() may gather this request's body
        self._wait(_BODY)

    def on_body(self, body: bytes) -> None:
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
        self._end_whole_body()
        super().on_message_complete()
        self._phase = _APP  # the request is whole: the pipeline's deadline takes over

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._phase = _IDLE  # uvicorn's keep-alive timeout watches idle connections

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

    def _close_late_headers(self) -> None:
        type(self)._watched.discard(self)
        log.info("closed a connection whose request headers took over %.3g s", self.header_timeout_s)
        self.transport.close()

    def _answer_late_body(self) -> None:
        type(self)._watched.discard(self)
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            setattr(cycle, _BODY_TIMEOUT_MARK, True)  # read by body_timed_out()
            message = f"the request body did not arrive within {self.body_timeout_s:.3g} s"
            body = orjson.dumps({"error": message})
            head = (
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            )
            with contextlib.suppress(RuntimeError):  # the transport may be closing already
                self.transport.write(head + body)
            cycle.response_started = cycle.response_complete = True  # the app's answer is not sent
            cycle.disconnected = True
            cycle.message_event.set()  # the app's read of the body ends: a disconnect, marked late
            self._end_whole_body()
        log.info("answered 408 to a request whose body took over %.3g s", self.body_timeout_s)
        self.transport.close()


def guarded_protocol(header_timeout_s: float, body_timeout_s: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=`, with these timeouts and its own set of connections."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "header_timeout_s": header_timeout_s,
            "body_timeout_s": body_timeout_s,
            "_watched": weakref.WeakSet(),
        },
    )
