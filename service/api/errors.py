"""The one table from domain error to HTTP status, and the handlers that answer `{"error": "..."}`.

Unknown exceptions are logged with their traceback and answered with an opaque 500; nothing internal
reaches the client.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from service.errors import (
    InternalError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    RecapError,
    UnsupportedError,
)

log = logging.getLogger(__name__)

STATUS: dict[type[RecapError], int] = {
    InvalidInputError: 400,
    UnsupportedError: 400,
    ModelNotFoundError: 404,
    PayloadTooLargeError: 413,
    OverloadedError: 429,
    ModelNotReadyError: 503,
    InternalError: 500,
}


def status_of(error: RecapError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type="application/json")


async def _recap_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RecapError)
    return error_response(status_of(error), error.message)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    message = error.detail if isinstance(error.detail, str) else "request failed"
    if error.status_code == 404:
        message = f"no route {request.method} {request.url.path[:128]}"
    response = error_response(error.status_code, message)
    if error.headers:
        response.headers.update(error.headers)
    return response


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return error_response(400, "invalid request: " + "; ".join(parts))


async def _unexpected(request: Request, error: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path[:128], exc_info=error)
    return error_response(500, "internal server error")


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RecapError, _recap_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
