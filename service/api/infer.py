"""The V2 infer hot path: the front door calls `InferHandler` directly, the FastAPI route documents it.

Both go through the request pipeline (`V2_INFER`); this module only decodes, runs and encodes. A batch
of `--offload-min-rows` rows or more runs in a worker thread, stopped at the deadline or when the client
leaves; smaller ones run inline, because a thread hop (0.1-0.35 ms here) costs more than running a few
hundred rows of a tabular model (and inline work cannot overrun a deadline by much).
"""

from __future__ import annotations

from collections.abc import Awaitable

import numpy as np
from starlette.types import Receive, Send

from service.api.errors import JSON_HEADERS, error_body, error_headers
from service.api.front import BINARY_HEADER, REQUEST_ID_HEADER, InferHead
from service.api.pipeline import Call, Endpoint, Failure, Pipeline
from service.api.v2_codec import V2Request, decode_request, encode_response
from service.errors import InvalidInputError
from service.http_protocol import write_response
from service.runtime.model import LoadedModel
from service.runtime.session import RunControl

V2_INFER = Endpoint("v2", "infer")
Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, bytes, Headers]


class InferHandler:
    """Answer one V2 infer request through the pipeline; never raises."""

    def __init__(self, pipeline: Pipeline, offload_min_rows: int) -> None:
        self.pipeline = pipeline
        self.offload_rows = offload_min_rows

    async def __call__(self, head: InferHead, send: Send) -> None:
        """The front door's fast path: answer on the ASGI `send`."""
        status, content, headers = answer(await self.run(head))
        headers = [*headers, (REQUEST_ID_HEADER, head.request_id.encode("ascii"))]
        if write_response(head.receive, status, headers, content):
            return
        headers.append((b"content-length", b"%d" % len(content)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def run(self, head: InferHead) -> Awaitable[Answer | Failure]:
        return self.pipeline.run(
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
        header_length = None
        if head.binary_header is not None:
            if not head.binary_header.isdigit():
                raise InvalidInputError(f"{BINARY_HEADER.decode()} must be a non-negative integer")
            header_length = int(head.binary_header)
        # The binary tensors start after the JSON header: aligned there, the first is used in place.
        body = await call.read_body(head.receive, align_at=header_length or 0)
        request = decode_request(body, model, header_length)
        if request.timeout_us is not None:
            call.shorten_deadline(request.timeout_us)
        if request.rows >= self.offload_rows:
            results = await run_offloaded(call, model, request, head.receive)
        else:  # inline, with no coroutine layer more: the hot path of small requests
            results = call.run_model(model, request.output_names, request.feeds)
        content, json_length = encode_response(model, request, results)
        if json_length is None:
            return 200, content, JSON_HEADERS
        binary = [(b"content-type", b"application/octet-stream"), (BINARY_HEADER, b"%d" % json_length)]
        return 200, content, binary


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
