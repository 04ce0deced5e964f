"""Triton's generate extension for the text models: POST .../generate and .../generate_stream (SSE).

Both endpoints run the same token loop (`service.runtime.generation`) of the text model the repository
built at load. Each model step runs in a worker thread so a long generation never holds the event loop;
the non-streamed answer runs its whole loop in one worker call, which the pipeline stops at the
deadline (504) or when the client disconnects. A stream checks for a disconnected client and for its
deadline between tokens (past it, a last event with finish_reason "timeout"; "shutdown" when the
server's drain timeout is over), and Starlette cancels
the response when the client leaves; either way the loop is closed and no further step is computed. A
stream is counted by the pipeline when it ends. The `timeout` parameter (microseconds) shortens the
deadline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncGenerator
from typing import Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from service.api import schemas
from service.api.generate_request import parse_generate_request
from service.api.pipeline import Call, Endpoint, Failure
from service.api.rest import json_response, parse_json, serve
from service.api.state import AppState
from service.errors import OverloadedError, UnsupportedError
from service.runtime.generation import TEXT_TASKS, FinishEvent, Generation, TextModel, TokenEvent
from service.runtime.model import LoadedModel

log = logging.getLogger(__name__)
GENERATE = Endpoint("generate", "generate")
GENERATE_STREAM = Endpoint("generate", "generate_stream")


def _sse(document: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(document) + b"\n\n"


def _sse_failure(failure: Failure) -> bytes:
    """A failure after the stream started: the status is gone, so the last event says it."""
    return _sse({"error": failure.message})


def text_model(model: LoadedModel) -> TextModel:
    """The model's text model, or a 400 saying which models generate."""
    if model.text is None:
        raise UnsupportedError(
            f"model {model.name!r} (task {model.task or 'unknown'}) does not generate text; "
            f"generate serves models whose task is {' or '.join(TEXT_TASKS)}"
        )
    return model.text


class StreamSlots:
    """Counts open streams against the `generate_max_streams` cap (event-loop only, so no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def acquire(self) -> Slot:
        if self.open >= self.limit:
            raise OverloadedError(
                f"this server already runs {self.limit} generation streams (its limit); retry later"
            )
        self.open += 1
        return Slot(self)


class Slot:
    """One open stream; `release` is idempotent."""

    def __init__(self, slots: StreamSlots) -> None:
        self._slots: StreamSlots | None = slots

    def release(self) -> None:
        if self._slots is not None:
            self._slots.open -= 1
            self._slots = None


class EventStream(StreamingResponse):
    """A StreamingResponse that always closes its body, frees its slot and finishes its call, even if
    it never started (client gone before the first byte) or the server's send failed."""

    def __init__(self, content: AsyncGenerator[bytes, None], slot: Slot, call: Call) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._body = content
        self._slot = slot
        self._call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._body.aclose()
            self._slot.release()
            self._call.finish()


def build_router(state: AppState) -> APIRouter:
    router = APIRouter(tags=["generate"])
    settings, pipeline = state.settings, state.pipeline
    slots = StreamSlots(settings.generate_max_streams)
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
        stop = threading.Event()  # set at the deadline or when the client leaves: the loop ends
        result = await call.in_thread(generation.run, stop, stop=stop.set, receive=receive)
        model.metrics.generated_tokens.inc(result.tokens)
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
        metrics = model.metrics
        tokens, active = metrics.generated_tokens, metrics.active_streams
        steps = generation.steps()
        finished = False
        made = 0
        active.inc()
        try:
            while not await request.is_disconnected():
                ending = call.ending()  # past the deadline, or the drain's timeout is over
                if ending is not None:  # the headers are out: no 504 now, the last event says it
                    finished = True
                    yield _sse(head | {"text_output": "", "finish_reason": ending, "tokens": made})
                    break
                event = await anyio.to_thread.run_sync(next, steps, None)
                if isinstance(event, TokenEvent):
                    tokens.inc()
                    made += 1
                    yield _sse({**head, "text_output": event.text})
                    continue
                finished = True
                if isinstance(event, FinishEvent):
                    if event.reason == "eos":
                        tokens.inc()  # the step that chose eos
                    final = {"text_output": event.text, "finish_reason": event.reason, "tokens": event.tokens}
                    yield _sse(head | final)
                break
        except Exception:
            finished = True  # failed, not cancelled: the pipeline counts it (Call.guarded)
            raise
        finally:
            steps.close()
            active.dec()
            if not finished:
                metrics.streams_cancelled.inc()
                log.info("client left a generate_stream of %s; generation stopped", model.name)

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
