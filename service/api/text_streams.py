"""What every text-generation protocol shares (Triton's generate extension, OpenAI completions): the
model's token source, a generation run to its end, a stream of events with its deadline, disconnect and
metrics, and the server-sent-events response with its stream slot. A protocol adapter only decodes the
request and encodes these events.

A model with KV-cache graphs joins its decode loop (`service.runtime.decode_loop`: every running stream's
next token in one decoder run, off the event loop); a model without them runs the full-recompute loop
(`service.runtime.generation`), one model step per worker-thread call, and a non-streamed answer its
whole loop in one worker call. The pipeline stops a non-streamed answer at the deadline (504) or when
the client disconnects. A stream checks for a disconnected client and for its deadline between tokens
(past it, a last event with finish_reason "timeout"; "shutdown" when the server's drain timeout is
over), and Starlette cancels the response when the client leaves; either way the stream is cancelled
and no further step is computed for it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncGenerator
from typing import Protocol

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from service.api.pipeline import Call
from service.errors import OverloadedError, UnsupportedError
from service.runtime.generation import (
    TEXT_TASKS,
    FinishEvent,
    Generation,
    GenerationResult,
    TextModel,
    TokenEvent,
)
from service.runtime.model import LoadedModel

log = logging.getLogger(__name__)


def text_model(model: LoadedModel) -> TextModel:
    """The model's text model, or a 400 saying which models generate."""
    if model.text is None:
        raise UnsupportedError(
            f"model {model.name!r} (task {model.task or 'unknown'}) does not generate text; "
            f"generate serves models whose task is {' or '.join(TEXT_TASKS)}"
        )
    return model.text


class TokenSource(Protocol):
    """A running generation's events, one at a time: a decode loop's stream, or the full-recompute loop."""

    async def next(self) -> TokenEvent | FinishEvent: ...

    def cancel(self) -> None: ...


class RecomputeSteps:
    """The full-recompute loop of a model without KV-cache graphs: one model step per worker-thread call."""

    def __init__(self, generation: Generation) -> None:
        self._steps = generation.steps()

    async def next(self) -> TokenEvent | FinishEvent:
        return await anyio.to_thread.run_sync(next, self._steps)

    def cancel(self) -> None:
        # A step still running in a worker thread cannot be closed under it (ValueError: generator
        # already executing); no further step is asked of it, and it is closed when collected.
        with contextlib.suppress(ValueError):
            self._steps.close()


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


def token_source(model: LoadedModel, generation: Generation) -> TokenSource:
    """The generation started: in the model's decode loop, or on the full-recompute loop."""
    return model.decoder.submit(generation) if model.decoder is not None else RecomputeSteps(generation)


async def run_to_end(
    call: Call, model: LoadedModel, generation: Generation, receive: Receive
) -> GenerationResult:
    """A whole generation, given up at the deadline, at the drain's end or when the client leaves."""
    if model.decoder is not None:
        stream = model.decoder.submit(generation, whole=True)
        result = await call.watch(stream.result(), stop=stream.cancel, receive=receive)
    else:
        stop = threading.Event()  # set at the deadline or when the client leaves: the loop ends
        result = await call.in_thread(generation.run, stop, stop=stop.set, receive=receive)
    model.metrics.generated_tokens.inc(result.tokens)
    return result


async def token_events(
    request: Request, call: Call, model: LoadedModel, generation: Generation
) -> AsyncGenerator[TokenEvent | FinishEvent, None]:
    """A generation's events as they come, ending with a FinishEvent, whose reason may also be
    "timeout" (past the deadline) or "shutdown" (the drain's timeout is over): the headers are out, so
    the last event says it. Stops when the client disconnects (counted as a cancelled stream)."""
    metrics = model.metrics
    tokens, active = metrics.generated_tokens, metrics.active_streams
    steps = token_source(model, generation)
    finished = False
    made = 0
    active.inc()
    try:
        # A client that leaves is Starlette's to notice (it listens for the disconnect beside the body,
        # or the send fails): the body is cancelled, and `finally` below cancels the generation. Asking
        # `request.is_disconnected()` at every token cost ~50 us of the event loop's time per token.
        while True:
            ending = call.ending()
            if ending is not None:
                finished = True
                yield FinishEvent(ending, "", made)
                break
            event = await steps.next()
            if isinstance(event, TokenEvent):
                tokens.inc()
                made += 1
                yield event
                continue
            finished = True
            if event.reason == "eos":
                tokens.inc()  # the step that chose eos
            yield event
            break
    except Exception:
        finished = True  # failed, not cancelled: the pipeline counts it (Call.guarded)
        raise
    finally:
        try:
            steps.cancel()
        finally:
            active.dec()
            if not finished:
                metrics.streams_cancelled.inc()
                log.info("client left a generation stream of %s; generation stopped", model.name)
