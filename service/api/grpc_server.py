"""Open Inference Protocol over gRPC: `inference.GRPCInferenceService` on `--grpc-port` (grpcio, asyncio).

The same process, event loop and request pipeline as REST: every RPC names its `Endpoint` (protocol
"grpc"), and the pipeline authenticates (`authorization: Bearer <key>` metadata), admits, applies the
deadline (the client's gRPC deadline shortens it, as REST's `timeout`), looks the model up, runs the
work and maps what went wrong; this module only decodes (`grpc_codec`), encodes and says a `Failure` as
a gRPC status. RPCs recap-serve does not implement (shared memory, trace, logging, streaming infer)
are answered UNIMPLEMENTED by grpcio itself. The standard `grpc.health.v1` service follows readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.api.front import RequestIds
from service.api.grpc_codec import decode_infer, encode_infer
from service.api.grpc_messages import open_inference_pb2 as pb
from service.api.health import readiness_problem
from service.api.infer import run_offloaded
from service.api.pipeline import Call, Endpoint, Failure
from service.api.state import AppState
from service.api.v2 import server_document
from service.errors import (
    DeadlineExceededError,
    ForbiddenError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    PayloadTooLargeError,
    RecapError,
    RequestTimeoutError,
    RetryLaterError,
    UnauthenticatedError,
)
from service.logs import REQUEST_ID
from service.runtime.model import LoadedModel
from service.runtime.repository import PLATFORM

log = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"
HEALTH_REFRESH_SECONDS = 0.5
INFER = Endpoint("grpc", "infer")
METADATA = Endpoint("grpc", "metadata", needs_session=False)
READY = Endpoint("grpc", "ready", needs_session=False)
SERVER_METADATA = Endpoint("grpc", "server_metadata")
INDEX = Endpoint("grpc", "repository_index", scope="admin")
LOAD = Endpoint("grpc", "repository_load", scope="admin")
UNLOAD = Endpoint("grpc", "repository_unload", scope="admin")
STATISTICS = Endpoint("grpc", "statistics", scope="metrics")
# What went wrong -> how gRPC says it (the most specific class first; anything else is INTERNAL).
STATUS: list[tuple[type[RecapError], grpc.StatusCode]] = [
    (UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (ForbiddenError, grpc.StatusCode.PERMISSION_DENIED),
    (ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
    (PayloadTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (RetryLaterError, grpc.StatusCode.UNAVAILABLE),
    (ModelNotReadyError, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (RequestTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
]


def status_of(error: RecapError) -> grpc.StatusCode:
    for kind, code in STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            value = item.value
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


class Servicer:
    """The RPCs, each through the request pipeline."""

    def __init__(self, state: AppState, offload_min_rows: int) -> None:
        self.state = state
        self.pipeline = state.pipeline
        self.offload_rows = offload_min_rows
        self._ids = RequestIds()  # the front door's rule: the client's x-request-id, or a new one

    def _request_id(self, context: grpc.aio.ServicerContext) -> str:
        given = _metadata(context, "x-request-id")
        request_id = self._ids.accept_or_new(
            given.encode("latin-1", "replace") if given is not None else None
        )
        REQUEST_ID.set(request_id)
        return request_id

    async def _answer(self, result: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(result, Failure):
            await context.abort(status_of(result.error), result.message)
        return result

    async def _model_call(
        self,
        endpoint: Endpoint,
        work: Callable[[Call, LoadedModel, Any], Awaitable[Any]],
        request: Any,
        context: grpc.aio.ServicerContext,
        *,
        model: tuple[str, str],
        size: int | None = None,
    ) -> Any:
        """A model's RPC through the pipeline; `model` is (name, version: "" for the default)."""
        result = await self.pipeline.run(
            endpoint,
            work,
            (request, context),
            request_id=self._request_id(context),
            model_name=model[0],
            model_version=model[1] or None,
            content_length=size,
            authorization=_metadata(context, "authorization"),
        )
        return await self._answer(result, context)

    async def _server_call(
        self,
        endpoint: Endpoint,
        work: Callable[[Call, Any], Awaitable[Any]],
        request: Any,
        context: grpc.aio.ServicerContext,
    ) -> Any:
        result = await self.pipeline.run_server(
            endpoint,
            work,
            request,
            request_id=self._request_id(context),
            authorization=_metadata(context, "authorization"),
        )
        return await self._answer(result, context)

    # -- health (open, as REST's probes) ------------------------------------------------------------

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=readiness_problem(self.state) is None)

    # -- models ---------------------------------------------------------------------------------------

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def work(call: Call, model: LoadedModel, _: Any) -> Any:
            return pb.ModelReadyResponse(ready=model.ready)

        return await self._model_call(READY, work, request, context, model=(request.name, request.version))

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def work(call: Call, model: LoadedModel, _: Any) -> Any:
            versions = [m.version_str for m in self.state.repository.versions(model.name)]
            return pb.ModelMetadataResponse(
                name=model.name,
                versions=versions,
                platform=PLATFORM,
                inputs=[spec.as_metadata() for spec in model.inputs],
                outputs=[spec.as_metadata() for spec in model.outputs],
            )

        return await self._model_call(METADATA, work, request, context, model=(request.name, request.version))

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext, size: int) -> Any:  # noqa: N802
        """`size`: the request's length on the wire (ByteSize() would serialize the whole message again,
        two copies of every tensor, some 6 % of an 8,192-row call)."""
        model = (request.model_name, request.model_version)
        return await self._model_call(INFER, self._infer, request, context, model=model, size=size)

    async def _infer(self, call: Call, model: LoadedModel, argument: tuple[Any, Any]) -> Any:
        request, context = argument
        remaining = context.time_remaining()
        if remaining is not None:  # the client's gRPC deadline, as REST's `timeout` parameter
            call.shorten_deadline(max(1, int(remaining * 1e6)))
        decoded = decode_infer(request, model)
        if decoded.rows >= self.offload_rows:
            results = await run_offloaded(call, model, decoded)
        else:
            results = call.run_model(model, decoded.output_names, decoded.feeds)
        return encode_infer(model, decoded, results)

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        repository = self.state.repository

        async def work(call: Call, asked: Any) -> Any:
            if not asked.name:
                chosen = repository.models()
            elif not asked.version:
                chosen = repository.versions(asked.name)
            else:
                chosen = [repository.get(asked.name, asked.version)]
            return pb.ModelStatisticsResponse(
                model_stats=[m.stats.document(m.name, m.version_str) for m in chosen]
            )

        return await self._server_call(STATISTICS, work, request, context)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        async def work(call: Call, _: Any) -> Any:
            document: dict[str, Any] = server_document(self.state)
            return pb.ServerMetadataResponse(**document)

        return await self._server_call(SERVER_METADATA, work, request, context)

    # -- the repository extension ---------------------------------------------------------------------

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        control = self.state.control

        async def work(call: Call, asked: Any) -> Any:
            entries = control.index(ready_only=asked.ready)
            return pb.RepositoryIndexResponse(
                models=[
                    {"name": e.name, "version": e.version or "", "state": e.state, "reason": e.reason or ""}
                    for e in entries
                ]
            )

        return await self._server_call(INDEX, work, request, context)

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        control = self.state.control

        async def work(call: Call, asked: Any) -> Any:
            control.require_explicit("load")
            if asked.parameters:
                raise InvalidInputError(
                    f"parameter {sorted(asked.parameters)[0][:64]!r} is not supported: models are loaded "
                    "from the repository's files as they are"
                )
            await control.load(asked.model_name)
            return pb.RepositoryModelLoadResponse()

        return await self._server_call(LOAD, work, request, context)

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        control = self.state.control

        async def work(call: Call, asked: Any) -> Any:
            control.require_explicit("unload")
            await control.unload(asked.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await self._server_call(UNLOAD, work, request, context)


RPCS: dict[str, tuple[Any, Any]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
    "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse),
    "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse),
}


SIZED = frozenset({"ModelInfer"})  # RPCs told the request's length on the wire (admission counts it)


def _parsing(
    method: Callable[..., Awaitable[Any]], message: Any, sized: bool = False
) -> Callable[[bytes, Any], Awaitable[Any]]:
    """The RPC on the raw request bytes: a message that does not parse is INVALID_ARGUMENT with a reason
    (grpcio answers a failing deserializer with UNKNOWN). A `sized` RPC also gets the bytes' length."""

    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = message.FromString(raw)
        except DecodeError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {message.DESCRIPTOR.name} protobuf message",
            )
        if sized:
            return await method(request, context, len(raw))
        return await method(request, context)

    return handle


