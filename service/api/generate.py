"""Triton's generate extension for the text models: POST .../generate and .../generate_stream (SSE).

This adapter decodes the generate body and encodes the answer; running the generation (decode loop or
full-recompute loop), its deadline, disconnects, stream slots and metrics are `service.api.text_streams`,
shared with the OpenAI adapter. The `timeout` parameter (microseconds) shortens the deadline.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive

from service.api import schemas
from service.api.generate_request import parse_generate_request
from service.api.pipeline import Call, Endpoint, Failure
from service.api.rest import json_response, parse_json, serve
from service.api.state import AppState
from service.api.text_streams import EventStream, run_to_end, text_model, token_events
from service.runtime.generation import Generation, TokenEvent
from service.runtime.model import LoadedModel

GENERATE = Endpoint("generate", "generate")
GENERATE_STREAM = Endpoint("generate", "generate_stream")


def _sse(document: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(document) + b"\n\n"


def _sse_failure(failure: Failure) -> bytes:
    """A failure after the stream started: the status is gone, so the last event says it."""
    return _sse({"error": failure.message})


def build_router(state: AppState) -> APIRouter:
    router = APIRouter(tags=["generate"])
    settings, pipeline = state.settings, state.pipeline
    slots = state.stream_slots
    state.extensions.append("generate")

    async def prepare(call: Call, model: LoadedModel, receive: Receive) -> Generation:
        generator = text_model(model)
        parsed = parse_generate_request(parse_json(await call.read_body(receive)), settings)
        if parsed.timeout_us is not None:
            call.shorten_deadline(parsed.timeout_us)
        return generator.prepare(
            parsed.text_input, parsed.params, max_prompt_length=settings.generate_max_prompt_length
        )

    async def generate_work(call: Call, model: LoadedModel, receive: Receive) -> Response:
        generation = await prepare(call, model, receive)
        result = await run_to_end(call, model, generation, receive)
        return json_response(
            {
                "model_name": model.name,
                "model_version": model.version_str,
                "text_output": result.text,
                "finish_reason": result.finish_reason,
                "tokens": result.tokens,
            }
        )

    async def events(
        request: Request, call: Call, model: LoadedModel, generation: Generation
    ) -> AsyncGenerator[bytes, None]:
        head = {"model_name": model.name, "model_version": model.version_str}
        async for event in token_events(request, call, model, generation):
            if isinstance(event, TokenEvent):
                yield _sse({**head, "text_output": event.text})
            else:
                final = {"text_output": event.text, "finish_reason": event.reason, "tokens": event.tokens}
                yield _sse(head | final)

    async def stream_work(call: Call, model: LoadedModel, request: Request) -> Response:
        generation = await prepare(call, model, request.receive)
        slot = slots.acquire()
        call.defer()
        body = call.guarded(events(request, call, model, generation), _sse_failure)
        return EventStream(body, slot, call)

    docs: dict[str, Any] = {
        "openapi_extra": schemas.request_body(schemas.GenerateRequest),
        "responses": {
            200: {"model": schemas.GenerateResponse},
            **{code: {"model": schemas.ErrorBody} for code in (400, 404, 408, 413, 429, 503, 504)},
        },
    }

    @router.post("/v2/models/{model_name}/generate", summary="Generate text", **docs)
    @router.post(
        "/v2/models/{model_name}/versions/{model_version}/generate",
        summary="Generate text (one version)",
        **docs,
    )
    async def generate(request: Request, model_name: str, model_version: str | None = None) -> Response:
        return await serve(pipeline, request, GENERATE, generate_work, request.receive)

    @router.post(
        "/v2/models/{model_name}/generate_stream", summary="Generate text as server-sent events", **docs
    )
    @router.post(
        "/v2/models/{model_name}/versions/{model_version}/generate_stream",
        summary="Generate text as server-sent events (one version)",
        **docs,
    )
    async def generate_stream(
        request: Request, model_name: str, model_version: str | None = None
    ) -> Response:
        return await serve(pipeline, request, GENERATE_STREAM, stream_work, request)

    return router
