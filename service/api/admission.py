"""Admission control, a step of the request pipeline: how many requests, and how many body bytes, the
server takes on at once. Beyond a limit the request is refused at once (503 with Retry-After), never
queued: a queue without bound turns a burst into latency for everyone and memory for the server.

Three counters, all on the event loop (so no lock): requests in progress in the whole server
(`--max-concurrency`), per model version (model.json's `max_concurrency`, else
`--model-max-concurrency`), and bytes of request bodies being read or processed
(`--max-inflight-bytes`: a declared body is reserved before it is read, a chunked one as it arrives).
Probes and /metrics never pass here. The request's `Call` holds what it took (a slot, a model's slot,
reserved bytes) and gives it back once; the in-progress gauge reads the counter when it is scraped, so a
request costs no metric update here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from service.api.drain import Drain
from service.errors import InflightBytesError, ModelBusyError, ServerBusyError
from service.metrics import Metrics, multiprocess_dir
from service.runtime.model import LoadedModel


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_concurrency: int = 0  # 0: no limit
    max_inflight_bytes: int = 0  # 0: no limit
    request_timeout_s: float = 60.0


class Holder(Protocol):
    """What a request holds (service.api.pipeline.Call): reserved body bytes and a model's slot."""

    reserved: int
    held_model: LoadedModel | None


class Admission:
    def __init__(self, limits: Limits, metrics: Metrics, drain: Drain | None = None) -> None:
        self.drain = drain if drain is not None else Drain()  # work in progress ends when it has ended
        self.max_concurrency = limits.max_concurrency
        self.max_inflight_bytes = limits.max_inflight_bytes
        self.in_progress = 0
        self.inflight_bytes = 0
        self._gauge = metrics.requests_in_progress
        if multiprocess_dir() is None:
            self._gauge.set_function(lambda: self.in_progress)

    async def publish(self, every_s: float = 1.0) -> None:
        """With several workers a scrape reads files, not this process: write the count every second
        (the gauge sums the live workers)."""
        while True:
            self._gauge.set(self.in_progress)
            await asyncio.sleep(every_s)

    def admit(self, holder: Holder, content_length: int | None) -> None:
        """A server slot and the declared body's bytes, or a 503 before anything is read."""
        if self.max_concurrency and self.in_progress >= self.max_concurrency:
            raise ServerBusyError(
                f"the server has {self.in_progress} requests in progress, its limit; retry shortly"
            )
        if content_length:
            self.reserve(holder, content_length)
        self.in_progress += 1

    def admit_model(self, holder: Holder, model: LoadedModel) -> None:
        """A slot of the model version (counted even without a cap: a retired version's session is
        released when its count falls to 0)."""
        limit = model.concurrency_limit
        if limit is not None and model.in_progress >= limit:
            raise ModelBusyError(
                f"model {model.name!r} version {model.version} has {limit} requests in progress, "
                "its limit; retry shortly"
            )
        model.in_progress += 1
        holder.held_model = model

    def reserve(self, holder: Holder, size: int) -> None:
        """Body bytes about to be read; over --max-inflight-bytes they are refused (503)."""
        if self.max_inflight_bytes and self.inflight_bytes + size > self.max_inflight_bytes:
            raise InflightBytesError(
                f"the server is reading or processing {self.inflight_bytes} bytes of request bodies; "
                f"{size} more would pass its limit of {self.max_inflight_bytes}; retry shortly"
            )
        self.inflight_bytes += size
        holder.reserved += size

    def release(self, holder: Holder) -> None:
        self.in_progress -= 1
        if holder.reserved:
            self.inflight_bytes -= holder.reserved
            holder.reserved = 0
        if holder.held_model is not None:
            holder.held_model.in_progress -= 1
            holder.held_model = None
