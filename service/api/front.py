"""The front door: the outermost ASGI app. Every HTTP request gets its id here, then goes on.

The id is the client's `x-request-id` when it sends a usable one (1 to 128 visible ASCII characters),
otherwise a new one: a random per-process prefix and a counter, which costs about 0.2 us where a
uuid4 costs 2 us. It is set in the logging context (`service.logs.REQUEST_ID`), kept in the scope for
the request pipeline, and sent back in the `x-request-id` response header.

V2 infer (`POST /v2/models/{m}[/versions/{v}]/infer`) is answered here without FastAPI's routing, which
costs more than parsing, running and encoding a one-row request together (`service.api.infer`).
"""

from __future__ import annotations

import itertools
import re
import secrets
from typing import NamedTuple, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import NO_REQUEST, REQUEST_ID

REQUEST_ID_HEADER = b"x-request-id"
SCOPE_KEY = "recap.request_id"
INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
BINARY_HEADER = b"inference-header-content-length"
_CLIENT_ID = re.compile(rb"[!-~]{1,128}")


class InferHead(NamedTuple):
    """What the front door read of a V2 infer request before its body (a tuple: cheap to make)."""

    request_id: str
    model_name: str
    model_version: str | None
    binary_header: bytes | None  # Inference-Header-Content-Length (binary tensor extension)
    content_length: int | None
    authorization: str | None
    receive: Receive  # the body comes from here


class InferEndpoint(Protocol):
    """What the front door needs of the V2 infer handler (service.api.infer.InferHandler)."""

    async def __call__(self, head: InferHead, send: Send) -> None: ...


def request_id_of(scope: Scope) -> str:
    """The id the front door gave this request ("-" for an app assembled without it, as in tests)."""
    request_id: str = scope.get(SCOPE_KEY, NO_REQUEST)
    return request_id


class RequestIds:
    """New ids: a random prefix per process, then a counter."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(6)
        self._counter = itertools.count(1)

    def accept_or_new(self, client_id: bytes | None) -> str:
        if client_id is not None and _CLIENT_ID.fullmatch(client_id):
            return client_id.decode("ascii")
        return f"{self._prefix}-{next(self._counter):x}"


class FrontDoor:
    """Give the request its id; answer V2 infer directly; pass everything else on with the id header."""

    def __init__(self, app: ASGIApp, infer: InferEndpoint) -> None:
        self.app = app
        self.infer = infer
        self.ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client_id = binary_header = declared = authorization = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value
            elif key == b"authorization":
                authorization = value
            elif key == REQUEST_ID_HEADER:
                client_id = value
            elif key == BINARY_HEADER:
                binary_header = value
        request_id = self.ids.accept_or_new(client_id)
        REQUEST_ID.set(request_id)
        scope[SCOPE_KEY] = request_id
        if scope["method"] == "POST" and scope["path"].endswith("/infer"):
            match = INFER_PATH.match(scope["path"])
            if match is not None:
                length = int(declared) if declared is not None and declared.isdigit() else None
                key = authorization.decode("latin-1") if authorization is not None else None
                head = InferHead(request_id, match[1], match[2], binary_header, length, key, receive)
                await self.infer(head, send)
                return
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        await self.app(scope, receive, send_with_id)
