"""Continuous batching: one decode loop per text model with KV-cache graphs runs the next step of every
running stream in a single decoder run. Streams join and leave between steps.

The loop is a thread (onnxruntime releases the GIL, so the event loop stays free), started by the
first stream and ended after a second with none. Each step hands all its events to the event loop in
one `call_soon_threadsafe`, not one per token per stream. Sampling stays per stream: each has its own
seeded generator and stop strings, so a seeded stream gives the same text alone or beside others.

A stream that is cancelled (its client left, its deadline passed) is dropped before the next step; the
others carry on. If a step fails, every stream in it ends with that error and the loop goes on.

Window policy (decoder-only models, README "Generation"): the prompt is cropped to its last `window`
tokens, as the full-recompute loop does. When a stream's cache fills the window, the stream is
prefilled again from its last `window // 2` tokens and continues from that cache, so a step never
costs a whole window. Inside the window the text equals the full-recompute loop token for token; past
it, the recompute loop sees the last `window` tokens at every step and this loop sees between
`window // 2` and `window`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from service.runtime.generation import FinishEvent, Generation, GenerationResult, StopBuffer, TokenEvent
from service.runtime.kv_cache import CacheBatch, CacheGraphs, Memory
from service.runtime.sampling import sample_next

if TYPE_CHECKING:
    from service.runtime.model import LoadedModel

log = logging.getLogger(__name__)
Event = TokenEvent | FinishEvent
T = TypeVar("T")
IDLE_SECONDS = 1.0  # the thread ends after this long with no stream; the next stream starts another


class StreamCancelledError(Exception):
    """Raised to a stream's consumer still waiting after it cancelled the stream."""


class DecodeStream:
    """One generation in a decode loop, as its consumer on the event loop sees it."""

    def __init__(
        self, generation: Generation, loop: asyncio.AbstractEventLoop, *, whole: bool = False
    ) -> None:
        self.loop = loop
        # A consumer that wants only the whole text is handed its events once, when it finishes: no
        # event-loop wake-up per token for nobody.
        self.whole = whole
        self.held: list[Event] = []
        self.events: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self.cancelled = False  # set on the event loop, read by the decode thread (a plain flag)
        self.state = StreamState(generation)  # the decode thread's alone

    def cancel(self) -> None:
        """Stop generating for this stream; the loop drops it before its next step. On the event loop:
        whoever still waits for an event gets StreamCancelledError."""
        if not self.cancelled:
            self.cancelled = True
            self.events.put_nowait(StreamCancelledError("the generation was cancelled"))

    async def next(self) -> Event:
        item = await self.events.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def result(self) -> GenerationResult:
        """The whole generation, once it finished."""
        parts = []
        while True:
            event = await self.next()
            parts.append(event.text)
            if isinstance(event, FinishEvent):
                return GenerationResult("".join(parts), event.reason, event.tokens)


class StreamState:
    """A stream's tokens, sampler and stop strings; what its cache holds (`cached` tokens) and the
    token its next step feeds (`tokens[-1]`, not yet cached)."""

    def __init__(self, generation: Generation) -> None:
        model, params = generation.model, generation.params
        self.model, self.params = model, params
        self.rng = params.sampling.make_rng()
        self.stops = StopBuffer(params.stop)
        bos = model.tokenizer.bos_id
        if model.kind == "seq2seq":
            self.source: list[int] | None = generation.prompt_ids
            self.tokens = [bos] if bos is not None else []
            self.limit: int | None = model.decoder_limit
        else:
            self.source, self.tokens, self.limit = None, list(generation.prompt_ids), None
        self.cached = 0
        self.generated = 0
        self.submitted = time.perf_counter()
        self.last_token: float | None = None

    def advance(self, logits: np.ndarray) -> tuple[list[Event], bool]:
        """Take the step's logits: the events it makes and whether the stream is finished (the same
        rules as `Generation.steps`, the full-recompute loop)."""
        token = sample_next(logits, self.params.sampling, self.rng)
        self.generated += 1
        self.cached += 1
        tokenizer = self.model.tokenizer
        if token == tokenizer.eos_id:
            return [FinishEvent("eos", self.stops.flush(), self.generated)], True
        self.tokens.append(token)
        released, hit = self.stops.push(tokenizer.token_text(token))
        events: list[Event] = [TokenEvent(token_id=token, text=released)]
        if hit:
            events.append(FinishEvent("stop", self.stops.flush(), self.generated))
        elif self.generated >= self.params.max_tokens or (self.limit and len(self.tokens) >= self.limit):
            events.append(FinishEvent("length", self.stops.flush(), self.generated))
        else:
            return events, False
        return events, True


