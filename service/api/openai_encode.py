"""How the OpenAI adapter says things: completions, stream chunks, the model list and the error object.

Finish reasons: the official client types `finish_reason` as "stop" | "length" | "content_filter", so
the server's own reasons are mapped (FINISH_REASONS): the model's end token ("eos") and a stop string
are "stop", a natural end; max_tokens or a full decoder table, the deadline ("timeout") and the drain's
end ("shutdown") are "length": the text was cut short, which is what "length" tells a caller.

Errors: the pipeline decides the status; this module writes it as OpenAI's error object
`{"error": {"message", "type", "param", "code"}}`: `type` from the status (ERROR_TYPES), `code` the
domain error's reason (the metric label: model_not_found, invalid_input, unauthenticated, ...), `param`
the field at fault when the request parser knows it.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from service.api.errors import error_response
from service.api.pipeline import Failure
from service.runtime.generation import FinishReason
from service.runtime.model import LoadedModel

FINISH_REASONS: dict[FinishReason, str] = {
    "eos": "stop",
    "stop": "stop",
    "length": "length",
    "timeout": "length",
    "shutdown": "length",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
}
DONE = b"data: [DONE]\n\n"
OWNER = "recap-serve"


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_object(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def error_body(status: int, message: str) -> bytes:
    """A framework-level error (no route, a method not allowed) under /openai/."""
    return orjson.dumps(error_object(status, message))


def failure_object(failure: Failure) -> dict[str, Any]:
    param = getattr(failure.error, "param", None)  # FieldError's; other domain errors name no field
    return error_object(failure.status, failure.message, param, failure.error.code)


def failure_response(failure: Failure) -> Response:
    """The pipeline's failure with its status and REST's headers (WWW-Authenticate, Retry-After, close)."""
    body = orjson.dumps(failure_object(failure))
    return error_response(failure.status, failure.message, failure.error, body=body)


def sse(document: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(document) + b"\n\n"


def sse_failure(failure: Failure) -> bytes:
    """A failure after the stream started: the status is gone, so an error event says it (the official
    client raises it as an APIError), then the end of the stream."""
    return sse(failure_object(failure)) + DONE


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def choice(index: int, text: str, reason: FinishReason | None) -> dict[str, Any]:
    finish = FINISH_REASONS[reason] if reason is not None else None
    return {"text": text, "index": index, "finish_reason": finish, "logprobs": None}


class Head:
    """What every object of one completion repeats: its id, creation time and model."""

    def __init__(self, request_id: str, created: int, model: str) -> None:
        self.fields = {
            "id": f"cmpl-{request_id}",
            "object": "text_completion",
            "created": created,
            "model": model,
        }

    def completion(self, choices: list[dict[str, Any]], counted: dict[str, int]) -> dict[str, Any]:
        return {**self.fields, "choices": choices, "usage": counted}

    def chunk(self, choices: list[dict[str, Any]], include_usage: bool) -> bytes:
        """A stream chunk; with include_usage every chunk carries `usage`: null, the last its figures."""
        document = {**self.fields, "choices": choices}
        if include_usage:
            document["usage"] = None
        return sse(document)

    def usage_chunk(self, counted: dict[str, int]) -> bytes:
        return sse({**self.fields, "choices": [], "usage": counted})


def model_card(model: LoadedModel, created: int) -> dict[str, Any]:
    return {"id": model.name, "object": "model", "created": created, "owned_by": OWNER}
