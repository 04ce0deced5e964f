"""The V2 infer hot path, answered without FastAPI's routing (the FastAPI route documents it).

Two ways in, one request pipeline (`V2_INFER`); this module only decodes, runs and encodes:
- `InferHandler.start`, from the HTTP protocol's callbacks (`service.http_protocol`), for a body of
  declared length: the pipeline's checks run once the headers are in, `DirectInfer.body` once the body
  is whole, and a small request is answered there and then, with no task, no ASGI messages and no
  scope. That spares 8 % of the server's CPU per 8,192-row request and 15 % per one-row request
  (tritonclient.http, binary tensors; side by side against the ASGI path, 4 Dec 2026).
- `InferHandler.__call__`, from the front door (`service.api.front`), for everything else: a chunked
  body, an HTTP server other than ours.

A batch of `--offload-min-rows` rows or more runs in a worker thread, stopped at the deadline or when
the client leaves; smaller ones run inline, because a thread hop (0.1-0.35 ms here) costs more than
running a few hundred rows of a tabular model (and inline work cannot overrun a deadline by much).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import numpy as np
from starlette.types import Message, Receive, Send

from service.api.errors import JSON_HEADERS, error_body, error_headers
from service.api.front import BINARY_HEADER, REQUEST_ID_HEADER, InferHead, infer_head, scan_headers
from service.api.pipeline import Body, Call, Endpoint, Failure, Pipeline
from service.api.v2_codec import V2Request, decode_request, encode_response
from service.errors import ClientDisconnectedError, InvalidInputError, RequestTimeoutError
from service.http_protocol import write_response
from service.logs import NO_REQUEST, REQUEST_ID
from service.runtime.model import LoadedModel
from service.runtime.session import RunControl

V2_INFER = Endpoint("v2", "infer")
Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, bytes, Headers]
BINARY_HEADERS = [(b"content-type", b"application/octet-stream")]


class InferHandler:
    """Answer one V2 infer request through the pipeline; never raises."""

    def __init__(self, pipeline: Pipeline, offload_min_rows: int) -> None:
        self.pipeline = pipeline
        self.offload_rows = offload_min_rows

    def start(self, path: str, headers: Headers) -> DirectInfer | Answer | None:
        """The HTTP protocol's way in, with the request's head: a request whose body the protocol hands
        to `DirectInfer.body`, the answer of one refused before its body (unknown model, no key, over a
        limit), or None where this is no V2 infer route or its body's length is not declared (then the
        request goes the ASGI way)."""
        fields = scan_headers(headers)
        declared = fields.content_length
        if declared is None or not declared.isdigit() or fields.transfer_encoding is not None:
            return None
        head = infer_head(path, fields, None)
        if head is None:
            return None
        try:
            opened = self.pipeline.open(
                V2_INFER,
                head.request_id,
                head.model_name,
                head.model_version,
                content_length=head.content_length,
                authorization=head.authorization,
            )
        finally:
            REQUEST_ID.set(NO_REQUEST)  # the protocol's callbacks serve every connection
        if isinstance(opened, Failure):
            return response(opened, head.request_id)
        call, model = opened
        return DirectInfer(self, call, model, head)

    async def __call__(self, head: InferHead, send: Send) -> None:
        """The front door's way in: answer on the ASGI `send`."""
        status, content, headers = response(await self.run(head), head.request_id)
        if head.receive is not None and write_response(head.receive, status, headers, content):
            return
        headers.append((b"content-length", b"%d" % len(content)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def run(self, head: InferHead) -> Answer | Failure:
        return await self.pipeline.run(
            V2_INFER,
            self._infer,
            head,
            request_id=head.request_id,
            model_name=head.model_name,
            model_version=head.model_version,
            content_length=head.content_length,
            authorization=head.authorization,
        )

    async def _infer(self, call: Call, model: LoadedModel, head: InferHead) -> Answer:
        header_length = binary_header_length(head)
        # The binary tensors start after the JSON header: aligned there, the first is used in place.
        assert head.receive is not None  # the front door's heads carry their ASGI receive
        body = await call.read_body(head.receive, align_at=header_length or 0)
        request = decode(call, model, body, header_length)
        if request.rows >= self.offload_rows:
            results = await run_offloaded(call, model, request, head.receive)
        else:  # inline, with no coroutine layer more: the hot path of small requests
            results = call.run_model(model, request.output_names, request.feeds)
        return encode(model, request, results)


class DirectInfer:
    """A V2 infer request the HTTP protocol answers itself: opened (checked, admitted, its model found)
    when its headers came, given its body by `body` once whole, or `abandon`ed when it never is."""

    __slots__ = ("_lost", "_settled", "align_at", "call", "handler", "head", "length", "model")

    def __init__(self, handler: InferHandler, call: Call, model: LoadedModel, head: InferHead) -> None:
        self.handler = handler
        self.call = call
        self.model = model
        self.head = head
        self.length: int = head.content_length or 0
        # Where the binary tensors start, to be aligned (see _infer); a bad header is said with the body.
        binary = head.binary_header
        self.align_at = int(binary) if binary is not None and binary.isdigit() else 0
        self._settled = False
        self._lost: asyncio.Future[None] | None = None  # set while it runs in a worker thread

    def body(self, body: Body) -> Answer | Coroutine[Any, Any, Answer]:
        """The answer, or for a batch that runs in a worker thread a coroutine that gives it."""
        self._settled = True
        REQUEST_ID.set(self.head.request_id)
        try:
            result = self.handler.pipeline.settle(self.call, lambda: self._infer(body))
        finally:
            REQUEST_ID.set(NO_REQUEST)  # the protocol's callbacks serve every connection
        if isinstance(result, V2Request):
            return self._offloaded(result)
        return response(result, self.head.request_id)

    def abandon(self, timed_out: bool) -> None:
        """The request ended before its answer: its body never came whole (the client left, or was
        late: `timed_out`), or the client left while it ran in a worker thread (stopped there)."""
        if self._lost is not None:
            if not self._lost.done():
                self._lost.set_result(None)
            return
        if self._settled:
            return
        self._settled = True
        if timed_out:
            error: RequestTimeoutError | ClientDisconnectedError = RequestTimeoutError(
                "the request body did not arrive in time"
            )
        else:
            error = ClientDisconnectedError("the client disconnected before sending the whole body")
        REQUEST_ID.set(self.head.request_id)
        try:
            self.handler.pipeline.abandon(self.call, error)
        finally:
            REQUEST_ID.set(NO_REQUEST)

    def _infer(self, body: Body) -> Answer | V2Request:
        call, model = self.call, self.model
        request = decode(call, model, body, binary_header_length(self.head))
        if request.rows >= self.handler.offload_rows:
            self._lost = asyncio.get_running_loop().create_future()
            call.defer()  # _offloaded settles it
            return request
        return encode(model, request, call.run_model(model, request.output_names, request.feeds))

    async def _offloaded(self, request: V2Request) -> Answer:
        REQUEST_ID.set(self.head.request_id)  # in this task's own context
        call = self.call
        call.deferred = False
        result = await self.handler.pipeline.settle_async(call, self._run_offloaded(request))
        return response(result, self.head.request_id)

    async def _run_offloaded(self, request: V2Request) -> Answer:
        model = self.model
        results = await run_offloaded(self.call, model, request, self._gone)
        return encode(model, request, results)

    async def _gone(self) -> Message:
        """An ASGI `receive` for `Call.watch`: the disconnect, once `abandon` says the client left."""
        assert self._lost is not None
        await self._lost
        return {"type": "http.disconnect"}


def binary_header_length(head: InferHead) -> int | None:
    """Inference-Header-Content-Length (the binary tensor extension): the JSON header's length."""
    if head.binary_header is None:
        return None
    if not head.binary_header.isdigit():
        raise InvalidInputError(f"{BINARY_HEADER.decode()} must be a non-negative integer")
    return int(head.binary_header)


def decode(call: Call, model: LoadedModel, body: Body, header_length: int | None) -> V2Request:
    """The decoded request; its `timeout` parameter shortens the call's deadline."""
    request = decode_request(body, model, header_length)
    if request.timeout_us is not None:
        call.shorten_deadline(request.timeout_us)
    return request


def encode(model: LoadedModel, request: V2Request, results: list[np.ndarray]) -> Answer:
    content, json_length = encode_response(model, request, results)
    if json_length is None:
        return 200, content, JSON_HEADERS
    return 200, content, [*BINARY_HEADERS, (BINARY_HEADER, b"%d" % json_length)]


async def run_offloaded(
    call: Call, model: LoadedModel, request: V2Request, receive: Receive | None = None
) -> list[np.ndarray]:
    """Run a big decoded infer request (REST or gRPC) in a worker thread that the deadline (or, with
    `receive`, a client that left) stops."""
    control = RunControl()
    return await call.in_thread(
        call.run_model,
        model,
        request.output_names,
        request.feeds,
        control,
        stop=control.stop,
        receive=receive,
    )


def answer(result: Answer | Failure) -> Answer:
    """(status, body, headers) of the pipeline's result: a failure becomes `{"error": ...}`."""
    if isinstance(result, Failure):
        return result.status, error_body(result.message), error_headers(result.error)
    return result


def response(result: Answer | Failure, request_id: str) -> Answer:
    """`answer` with the request's id header, in a list of its own."""
    status, content, headers = answer(result)
    return status, content, [*headers, (REQUEST_ID_HEADER, request_id.encode("ascii"))]
