"""The front door: the outermost ASGI app. Every HTTP request gets its id here, then goes on.

The id is the client's `x-request-id` when it sends a usable one (1 to 128 visible ASCII characters),
otherwise a new one: a random per-process prefix and a counter, which costs about 0.2 us where a
uuid4 costs 2 us. It is set in the logging context (`service.logs.REQUEST_ID`), kept in the scope for
the request pipeline, and sent back in the `x-request-id` response header.

V2 infer (`POST /v2/models/{m}[/versions/{v}]/infer`) is answered without FastAPI's routing, which
costs more than parsing, running and encoding a one-row request together (`service.api.infer`): from
the HTTP protocol's callbacks where the body's length is declared (`service.http_protocol`), otherwise
(a chunked body, another HTTP server) from here. Both read the request's head with `infer_head`.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Iterable
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
    receive: Receive | None  # the body comes from here (None: the HTTP protocol hands it over)


class InferEndpoint(Protocol):
    """What the front door needs of the V2 infer handler (service.api.infer.InferHandler)."""

    async def __call__(self, head: InferHead, send: Send) -> None: ...


class InferFields(NamedTuple):
    """The headers a V2 infer request is answered by, as sent (None: absent)."""

    client_id: bytes | None
    binary_header: bytes | None
    content_length: bytes | None
    authorization: bytes | None
    transfer_encoding: bytes | None


def scan_headers(headers: Iterable[tuple[bytes, bytes]]) -> InferFields:
    """One pass over the (lower-case) headers for the few the front door and V2 infer read."""
    client_id = binary_header = declared = authorization = transfer_encoding = None
    for key, value in headers:
        if key == b"content-length":
            declared = value
        elif key == b"authorization":
            authorization = value
        elif key == REQUEST_ID_HEADER:
            client_id = value
        elif key == BINARY_HEADER:
            binary_header = value
        elif key == b"transfer-encoding":
            transfer_encoding = value
    return InferFields(client_id, binary_header, declared, authorization, transfer_encoding)


def infer_head(path: str, fields: InferFields, receive: Receive | None) -> InferHead | None:
    """The head of a V2 infer request to `path`, with its id (also set in the logging context: the
    caller sets it back where that context outlives the request); None where `path` is no V2 infer
    route."""
    match = INFER_PATH.match(path)
    if match is None:
        return None
    request_id = REQUEST_IDS.accept_or_new(fields.client_id)
    REQUEST_ID.set(request_id)
    declared = fields.content_length
    length = int(declared) if declared is not None and declared.isdigit() else None
    authorization = fields.authorization
    key = authorization.decode("latin-1") if authorization is not None else None
    return InferHead(request_id, match[1], match[2], fields.binary_header, length, key, receive)


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


REQUEST_IDS = RequestIds()  # one counter per process, for both ways in


class FrontDoor:
    """Give the request its id; answer V2 infer directly; pass everything else on with the id header."""

    def __init__(self, app: ASGIApp, infer: InferEndpoint) -> None:
        self.app = app
        self.infer = infer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fields = scan_headers(scope["headers"])
        if scope["method"] == "POST" and scope["path"].endswith("/infer"):
            head = infer_head(scope["path"], fields, receive)
            if head is not None:
                scope[SCOPE_KEY] = head.request_id
                await self.infer(head, send)
                return
        request_id = REQUEST_IDS.accept_or_new(fields.client_id)
        REQUEST_ID.set(request_id)
        scope[SCOPE_KEY] = request_id
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        await self.app(scope, receive, send_with_id)