def service_handler(servicer: Servicer) -> grpc.GenericRpcHandler:
    """The RPCs under the protocol's service name (our messages are wire-compatible, see the proto)."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _parsing(getattr(servicer, name), request, name in SIZED),
            response_serializer=response.SerializeToString,
        )
        for name, (request, response) in RPCS.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


class GrpcServer:
    """The gRPC listener of one server process, started and stopped by the app's lifespan."""

    def __init__(self, state: AppState, offload_min_rows: int) -> None:
        settings = state.settings
        self.state = state
        self.address = f"{settings.host}:{settings.grpc_port}"
        options = [
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            # Several workers share the port (the kernel spreads connections); one process must own it.
            ("grpc.so_reuseport", 1 if settings.worker_count > 1 else 0),
        ]
        self.server = grpc.aio.server(options=options)
        self.server.add_generic_rpc_handlers((service_handler(Servicer(state, offload_min_rows)),))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            credentials = grpc.ssl_server_credentials(
                [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
            )
            self.port = self.server.add_secure_port(self.address, credentials)
        else:
            self.port = self.server.add_insecure_port(self.address)
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.server.start()
        self._watcher = asyncio.create_task(self._follow_readiness())
        log.info("gRPC (inference.GRPCInferenceService, grpc.health.v1) on %s", self.address)

    async def _follow_readiness(self) -> None:
        """grpc.health.v1 says SERVING exactly when REST's readiness is 200 (the drain included)."""
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        while True:
            status = serving if readiness_problem(self.state) is None else not_serving
            for name in ("", SERVICE):
                await self.health.set(name, status)
            await asyncio.sleep(HEALTH_REFRESH_SECONDS)

    async def stop(self, grace_s: float) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.server.stop(grace_s)
