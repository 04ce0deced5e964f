"""Pure ASGI middleware (BaseHTTPMiddleware would cost throughput): the request body size limit.

A declared Content-Length over the limit is answered 413 before any byte is read; a chunked body is
counted as it arrives and stopped with `PayloadTooLargeError` once it passes the limit.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLargeError
from service.metrics import Metrics


def protocol_of(path: str) -> str:
    if path.startswith("/v1/"):
        return "v1"
    if "/generate" in path:
        return "generate"
    return "v2"


class BodyLimitMiddleware:
    """Reject bodies over `limit` bytes with 413 {"error": ...}."""

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value
                break
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length > self.limit:
                await self._reject(
                    scope, send, f"request body of {length} bytes is over the limit of {self.limit}"
                )
                return
            await self.app(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.limit

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
            return message

        return counted

    async def _reject(self, scope: Scope, send: Send, message: str) -> None:
        self.metrics.unknown.failure(protocol_of(scope["path"]), PayloadTooLargeError.code)
        body = orjson.dumps({"error": message})
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
