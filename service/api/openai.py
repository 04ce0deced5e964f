"""OpenAI's completions API for the text models, under /openai/v1 (KServe's prefix; vLLM and TGI speak it
too), so the official `openai` client and the tools built on it work unchanged.

- POST /openai/v1/completions: the body names the model, so the route takes `Pipeline.run_named`
  (authentication, admission and the body limit first, then the lookup of the model the body names);
  `service.api.openai_request` checks the body with the generate extension's and the runtime's rules,
  and every choice (prompts x n) runs as a generation of its own, all at once: they batch in the
  model's decode loop. A stream merges the choices' events as they come, each chunk naming its choice.
- GET /openai/v1/models[/{model}]: the ready text models, as OpenAI's model list and model object.
- POST /openai/v1/chat/completions: a 400 saying these models have no chat template.

Every failure is the pipeline's (status and metric reason, protocol="openai") and is written as OpenAI's
error object (`service.api.openai_encode`), under /openai/ for the framework's own errors too (no route,
a method not allowed). API keys are the pipeline's Bearer keys, which the client sends as its api_key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, TypeVar

import anyio
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.openai_encode import (
    DONE,
    Head,
    choice,
    failure_response,
    model_card,
    sse_failure,
    usage,
)
from service.api.openai_request import (
    Prepared,
    field,
    model_of,
    parse_completion_request,
    prepare,
)
from service.api.pipeline import Call, Endpoint
from service.api.rest import json_response, serve, serve_named, serve_server
from service.api.state import AppState
from service.api.text_streams import EventStream, run_to_end, text_model, token_events
from service.errors import ModelNotFoundError, UnsupportedError
from service.runtime.generation import TEXT_TASKS, TokenEvent
from service.runtime.model import LoadedModel
from service.runtime.repository import Repository

PREFIX = "/openai/"
COMPLETIONS = Endpoint("openai", "completions")
MODEL = Endpoint("openai", "model", needs_session=False)
MODELS = Endpoint("openai", "models")
CHAT = Endpoint("openai", "chat_completions")
E = TypeVar("E")
_END: Any = object()  # what a source's anext gives once it is exhausted
CLOSE_GRACE_S = 10.0  # how long a closing merge waits for a source's step under way


def text_models(repository: Repository) -> list[LoadedModel]:
    """The default version of every model that generates text and is ready."""
    defaults = (repository.default(name) for name in repository.names())
    return [model for model in defaults if model is not None and model.text is not None]


def _created(model: LoadedModel) -> int:
    """When the version was published (its folder's mtime): OpenAI's `created`."""
    try:
        return int(model.path.stat().st_mtime)
    except OSError:
        return 0


async def merge(sources: list[AsyncGenerator[E, None]]) -> AsyncGenerator[tuple[int, E], None]:
    """The items of several async generators as they come, each with its source's index. However the
    merge ends (exhausted, a source failed, the client left), every source is stopped and closed."""

    async def step(source: AsyncGenerator[E, None]) -> E:
        return await anext(source, _END)  # made inside the task: nothing is left unawaited

    pending = {asyncio.ensure_future(step(source)): index for index, source in enumerate(sources)}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in sorted(done, key=pending.__getitem__):  # ready together: in choice order
                index = pending.pop(future)
                item = future.result()
                if item is _END:
                    continue
                yield index, item
                pending[asyncio.ensure_future(step(sources[index]))] = index
    finally:
        # Shielded: a stream cancelled when its client left is cancelled again at every await. A source
        # still running ends its step first (one token): cancelling a step that a worker thread runs
        # would leave its generator executing and its own cleanup undone. Then every source is closed.
        with anyio.CancelScope(shield=True):
            if pending:
                _, late = await asyncio.wait(pending, timeout=CLOSE_GRACE_S)
                for future in late:  # a source stuck past any step's time: cancelled after all
                    future.cancel()
                if late:
                    await asyncio.wait(late)
            for future in pending:  # what the merge no longer waits for is nobody's, its error too
                if not future.cancelled():
                    future.exception()
            for source in sources:
                await source.aclose()


def build_router(state: AppState) -> APIRouter:
    router = APIRouter(prefix="/openai/v1", tags=["openai"])
    settings, pipeline, repository = state.settings, state.pipeline, state.repository
    slots = state.stream_slots

    async def completions_work(
        call: Call, model: LoadedModel, request: Request, document: dict[str, Any]
    ) -> Response:
        with field("model"):
            text = text_model(model)
        parsed = parse_completion_request(document, settings)
        prepared = prepare(text, parsed, settings)
        head = Head(call.request_id, int(time.time()), model.name)
        if parsed.stream:
            slot = slots.acquire()
            call.defer()
            chunks = stream(request, call, model, prepared, head, include_usage=parsed.include_usage)
            return EventStream(call.guarded(chunks, sse_failure), slot, call)
        # Every choice at once; a deadline or a client that leaves ends them all together.
        runs = (run_to_end(call, model, generation, request.receive) for generation in prepared.generations)
        results = await asyncio.gather(*runs)
        choices = [choice(index, r.text, r.finish_reason) for index, r in enumerate(results)]
        counted = usage(prepared.prompt_tokens, sum(r.tokens for r in results))
        return json_response(head.completion(choices, counted))

    async def stream(
        request: Request,
        call: Call,
        model: LoadedModel,
        prepared: Prepared,
        head: Head,
        *,
        include_usage: bool,
    ) -> AsyncGenerator[bytes, None]:
        sources = [token_events(request, call, model, generation) for generation in prepared.generations]
        completion_tokens = 0
        async with aclosing(merge(sources)) as events:  # closing the stream stops every choice at once
            async for index, event in events:
                if isinstance(event, TokenEvent):
                    if event.text:  # text held back for a stop string comes later, or never
                        yield head.chunk([choice(index, event.text, None)], include_usage)
                    continue
                completion_tokens += event.tokens
                yield head.chunk([choice(index, event.text, event.reason)], include_usage)
        if include_usage:
            yield head.usage_chunk(usage(prepared.prompt_tokens, completion_tokens))
        yield DONE

    async def models_work(call: Call, argument: None) -> Response:
        cards = [model_card(model, _created(model)) for model in text_models(repository)]
        return json_response({"object": "list", "data": cards})

    async def model_work(call: Call, model: LoadedModel, argument: None) -> Response:
        if model.task not in TEXT_TASKS:
            raise ModelNotFoundError(
                f"model {model.name!r} (task {model.task or 'unknown'}) is not a text model; "
                "GET /openai/v1/models lists those this API serves"
            )
        model.require_session()  # a text model that is not ready: 503 with the reason
        return json_response(model_card(model, _created(model)))

    async def chat_work(call: Call, argument: None) -> Response:
        names = ", ".join(model.name for model in text_models(repository)) or "none"
        raise UnsupportedError(
            f"chat completions are not served: the text models ({names}) have no chat template; "
            "send a prompt to POST /openai/v1/completions"
        )

    @router.post("/completions", summary="OpenAI completions (text models)")
    async def completions(request: Request) -> Response:
        return await serve_named(
            pipeline, request, COMPLETIONS, completions_work, request, name_of=model_of, say=failure_response
        )

    @router.get("/models", summary="OpenAI model list: the ready text models")
    async def models(request: Request) -> Response:
        return await serve_server(pipeline, request, MODELS, models_work, None, say=failure_response)

    @router.get("/models/{model_name}", summary="OpenAI model object of a text model")
    async def model(request: Request, model_name: str) -> Response:
        return await serve(pipeline, request, MODEL, model_work, None, say=failure_response)

    @router.post("/chat/completions", summary="OpenAI chat completions: not served (no chat template)")
    async def chat_completions(request: Request) -> Response:
        return await serve_server(pipeline, request, CHAT, chat_work, None, say=failure_response)

    return router
