"""The V2 infer hot path: one handler shared by the FastAPI route and a pure ASGI fast path.

Measured on this project's 2-core machine, FastAPI's routing and dependency solving cost more than
parsing, running and encoding a one-row request together, so `FastInferMiddleware` answers
`POST /v2/models/{m}[/versions/{v}]/infer` before routing. Errors use the same status table as the
exception handlers (`service.api.errors.status_of`), and the same metrics are recorded.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import status_of
from service.api.state import AppState
from service.api.v2_codec import decode_request, encode_response
from service.errors import InternalError, InvalidInputError, RecapError

log = logging.getLogger(__name__)
HEADER = "inference-header-content-length"
_HEADER_BYTES = HEADER.encode()
_JSON = [(b"content-type", b"application/json")]
_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
Headers = list[tuple[bytes, bytes]]


class InferHandler:
    """Look the model up, parse, run (inline, or in a thread for big batches), encode; never raises."""

    def __init__(self, state: AppState) -> None:
        self.repository = state.repository
        self.unknown = state.metrics.unknown
        self.offload_rows = state.settings.offload_min_rows

    async def handle(
        self,
        read_body: Callable[[], Awaitable[bytes]],
        header: str | None,
        model_name: str,
        model_version: str | None,
    ) -> tuple[int, bytes, Headers]:
        start = time.perf_counter()
        metrics = self.unknown
        try:
            model = self.repository.get(model_name, model_version)
            metrics = model.metrics
            model.require_session()
            body = await read_body()
            header_length = None
            if header is not None:
                if not header.isdigit():
                    raise InvalidInputError(f"{HEADER} must be a non-negative integer")
                header_length = int(header)
            request = decode_request(body, model, header_length)
            if request.rows >= self.offload_rows:
                results = await run_in_threadpool(
                    model.run, request.feeds, request.output_names, checked=True
                )
            else:
                results = model.run(request.feeds, request.output_names, checked=True)
            content, json_length = encode_response(model, request, results)
            if json_length is None:
                answer = (200, content, _JSON)
            else:
                binary = [
                    (b"content-type", b"application/octet-stream"),
                    (_HEADER_BYTES, b"%d" % json_length),
                ]
                answer = (200, content, binary)
        except RecapError as error:
            metrics.failure("v2", error.code)
            answer = (status_of(error), orjson.dumps({"error": error.message}), _JSON)
        except Exception:
            log.exception("unexpected error in V2 infer")
            metrics.failure("v2", InternalError.code)
            answer = (500, b'{"error":"internal server error"}', _JSON)
        children = metrics.protocols["v2"]
        children.requests.inc()
        children.duration.observe(time.perf_counter() - start)
        return answer


class FastInferMiddleware:
    """Answer V2 infer requests without FastAPI's routing; everything else goes on to the app."""

    def __init__(self, app: ASGIApp, handler: InferHandler) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/infer"):
            match = _PATH.match(scope["path"])
            if match is not None:
                await self._infer(scope, receive, send, match[1], match[2])
                return
        await self.app(scope, receive, send)

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
    ) -> None:
        header = None
        for key, value in scope["headers"]:
            if key == _HEADER_BYTES:
                header = value.decode("latin-1")

        async def read_body() -> bytes:
            chunks = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise InvalidInputError("the client disconnected before sending the whole body")
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)

        status, content, headers = await self.handler.handle(read_body, header, name, version)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", b"%d" % len(content))],
            }
        )
        await send({"type": "http.response.body", "body": content})
