"""Admission control, a step of the request pipeline: how many requests, and how many body bytes, the
server takes on at once. Beyond a limit the request is refused at once (503 with Retry-After), never
queued: a queue without bound turns a burst into latency for everyone and memory for the server.

Three counters, all on the event loop (so no lock): requests in progress in the whole server
(`--max-concurrency`), per model version (model.json's `max_concurrency`, else
`--model-max-concurrency`), and bytes of request bodies being read or processed
(`--max-inflight-bytes`: a declared body is reserved before it is read, a chunked one as it arrives).
Probes and /metrics never pass here. A `Ticket` holds what one request took and gives it back once.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.errors import InflightBytesError, ModelBusyError, ServerBusyError
from service.metrics import Metrics
from service.runtime.model import LoadedModel


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_concurrency: int = 0  # 0: no limit
    max_inflight_bytes: int = 0  # 0: no limit
    request_timeout_s: float = 60.0


class Ticket:
    """What one admitted request holds: a server slot, maybe a model slot, reserved body bytes."""

    __slots__ = ("bytes", "model")

    def __init__(self) -> None:
        self.bytes = 0
        self.model: LoadedModel | None = None


class Admission:
    def __init__(self, limits: Limits, metrics: Metrics) -> None:
        self.max_concurrency = limits.max_concurrency
        self.max_inflight_bytes = limits.max_inflight_bytes
        self.in_progress = 0
        self.inflight_bytes = 0
        self._gauge = metrics.requests_in_progress

    def admit(self, content_length: int | None) -> Ticket:
        """A server slot and the declared body's bytes, or a 503 before anything is read."""
        if self.max_concurrency and self.in_progress >= self.max_concurrency:
            raise ServerBusyError(
                f"the server has {self.in_progress} requests in progress, its limit; retry shortly"
            )
        ticket = Ticket()
        if content_length:
            self.reserve(ticket, content_length)
        self.in_progress += 1
        self._gauge.inc()
        return ticket

    def admit_model(self, ticket: Ticket, model: LoadedModel) -> None:
        limit = model.concurrency_limit
        if limit is not None and model.in_progress >= limit:
            raise ModelBusyError(
                f"model {model.name!r} version {model.version} has {limit} requests in progress, "
                "its limit; retry shortly"
            )
        model.in_progress += 1
        ticket.model = model

    def reserve(self, ticket: Ticket, size: int) -> None:
        """Body bytes about to be read; over --max-inflight-bytes they are refused (503)."""
        if self.max_inflight_bytes and self.inflight_bytes + size > self.max_inflight_bytes:
            raise InflightBytesError(
                f"the server is reading or processing {self.inflight_bytes} bytes of request bodies; "
                f"{size} more would pass its limit of {self.max_inflight_bytes}; retry shortly"
            )
        self.inflight_bytes += size
        ticket.bytes += size

    def release(self, ticket: Ticket) -> None:
        self.in_progress -= 1
        self._gauge.dec()
        self.inflight_bytes -= ticket.bytes
        ticket.bytes = 0
        if ticket.model is not None:
            ticket.model.in_progress -= 1
            ticket.model = None
