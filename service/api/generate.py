"""Triton's generate extension for the text models: POST .../generate and .../generate_stream (SSE).

Both endpoints run the same token loop (`service.runtime.generation`). Each model step runs in a worker
thread so a long generation never holds the event loop; the non-streamed answer runs its whole loop in
one worker call. A stream checks for a disconnected client between tokens, and Starlette cancels the
response when the client leaves; either way the loop is closed and no further step is computed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from service.api import schemas
from service.api.generate_request import parse_generate_request
from service.api.state import AppState
from service.api.v2_codec import parse_json
from service.errors import InternalError, OverloadedError, RecapError, UnsupportedError
from service.runtime.generation import FinishEvent, Generation, TextModel, TokenEvent
from service.runtime.repository import LoadedModel

log = logging.getLogger(__name__)
TEXT_TASKS = ("language_model", "seq2seq")


class ModelRunner:
    """Adapts `LoadedModel.run` (metrics included) to the loop's onnxruntime-style `run`."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def run(self, output_names: list[str] | None, input_feed: dict[str, Any]) -> list[Any]:
        names = output_names or self.model.require_session().output_names
        results = self.model.run(input_feed, names, checked=True)
        return [results[name] for name in names]


class TextModels:
    """One `TextModel` per loaded version, built on first use."""

    def __init__(self) -> None:
        self._cache: dict[LoadedModel, TextModel] = {}

    def get(self, model: LoadedModel) -> TextModel:
        text_model = self._cache.get(model)
        if text_model is not None:
            return text_model
        model.require_session()
        if model.task not in TEXT_TASKS:
            raise UnsupportedError(
                f"model {model.name!r} (task {model.task or 'unknown'}) does not generate text; "
                f"generate serves models whose task is {' or '.join(TEXT_TASKS)}"
            )
        try:
            text_model = TextModel.from_manifest(ModelRunner(model), model.manifest.raw)
        except ValueError as error:
            raise UnsupportedError(f"model {model.name!r} cannot generate: {error}") from error
        self._cache[model] = text_model
        return text_model


