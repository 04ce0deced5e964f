"""The one table from domain error to HTTP status, and how REST says an error: `{"error": "..."}`.

The request pipeline (`service.api.pipeline`) maps every error of a model request through `status_of`.
The handlers below only catch what happens outside the pipeline, in the framework itself: no route,
a method not allowed, an error nobody anticipated. Nothing internal ever reaches the client. A protocol
with an error shape of its own (OpenAI's error object) encodes the pipeline's failures itself and
gives `install_handlers` its body encoder for the framework's errors under its path prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from service.errors import (
    DeadlineExceededError,
    ForbiddenError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    RecapError,
    RequestTimeoutError,
    RetryLaterError,
    UnauthenticatedError,
)

log = logging.getLogger(__name__)

# Subclasses inherit their base's status (UnsupportedError is a 400 as InvalidInputError); the rest,
# InternalError included, is a 500.
STATUS: dict[type[RecapError], int] = {
    InvalidInputError: 400,
    UnauthenticatedError: 401,
    ForbiddenError: 403,
    ModelNotFoundError: 404,
    RequestTimeoutError: 408,
    PayloadTooLargeError: 413,
    OverloadedError: 429,
    RetryLaterError: 503,
    ModelNotReadyError: 503,
    DeadlineExceededError: 504,
}
JSON_HEADERS = [(b"content-type", b"application/json")]
AUTHENTICATE = (b"www-authenticate", b'Bearer realm="recap-serve"')  # 401 names the scheme (RFC 6750)
CLOSE = (b"connection", b"close")


def status_of(error: RecapError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def error_headers(error: RecapError) -> list[tuple[bytes, bytes]]:
    """How REST says an error beyond its body: the scheme to authenticate with, when to retry, and a
    closed connection when the server refused a body it did not read."""
    headers = list(JSON_HEADERS)
    if isinstance(error, UnauthenticatedError):
        headers.append(AUTHENTICATE)
    if isinstance(error, RetryLaterError):
        headers.append((b"retry-after", b"%d" % error.retry_after_s))
    if error.closes_connection:
        headers.append(CLOSE)
    return headers


# A protocol's error body from the status and the message (OpenAI: `{"error": {"message", ...}}`).
ErrorBody = Callable[[int, str], bytes]


def error_response(
    status: int, message: str, error: RecapError | None = None, body: bytes | None = None
) -> Response:
    """REST's error answer: `body` (default `{"error": message}`) and the headers `error` calls for."""
    content = error_body(message) if body is None else body
    response = Response(content, status_code=status, media_type="application/json")
    if error is not None:
        for name, value in error_headers(error)[len(JSON_HEADERS) :]:
            response.headers[name.decode()] = value.decode()
    return response


class _Handlers:
    """The framework-level handlers; under a prefix of `bodies`, the error body is that protocol's."""

    def __init__(self, bodies: Mapping[str, ErrorBody]) -> None:
        self.bodies = tuple(bodies.items())

    def response(self, request: Request, status: int, message: str) -> Response:
        path = request.url.path
        for prefix, body in self.bodies:
            if path.startswith(prefix):
                return error_response(status, message, body=body(status, message))
        return error_response(status, message)

    async def http_error(self, request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        message = error.detail if isinstance(error.detail, str) else "request failed"
        if error.status_code == 404:
            message = f"no route {request.method} {request.url.path[:128]}"
        response = self.response(request, error.status_code, message)
        if error.headers:
            response.headers.update(error.headers)
        return response

    async def validation_error(self, request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        parts = []
        for item in error.errors()[:5]:
            where = ".".join(str(p) for p in item.get("loc", ()))
            parts.append(f"{where}: {item.get('msg', 'invalid')}")
        return self.response(request, 400, "invalid request: " + "; ".join(parts))

    async def unexpected(self, request: Request, error: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.url.path[:128], exc_info=error)
        return self.response(request, 500, "internal server error")


def install_handlers(app: FastAPI, bodies: Mapping[str, ErrorBody] | None = None) -> None:
    """The framework-level handlers; `bodies`: path prefix -> that protocol's error body."""
    handlers = _Handlers(bodies or {})
    app.add_exception_handler(HTTPException, handlers.http_error)
    app.add_exception_handler(RequestValidationError, handlers.validation_error)
    app.add_exception_handler(Exception, handlers.unexpected)