class DecodeLoop:
    """The decode loop of one loaded text model."""

    def __init__(self, model: LoadedModel, graphs: CacheGraphs, batch_limit: int) -> None:
        assert model.text is not None
        self.model = model
        self.text = model.text
        self.graphs = graphs
        self.batch_limit = batch_limit
        self.window = model.text.max_sequence_length
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._joining: list[DecodeStream] = []
        self._thread: threading.Thread | None = None

    def submit(self, generation: Generation, *, whole: bool = False) -> DecodeStream:
        """Queue a prepared generation; it joins the batch at the next step. On the event loop. With
        `whole`, its events arrive together at the end (for `DecodeStream.result`)."""
        stream = DecodeStream(generation, asyncio.get_running_loop(), whole=whole)
        with self._lock:
            self._joining.append(stream)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"decode {self.model.name}", daemon=True
                )
                self._thread.start()
            else:
                self._wake.notify()
        return stream

    # -- the decode thread ---------------------------------------------------------------------------

    def _take(self, running: int) -> list[DecodeStream] | None:
        """Streams that may join now; waits while there is nothing to do; None: end the thread."""
        if running and not self._joining:  # the common step: nobody joins (a list's truth needs no lock)
            return []
        with self._lock:
            while not self._joining and not running:
                if not self._wake.wait(IDLE_SECONDS) and not self._joining:
                    self._thread = None
                    return None
            room = max(self.batch_limit - running, 0)
            joining, self._joining[:room] = self._joining[:room], []
            return joining

    def _run(self) -> None:
        active: list[DecodeStream] = []
        batch = CacheBatch(self.graphs)
        while (joining := self._take(len(active))) is not None:
            out: list[tuple[DecodeStream, list[Event | BaseException]]] = []
            try:
                active = self._admit(batch, active, joining, out)
                if active:
                    active = self._step(batch, active, out)
            except Exception as error:  # a failed step: every stream in it ends with the error
                log.exception("decode step of %s failed; its %d streams end", self.model.name, len(active))
                out += [(stream, [error]) for stream in active if not stream.cancelled]
                active, batch = [], CacheBatch(self.graphs)
            _deliver(out)

    def _admit(
        self,
        batch: CacheBatch,
        active: list[DecodeStream],
        joining: list[DecodeStream],
        out: list[tuple[DecodeStream, list[Event | BaseException]]],
    ) -> list[DecodeStream]:
        """Drop cancelled streams; prefill joining ones and those whose cache filled the window."""
        refill = [s for s in active if s.state.source is None and s.state.cached >= self.window]
        if not joining and not refill and not any(s.cancelled for s in active):
            return active  # the common step: nothing changes
        keep = [i for i, s in enumerate(active) if not s.cancelled and s not in refill]
        if len(keep) < len(active):
            batch.keep(keep)
            active = [active[i] for i in keep]
        for stream in [*refill, *joining]:
            if stream.cancelled:
                continue
            try:
                past, memory = self._prefill(stream.state)
            except Exception as error:  # this stream's prompt failed: only it ends
                log.exception("prefill for a stream of %s failed", self.model.name)
                out.append((stream, [error]))
                continue
            batch.append(past, memory)
            active.append(stream)
        return active

    def _prefill(self, state: StreamState) -> tuple[list[np.ndarray], Memory | None]:
        """The cache of every token but the last, which the next step feeds."""
        memory = None
        if state.source is not None:
            memory = Memory.of(self._timed(1, self.graphs.encode, state.source))
            context = state.tokens
        else:
            # A new stream: its last `window` tokens; a full cache: its last `window // 2`.
            keep = self.window if state.cached == 0 else self.window // 2
            context = state.tokens[-keep:]
        state.cached = len(context) - 1
        return self._timed(1, self.graphs.prefill, context[:-1], memory), memory

    def _step(
        self,
        batch: CacheBatch,
        active: list[DecodeStream],
        out: list[tuple[DecodeStream, list[Event | BaseException]]],
    ) -> list[DecodeStream]:
        """One decoder run for every active stream; returns those still running."""
        tokens = np.asarray([s.state.tokens[-1] for s in active], dtype=np.int64)
        logits = self._timed(len(active), batch.step, tokens)
        now = time.perf_counter()
        metrics = self.model.metrics
        metrics.decode_batch_size.observe(len(active))
        running = []
        for row, stream in enumerate(active):
            state = stream.state
            events, finished = state.advance(logits[row])
            if isinstance(events[0], TokenEvent):
                if state.last_token is None:
                    metrics.time_to_first_token.observe(now - state.submitted)
                else:
                    metrics.inter_token_latency.observe(now - state.last_token)
                state.last_token = now
            if not finished:
                running.append(row)
            if stream.whole:
                stream.held += events
                if finished:
                    out.append((stream, list(stream.held)))
            else:
                out.append((stream, list(events)))
        if len(running) < len(active):
            batch.keep(running)
        return [active[row] for row in running]

    def _timed(self, rows: int, work: Callable[..., T], *args: object) -> T:
        """Run one graph call, recorded like every inference (compute histogram, statistics)."""
        start = time.perf_counter_ns()
        result = work(*args)
        end = time.perf_counter_ns()
        self.model.metrics.inference_duration.observe((end - start) / 1e9)
        self.model.metrics.inference_rows.inc(rows)
        self.model.stats.record_run(rows, end - start, end)
        return result


def _deliver(out: list[tuple[DecodeStream, list[Event | BaseException]]]) -> None:
    """One hand-off per event loop for the whole step."""
    if not out:
        return
    loop = out[0][0].loop
    if all(stream.loop is loop for stream, _ in out):  # one server process, one event loop
        with contextlib.suppress(RuntimeError):  # that event loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_put, out)
        return
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[DecodeStream, list[Event | BaseException]]]]
    by_loop = defaultdict(list)
    for stream, events in out:
        by_loop[stream.loop].append((stream, events))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_put, items)
        except RuntimeError:  # that event loop is closed: nobody is waiting any more
            log.debug("decode events for a closed event loop dropped")


def _put(items: list[tuple[DecodeStream, list[Event | BaseException]]]) -> None:
    for stream, events in items:
        for event in events:
            stream.events.put_nowait(event)
