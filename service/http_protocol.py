"""uvicorn's HTTP protocol (httptools), guarded against slow clients.

uvicorn times out a connection only while it is idle between requests (`--timeout-keep-alive`): a
client that sends half its headers, or half its body, holds the connection, and its request, forever.
This protocol notes when each connection starts waiting for headers (connected, or the first byte of a
request) and for the rest of a body (headers complete), and one sweep a fraction of a second apart
closes what waited too long: a connection whose headers are late is closed, a late body is answered
408 and closed. Per request this costs three time stamps; there is no timer per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)
_BODY_TIMEOUT_MARK = "_recap_body_timed_out"
_IDLE, _HEADERS, _BODY, _APP = range(4)


def body_timed_out(receive: Any) -> bool:
    """Whether the request behind this ASGI `receive` was cut off for a late body (the pipeline then
    counts a 408, not a client that went away)."""
    return bool(getattr(getattr(receive, "__self__", None), _BODY_TIMEOUT_MARK, False))


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Set `header_timeout_s` and `body_timeout_s` in a subclass (`guarded_protocol`)."""

    header_timeout_s = 10.0
    body_timeout_s = 60.0
    _watched: ClassVar[weakref.WeakSet[GuardedHttpToolsProtocol]] = weakref.WeakSet()
    _sweeper: ClassVar[asyncio.Task[None] | None] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait(_HEADERS)  # a connection that never sends a byte is a slow client too
        cls = type(self)
        cls._watched.add(self)
        if cls._sweeper is None or cls._sweeper.done():
            cls._sweeper = self.loop.create_task(cls._sweep())

    def connection_lost(self, exc: Exception | None) -> None:
        type(self)._watched.discard(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase == _IDLE:
            self._wait(_HEADERS)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._wait(_BODY)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = _APP  # the request is whole: the pipeline's deadline takes over

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._phase = _IDLE  # uvicorn's keep-alive timeout watches idle connections

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