def _sse(document: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(document) + b"\n\n"


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
    """One open stream; `release` is idempotent (the stream body and the response both call it)."""

    def __init__(self, slots: StreamSlots) -> None:
        self._slots: StreamSlots | None = slots

    def release(self) -> None:
        if self._slots is not None:
            self._slots.open -= 1
            self._slots = None


class EventStream(StreamingResponse):
    """A StreamingResponse that always closes its body and frees its slot, even if it never started
    (client gone before the first byte) or the server's send failed (ASGI 2.4 disconnects)."""

    def __init__(self, content: AsyncGenerator[bytes, None], slot: Slot) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._body = content
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._body.aclose()
            self._slot.release()


def build_router(state: AppState) -> APIRouter:
    router = APIRouter(tags=["generate"])
    repository, settings, metrics = state.repository, state.settings, state.metrics
    models = TextModels()
    slots = StreamSlots(settings.generate_max_streams)
    state.extensions.append("generate")

    async def prepare(request: Request, model: LoadedModel) -> Generation:
        body = await request.body()
        parsed = parse_generate_request(parse_json(body), settings)
        text_model = models.get(model)
        return text_model.prepare(
            parsed.text_input, parsed.params, max_prompt_length=settings.generate_max_prompt_length
        )

    def lookup(name: str, version: str | None) -> LoadedModel:
        """The model, or its 404 counted against the unknown model (labels stay bounded)."""
        try:
            return repository.get(name, version)
        except RecapError as error:
            metrics.unknown.failure("generate", error.code)
            metrics.unknown.protocols["generate"].requests.inc()
            raise

    async def generate(request: Request, model_name: str, model_version: str | None) -> Response:
        start = time.perf_counter()
        model = lookup(model_name, model_version)
        model_metrics = model.metrics
        children = model_metrics.protocols["generate"]
        try:
            generation = await prepare(request, model)
            result = await anyio.to_thread.run_sync(generation.run)
        except RecapError as error:
            model_metrics.failure("generate", error.code)
            raise
        except Exception as error:
            log.exception("unexpected error in generate for %s", model.name)
            model_metrics.failure("generate", InternalError.code)
            raise InternalError("internal server error") from error
        finally:
            children.requests.inc()
            children.duration.observe(time.perf_counter() - start)
        metrics.generated_tokens.labels(model.name, model.version_str).inc(result.tokens)
        document = {
            "model_name": model.name,
            "model_version": model.version_str,
            "text_output": result.text,
            "finish_reason": result.finish_reason,
            "tokens": result.tokens,
        }
        return Response(orjson.dumps(document), media_type="application/json")

    async def events(
        request: Request, model: LoadedModel, generation: Generation, slot: Slot, start: float
    ) -> AsyncGenerator[bytes, None]:
        head = {"model_name": model.name, "model_version": model.version_str}
        tokens = metrics.generated_tokens.labels(model.name, model.version_str)
        active = metrics.active_streams.labels(model.name)
        children = model.metrics.protocols["generate"]
        steps = generation.steps()
        finished = False
        active.inc()
        try:
            while not await request.is_disconnected():
                event = await anyio.to_thread.run_sync(next, steps, None)
                if isinstance(event, TokenEvent):
                    tokens.inc()
                    yield _sse({**head, "text_output": event.text})
                    continue
                finished = True
                if isinstance(event, FinishEvent):
                    if event.reason == "eos":
                        tokens.inc()  # the step that chose eos
                    yield _sse(
                        {
                            **head,
                            "text_output": event.text,
                            "finish_reason": event.reason,
                            "tokens": event.tokens,
                        }
                    )
                break
        except Exception:
            finished = True
            log.exception("unexpected error in generate_stream for %s", model.name)
            model.metrics.failure("generate", InternalError.code)
            yield _sse({"error": "internal server error"})
        finally:
            steps.close()
            slot.release()
            active.dec()
            if not finished:
                metrics.streams_cancelled.labels(model.name).inc()
                log.info("client left a generate_stream of %s; generation stopped", model.name)
            children.requests.inc()
            children.duration.observe(time.perf_counter() - start)

    async def generate_stream(request: Request, model_name: str, model_version: str | None) -> Response:
        start = time.perf_counter()
        model = lookup(model_name, model_version)
        model_metrics = model.metrics
        try:
            generation = await prepare(request, model)
            slot = slots.acquire()
        except RecapError as error:
            model_metrics.failure("generate", error.code)
            model_metrics.protocols["generate"].requests.inc()
            raise
        return EventStream(events(request, model, generation, slot, start), slot)

    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": schemas.ErrorBody} for code in (400, 404, 413, 429, 503)
    }
    docs: dict[str, Any] = {
        "openapi_extra": schemas.request_body(schemas.GenerateRequest),
        "responses": {200: {"model": schemas.GenerateResponse}, **errors},
    }

    @router.post("/v2/models/{model_name}/generate", summary="Generate text", **docs)
    async def generate_default(request: Request, model_name: str) -> Response:
        return await generate(request, model_name, None)

    @router.post(
        "/v2/models/{model_name}/versions/{model_version}/generate",
        summary="Generate text (one version)",
        **docs,
    )
    async def generate_version(request: Request, model_name: str, model_version: str) -> Response:
        return await generate(request, model_name, model_version)

    @router.post(
        "/v2/models/{model_name}/generate_stream", summary="Generate text as server-sent events", **docs
    )
    async def stream_default(request: Request, model_name: str) -> Response:
        return await generate_stream(request, model_name, None)

    @router.post(
        "/v2/models/{model_name}/versions/{model_version}/generate_stream",
        summary="Generate text as server-sent events (one version)",
        **docs,
    )
    async def stream_version(request: Request, model_name: str, model_version: str) -> Response:
        return await generate_stream(request, model_name, model_version)

    return router
