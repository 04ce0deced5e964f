"""The request pipeline: the one path every request takes, whatever its protocol.

A protocol adapter (the REST fast path and FastAPI routes, gRPC, OpenAI) names the endpoint, the model
and a `work` coroutine, and gets back either the work's result or a `Failure` that it encodes its own
way ({"error": "..."} JSON for REST, OpenAI's error object, a gRPC status). The pipeline decides *what*
went wrong; the adapter decides how to say it. OpenAI names the model in the body: `run_named` takes
the same steps, with the body read (step 6's `read_body`) before the lookup. Each step is written once,
here:

1. start the timer; the call carries the request id (set by the front door for every log line);
2. authentication: with API keys configured, the `Authorization: Bearer` key must be one the keys
   file holds (401 otherwise) and carry the endpoint's scope (403 otherwise);
3. admission (`service.api.admission`): a declared body over --max-body-bytes is refused (413), and
   a request over --max-concurrency or --max-inflight-bytes (503 + Retry-After), before a byte is read;
4. the deadline: --request-timeout-seconds from now, shortened by the client's `timeout` parameter;
5. look the model up (an unknown model or version is counted once, as model="" version=""), then
   its own concurrency cap and, where the endpoint runs the model, a ready session;
6. run `work(call, model, argument)`; it reads its body with `call.read_body` (counted against the
   same limits) and hands long work to `call.in_thread`, which stops it at the deadline (504) or
   when the client leaves;
7. map a domain error to its status and count the failure with its reason; log an unexpected error
   with its traceback and answer an opaque 500;
8. count the request and observe its duration, give back what admission gave; a stream defers this
   to its end (`Call.defer`).

Server-level endpoints (server metadata, the repository index, /metrics) take `run_server`: the same
authentication and error mapping, with no model and no request counting.

A cross-cutting concern is a step here, never a copy in an endpoint module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, TypeVar

import anyio.to_thread
from starlette.types import Receive

from service.api.admission import Admission, Limits
from service.api.drain import Drain
from service.api.errors import status_of
from service.errors import (
    ClientDisconnectedError,
    DeadlineExceededError,
    ForbiddenError,
    InternalError,
    InvalidInputError,
    PayloadTooLargeError,
    RecapError,
    RequestTimeoutError,
    ShuttingDownError,
    UnauthenticatedError,
)
from service.http_protocol import body_timed_out, whole_body
from service.keys import KeyStore
from service.metrics import EndpointMetrics, Metrics, ModelMetrics
from service.runtime.model import LoadedModel
from service.runtime.repository import Repository
from service.runtime.session import RunControl

log = logging.getLogger(__name__)
A = TypeVar("A")
B = TypeVar("B")
T = TypeVar("T")
OPAQUE_MESSAGE = "internal server error"


@dataclass(frozen=True, eq=False)
class Endpoint:
    """One operation of one protocol; `protocol` and `name` are its metric labels."""

    protocol: str
    name: str
    # False for metadata and status: they answer for a model that is not ready too.
    needs_session: bool = True
    scope: str = "inference"  # the API key scope it needs: inference, admin or metrics


@dataclass(frozen=True, slots=True)
class Failure:
    """How a request failed: the domain error (what) and its HTTP status (the REST/OpenAI spelling)."""

    status: int
    error: RecapError

    @property
    def message(self) -> str:
        return self.error.message


# A request body: bytes, or a view of the buffer a declared body was gathered into.
Body = bytes | memoryview


class Call:
    """One request in the pipeline: its endpoint, id, clock, deadline, what admission gave it, and the
    metrics it is counted under."""

    __slots__ = (
        "_children",
        "_done",
        "admission",
        "admitted",
        "deadline",
        "declared",
        "deferred",
        "dispatched",
        "endpoint",
        "failed",
        "held_model",
        "limits",
        "metrics",
        "request_id",
        "reserved",
        "run_end",
        "run_start",
        "start",
        "start_ns",
        "waited",
    )  # fmt: skip

    def __init__(
        self, endpoint: Endpoint, request_id: str, metrics: ModelMetrics, pipeline: Pipeline
    ) -> None:
        self.endpoint = endpoint
        self.request_id = request_id
        self.metrics = metrics
        self.limits = pipeline.limits
        self.admission = pipeline.admission
        self.start_ns = time.perf_counter_ns()
        self.start = self.start_ns / 1e9  # perf_counter's seconds, for deadlines
        self.deadline = self.start + self.limits.request_timeout_s
        # What admission gave: a slot, a model's slot, body bytes (given back by finish).
        self.admitted = False
        self.held_model: LoadedModel | None = None
        self.reserved = 0
        self.declared: int | None = None  # the body's length, where declared (and reserved) at admission
        self._children: EndpointMetrics | None = None  # resolved once the model is known, or at the end
        self.deferred = False
        self._done = False
        self.failed = False
        # Statistics (service.runtime.stats), perf_counter_ns: the first run's start (0: no run), the
        # last run's end, when work was last handed to a worker thread, and the time runs waited for one.
        self.run_start = self.run_end = self.dispatched = self.waited = 0

    @property
    def children(self) -> EndpointMetrics:
        if self._children is None:
            self._children = self.metrics.endpoint(self.endpoint)
        return self._children

    async def read_body(self, receive: Receive, align_at: int = 0) -> Body:
        """The whole ASGI request body, refused with 413 once it passes the body limit; a chunked body is
        counted against --max-inflight-bytes as it arrives. A declared body is read in one go into one
        buffer, with its byte `align_at` 64-byte aligned (see service.http_protocol)."""
        if self.declared is not None:  # its length is within the limit and reserved
            pending = whole_body(receive, self.declared, align_at)
            if pending is not None:
                body = await pending
                if body is None:
                    self._body_failed(receive)
                return body
        chunks: list[bytes] = []
        seen = 0
        limit = self.limits.max_body_bytes
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._body_failed(receive)
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
            if self.declared is None and self.admitted and chunk:
                self.admission.reserve(self, len(chunk))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    def _body_failed(receive: Receive) -> NoReturn:
        if body_timed_out(receive):
            raise RequestTimeoutError("the request body did not arrive in time")
        raise ClientDisconnectedError("the client disconnected before sending the whole body")

    def shorten_deadline(self, timeout_us: object) -> None:
        """A client's `timeout` parameter (microseconds, as Triton spells it) may shorten the deadline."""
        if type(timeout_us) is not int or timeout_us <= 0:
            raise InvalidInputError("parameter 'timeout' must be a positive integer of microseconds")
        self.deadline = min(self.deadline, self.start + timeout_us / 1e6)

    def past_deadline(self) -> bool:
        return time.perf_counter() >= self.deadline

    def ending(self) -> Literal["timeout", "shutdown"] | None:
        """Why work under way must end now: "timeout" (past the deadline), "shutdown" (the drain's
        timeout is over), or None. A stream checks it between tokens."""
        if time.perf_counter() >= self.deadline:
            return "timeout"
        return "shutdown" if self.admission.drain.ended.is_set() else None

    def run_model(
        self,
        model: LoadedModel,
        output_names: list[str],
        feeds: dict[str, Any],
        control: RunControl | None = None,
    ) -> list[Any]:
        """`model.run`, with the request's phases noted for the statistics extension (any thread)."""
        start = time.perf_counter_ns()
        results = model.run(output_names, feeds, control)
        self.run_end = time.perf_counter_ns()
        if not self.run_start:
            self.run_start = start
        if self.dispatched:
            self.waited += start - self.dispatched
            self.dispatched = 0
        return results

    def deadline_error(self) -> DeadlineExceededError:
        budget = self.deadline - self.start
        return DeadlineExceededError(f"the request was not answered within its deadline of {budget:.3g} s")

    async def in_thread(
        self,
        work: Callable[..., T],
        *args: Any,
        stop: Callable[[], None] | None = None,
        receive: Receive | None = None,
    ) -> T:
        """`work(*args)` in a worker thread, given up at the deadline (504) or, with `receive`, when the
        client disconnects. `stop` tells the work to end early (onnxruntime's terminate flag, the
        generation loop's stop event): nothing keeps running for a client that is gone."""
        if self.deadline <= time.perf_counter():
            raise self.deadline_error()
        return await self.watch(anyio.to_thread.run_sync(work, *args), stop=stop, receive=receive)

    async def watch(
        self, work: Awaitable[T], *, stop: Callable[[], None] | None = None, receive: Receive | None = None
    ) -> T:
        """`work`'s result, given up at the deadline (504), at the drain's end (503) or, with `receive`,
        when the client disconnects; then `stop` tells the work to end early."""
        self.dispatched = time.perf_counter_ns()
        running = asyncio.ensure_future(work)
        remaining = self.deadline - time.perf_counter()
        ended = asyncio.ensure_future(self.admission.drain.ended.wait())
        watching: list[asyncio.Future[Any]] = [running, ended]
        gone = asyncio.ensure_future(_disconnected(receive)) if receive is not None else None
        if gone is not None:
            watching.append(gone)
        try:
            done, _ = await asyncio.wait(watching, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            if gone is not None:
                gone.cancel()
        if running in done:
            return running.result()
        if stop is not None:
            stop()
        running.add_done_callback(_retrieve)  # it ends soon; its outcome is no longer anyone's
        if gone is not None and gone in done:
            raise ClientDisconnectedError("the client disconnected before the answer was ready")
        if ended in done:
            raise ShuttingDownError("the server is shutting down; work stopped at the drain timeout")
        raise self.deadline_error()

    def fail(self, error: RecapError) -> Failure:
        """Count a failure with its reason and say how it maps to a status."""
        self.failed = True
        (self._children or self.children).failure(error.code)
        return Failure(status_of(error), error)

    def fail_unexpected(self, error: BaseException, counted: bool = True) -> Failure:
        """An error nobody anticipated: its traceback goes to the log, the client gets an opaque 500."""
        log.error(
            "unexpected error in %s %s for model %r",
            self.endpoint.protocol,
            self.endpoint.name,
            self.metrics.model,
            exc_info=error,
        )
        internal = InternalError(OPAQUE_MESSAGE)
        return self.fail(internal) if counted else Failure(status_of(internal), internal)

    def defer(self) -> None:
        """The work hands its answer to a stream: `finish` is called when the stream ends."""
        self.deferred = True

    async def guarded(
        self, body: AsyncIterator[bytes], say: Callable[[Failure], bytes]
    ) -> AsyncGenerator[bytes, None]:
        """A stream body whose failure after the headers went out is counted like any other and told
        to the client as one last chunk (`say` encodes it: an SSE error event, say)."""
        try:
            async for chunk in body:
                yield chunk
        except RecapError as error:
            yield say(self.fail(error))
        except Exception as error:
            yield say(self.fail_unexpected(error))

    def finish(self) -> None:
        """Count the request, observe its duration, note the model's statistics and give back what
        admission gave, once."""
        if not self._done:
            self._done = True
            children = self._children or self.children
            children.requests.inc()
            now = time.perf_counter_ns()
            total = now - self.start_ns
            children.duration.observe(total / 1e9)
            model = self.held_model
            if model is not None and self.endpoint.needs_session:
                phases = None
                if self.run_start:
                    phases = (self.run_start - self.start_ns, self.waited, now - self.run_end)
                model.stats.record_request(not self.failed, total, phases)
            if self.admitted:
                self.admission.release(self)


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (the body is already read: the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _failed(call: Call, error: Exception) -> Failure:
    """Step 7: a domain error counted with its reason, anything else logged with its traceback (an
    opaque 500); a stream that failed was never handed out, so the call is finished here."""
    call.deferred = False
    return call.fail(error) if isinstance(error, RecapError) else call.fail_unexpected(error)


Work = Callable[[Call, LoadedModel, A], Awaitable[T]]
ServerWork = Callable[[Call, A], Awaitable[T]]
# A protocol that names its model in the body (OpenAI): the model's name and what the work needs of the
# body (its decoded JSON, say), read from the whole body once admission has let it in.
NameOf = Callable[[Body], tuple[str, B]]
BodyWork = Callable[[Call, LoadedModel, A, B], Awaitable[T]]
UNAUTHENTICATED = "missing or unknown API key: send the header `Authorization: Bearer <key>`"


class Pipeline:
    """The steps every request passes through (see the module docstring)."""

    def __init__(
        self,
        repository: Repository,
        metrics: Metrics,
        limits: Limits,
        keys: KeyStore | None = None,
        drain: Drain | None = None,
    ) -> None:
        self.repository = repository
        self.unknown = metrics.unknown
        self.limits = limits
        self.admission = Admission(limits, metrics, drain)
        self.keys = keys

    def authenticate(self, endpoint: Endpoint, authorization: str | None) -> None:
        """The presented key must be known and carry the endpoint's scope (no keys: everyone may)."""
        keys = self.keys
        if keys is None:
            return
        scopes = None
        if authorization is not None:
            scheme, _, key = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and key:
                scopes = keys.scopes_of(key.strip())
        if scopes is None:
            raise UnauthenticatedError(UNAUTHENTICATED)
        if endpoint.scope not in scopes:
            raise ForbiddenError(f"this API key lacks the {endpoint.scope!r} scope this route needs")

    async def run_server(
        self,
        endpoint: Endpoint,
        work: ServerWork[A, T],
        argument: A,
        *,
        request_id: str,
        authorization: str | None,
    ) -> T | Failure:
        """A server-level endpoint: authentication and error mapping; no model, no admission, not counted."""
        call = Call(endpoint, request_id, self.unknown, self)
        try:
            self.authenticate(endpoint, authorization)
            return await work(call, argument)
        except RecapError as error:
            return Failure(status_of(error), error)
        except Exception as error:
            return call.fail_unexpected(error, counted=False)

    async def run(
        self,
        endpoint: Endpoint,
        work: Work[A, T],
        argument: A,
        *,
        request_id: str,
        model_name: str,
        model_version: str | None,
        content_length: int | None = None,
        authorization: str | None = None,
    ) -> T | Failure:
        opened = self.open(
            endpoint,
            request_id,
            model_name,
            model_version,
            content_length=content_length,
            authorization=authorization,
        )
        if isinstance(opened, Failure):
            return opened
        call, model = opened
        return await self.settle_async(call, work(call, model, argument))

    def open(
        self,
        endpoint: Endpoint,
        request_id: str,
        model_name: str,
        model_version: str | None,
        *,
        content_length: int | None,
        authorization: str | None,
    ) -> tuple[Call, LoadedModel] | Failure:
        """Steps 1-5 (the key, the declared size, admission, the lookup, the model's cap and session),
        before a byte of the body is read: the call and its model, or the failure (counted and
        finished). What follows is `settle` or `settle_async`: the call is finished there."""
        call = Call(endpoint, request_id, self.unknown, self)
        try:
            self._admit(call, content_length, authorization)
            model = self._enter(call, model_name, model_version)
        except Exception as error:
            failure = _failed(call, error)
        else:
            return call, model
        call.finish()
        return failure

    def settle(self, call: Call, work: Callable[[], T]) -> T | Failure:
        """Steps 6-8 for an opened call whose work runs here and now: its result or its failure; the
        call is finished unless the work deferred that (`Call.defer`: it went on elsewhere)."""
        try:
            return work()
        except Exception as error:
            return _failed(call, error)
        finally:
            if not call.deferred:
                call.finish()

    async def settle_async(self, call: Call, work: Awaitable[T]) -> T | Failure:
        """`settle` for work that is awaited (a stream hands its answer out deferred)."""
        try:
            return await work
        except Exception as error:
            return _failed(call, error)
        finally:
            if not call.deferred:
                call.finish()

    def abandon(self, call: Call, error: RecapError) -> None:
        """An opened call whose request ended before its work began (the client left, its body was
        late): counted as that failure and finished."""
        call.fail(error)
        call.finish()

    async def run_named(
        self,
        endpoint: Endpoint,
        name_of: NameOf[B],
        work: BodyWork[A, B, T],
        argument: A,
        *,
        receive: Receive,
        request_id: str,
        content_length: int | None = None,
        authorization: str | None = None,
    ) -> T | Failure:
        """`run`'s steps for a request whose body names the model: authentication and admission, then
        the body is read (`call.read_body`, under the same limits) and `name_of` gives the model's name,
        then the lookup, the ready check and `work(call, model, argument, what name_of gave)`. A body
        that names no model is counted once, as model="" (like an unknown model)."""
        call = Call(endpoint, request_id, self.unknown, self)

        async def named() -> T:
            self._admit(call, content_length, authorization)
            model_name, body = name_of(await call.read_body(receive))
            return await work(call, self._enter(call, model_name), argument, body)

        return await self.settle_async(call, named())

    def _admit(self, call: Call, content_length: int | None, authorization: str | None) -> None:
        """`run`'s steps before the model is known: the key, the declared body size, admission."""
        if self.keys is not None:
            self.authenticate(call.endpoint, authorization)
        limit = self.limits.max_body_bytes
        if content_length is not None and content_length > limit:
            raise PayloadTooLargeError(f"request body of {content_length} bytes is over the limit of {limit}")
        self.admission.admit(call, content_length)
        call.admitted = True
        call.declared = content_length

    def _enter(self, call: Call, model_name: str, model_version: str | None = None) -> LoadedModel:
        """`run`'s lookup: the model's metrics from now on, its own concurrency cap, a ready session."""
        model = self.repository.get(model_name, model_version)
        call.metrics = metrics = model.metrics
        call._children = metrics.endpoint(call.endpoint)
        self.admission.admit_model(call, model)
        if call.endpoint.needs_session:
            model.require_session()
        return model
