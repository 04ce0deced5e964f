"""REST plumbing every router shares: JSON in and out, and a FastAPI route run through the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.api.errors import error_response
from service.api.front import request_id_of
from service.api.pipeline import Body, BodyWork, Endpoint, Failure, NameOf, Pipeline, ServerWork, Work
from service.errors import InvalidInputError

A = TypeVar("A")
B = TypeVar("B")
# How a protocol says the pipeline's failure (its status, the domain error): REST's `{"error": ...}`
# by default; the OpenAI adapter passes its own error object.
FailureEncoder = Callable[[Failure], Response]


def parse_json(body: Body) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        hint = ""
        if b"NaN" in body or b"Infinity" in body:
            hint = " (NaN and Infinity are not JSON numbers; the model takes finite numbers)"
        raise InvalidInputError(f"request body is not valid JSON: {error}{hint}") from error


def parse_object(body: Body) -> dict[str, Any]:
    """A JSON body that must be an object."""
    document = parse_json(body)
    if type(document) is not dict:
        raise InvalidInputError("request body must be a JSON object")
    return document


def json_response(document: object, status: int = 200) -> Response:
    return Response(
        orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


def failure_response(failure: Failure) -> Response:
    return error_response(failure.status, failure.message, failure.error)


def content_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    return int(declared) if declared is not None and declared.isdigit() else None


async def serve(
    pipeline: Pipeline,
    request: Request,
    endpoint: Endpoint,
    work: Work[A, Response],
    argument: A,
    *,
    say: FailureEncoder = failure_response,
) -> Response:
    """Run a FastAPI route's work through the pipeline; a failure becomes `say(failure)`.

    The model comes from the route's path parameters `model_name` and `model_version`.
    """
    params = request.path_params
    result = await pipeline.run(
        endpoint,
        work,
        argument,
        request_id=request_id_of(request.scope),
        model_name=params["model_name"],
        model_version=params.get("model_version"),
        content_length=content_length(request),
        authorization=request.headers.get("authorization"),
    )
    return say(result) if isinstance(result, Failure) else result


async def serve_named(
    pipeline: Pipeline,
    request: Request,
    endpoint: Endpoint,
    work: BodyWork[A, B, Response],
    argument: A,
    *,
    name_of: NameOf[B],
    say: FailureEncoder = failure_response,
) -> Response:
    """A FastAPI route whose body names the model (`Pipeline.run_named`); a failure becomes `say(failure)`."""
    result = await pipeline.run_named(
        endpoint,
        name_of,
        work,
        argument,
        receive=request.receive,
        request_id=request_id_of(request.scope),
        content_length=content_length(request),
        authorization=request.headers.get("authorization"),
    )
    return say(result) if isinstance(result, Failure) else result


async def serve_server(
    pipeline: Pipeline,
    request: Request,
    endpoint: Endpoint,
    work: ServerWork[A, Response],
    argument: A,
    *,
    say: FailureEncoder = failure_response,
) -> Response:
    """A server-level FastAPI route (no model) through the pipeline's authentication and error mapping."""
    result = await pipeline.run_server(
        endpoint,
        work,
        argument,
        request_id=request_id_of(request.scope),
        authorization=request.headers.get("authorization"),
    )
    return say(result) if isinstance(result, Failure) else result
