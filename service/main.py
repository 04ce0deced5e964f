"""Assembles the app: `create_app(settings)`; the lifespan loads the model repository (no work at import)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.telemetry import TelemetryConfig
from starlette.types import ASGIApp

from service.api import docs, generate, health, openai, openai_encode, repository_api, samples, ui, v1, v2
from service.api.admission import Limits
from service.api.drain import Drain
from service.api.errors import install_handlers
from service.api.front import FrontDoor
from service.api.infer import InferHandler
from service.api.metrics_listener import MetricsApp, MetricsListener
from service.api.pipeline import Pipeline
from service.api.schemas import DOC_MODELS
from service.api.state import AppState
from service.http_protocol import DirectEndpoint, guarded_protocol
from service.keys import KeyStore, watch
from service.metrics import Metrics, multiprocess_dir
from service.runtime.lifecycle import ModelControl, VersionPolicy
from service.runtime.repository import Repository
from service.runtime.session import SessionConfig
from service.settings import Settings

log = logging.getLogger(__name__)
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
KEYS_POLL_SECONDS = 1.0  # how soon a rotated keys file takes effect without a SIGHUP
OPEN_PATHS = ("/v2/health/",)  # probes: no key, and none documented


def session_config(settings: Settings) -> SessionConfig:
    return SessionConfig(
        providers=tuple(settings.providers),
        strict_providers=settings.strict_providers,
        gpu_device_id=settings.gpu_device_id,
        intra_op_threads=settings.intra_op_threads,
        inter_op_threads=settings.inter_op_threads,
        graph_optimization_level=settings.graph_optimization_level,
    )


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the hand-parsed bodies' schemas (referenced from openapi_extra)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in DOC_MODELS:
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema
    # Swagger UI's Authorize button sends the key; the probes need none.
    schema["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "An API key from --api-keys-file."}
    }
    for path, operations in schema.get("paths", {}).items():
        if not path.startswith(OPEN_PATHS):
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema


def share(limit: int, workers: int, floor: int = 1) -> int:
    """One worker's share of a per-server limit (0: no limit), never below `floor`."""
    return limit if limit == 0 else max(floor, limit // workers)


def limits(settings: Settings) -> Limits:
    """The limits of this process: with N workers, each takes 1/N of the per-server limits, so the
    server never has more in progress than the flags say (a worker keeps room for one whole body)."""
    workers = settings.worker_count
    return Limits(
        max_body_bytes=settings.max_body_bytes,
        max_concurrency=share(settings.max_concurrency, workers),
        max_inflight_bytes=share(settings.max_inflight_bytes, workers, floor=settings.max_body_bytes),
        request_timeout_s=settings.request_timeout_seconds,
    )


def uvicorn_config(settings: Settings, direct_infer: DirectEndpoint | None = None) -> dict[str, Any]:
    """uvicorn.Config's arguments for this server (one process or a worker), the app aside; with
    `direct_infer` (the app's `infer`), V2 infer is answered from the HTTP protocol's callbacks."""
    timeouts = (settings.header_timeout_seconds, settings.body_timeout_seconds)
    return {
        "host": settings.host,
        "port": settings.port,
        "http": guarded_protocol(*timeouts, direct_infer),
        "loop": "uvloop",
        "access_log": settings.access_log,
        "log_level": settings.log_level,
        "log_config": None,  # uvicorn's loggers propagate to ours (request ids, JSON)
        "server_header": False,
        "date_header": False,
        **tls_options(settings),
    }


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS arguments (none: plain HTTP)."""
    if settings.tls_cert_file is None:
        return {}
    return {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)}


@asynccontextmanager
async def key_rotation(keys: KeyStore | None) -> AsyncIterator[None]:
    """While serving: reload the keys on SIGHUP and when the file changes."""
    if keys is None:
        yield
        return
    loop = asyncio.get_running_loop()
    on_signal = threading.current_thread() is threading.main_thread()  # not in tests' app threads
    if on_signal:
        loop.add_signal_handler(signal.SIGHUP, keys.reload)
    watcher = asyncio.create_task(watch(keys, KEYS_POLL_SECONDS))
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if on_signal:
            loop.remove_signal_handler(signal.SIGHUP)


class ServerApp(FastAPI):
    """FastAPI with the front door outside FastAPI's own layers (its error, telemetry and body-limit
    middleware, each a coroutine and a wrapped `send` per request): every request gets its id there,
    any 500 included, and V2 infer is answered before any of them (it never raises: the request
    pipeline answers every failure)."""

    infer: InferHandler

    def build_middleware_stack(self) -> ASGIApp:
        return FrontDoor(super().build_middleware_stack(), self.infer)


def create_app(settings: Settings) -> ServerApp:
    metrics = Metrics()
    repository = Repository(
        settings.model_repository,
        session_config(settings),
        metrics,
        settings.max_batch_size,
        share(settings.model_max_concurrency, settings.worker_count),
        decode_batch_limit=settings.generate_batch_limit,
    )
    keys = KeyStore(settings.api_keys_file) if settings.api_keys_file is not None else None
    drain = Drain(settings.drain_grace_seconds, settings.shutdown_timeout_seconds)
    pipeline = Pipeline(repository, metrics, limits(settings), keys, drain)
    control = ModelControl(
        repository,
        settings.model_control_mode,
        VersionPolicy.parse(settings.version_policy),
        settings.repository_poll_seconds,
        tuple(settings.load_model),
    )
    state = AppState(
        settings=settings,
        repository=repository,
        metrics=metrics,
        pipeline=pipeline,
        control=control,
        drain=drain,
    )
    infer = InferHandler(pipeline, settings.offload_min_rows)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await control.start()
        models = repository.models()
        log.info(
            "serving %d model version(s), %d ready, from %s (model control: %s, versions: %s); API keys: %s",
            len(models),
            sum(m.ready for m in models),
            repository.root,
            settings.model_control_mode,
            settings.version_policy,
            f"{len(keys)} from {settings.api_keys_file}" if keys is not None else "none (open)",
        )
        grpc_server = None
        if settings.grpc_port:
            from service.api.grpc_server import GrpcServer  # noqa: PLC0415  (grpcio only when it serves)

            grpc_server = GrpcServer(state, settings.offload_min_rows)
            await grpc_server.start()
        listener = None
        if settings.metrics_port is not None:
            metrics_app = MetricsApp(pipeline, metrics, require_key=settings.metrics_port_auth)
            host = settings.metrics_host or settings.host
            listener = MetricsListener(
                metrics_app, host, settings.metrics_port, tls_options(settings), settings.worker_count > 1
            )
            await listener.start()
        publisher = asyncio.create_task(pipeline.admission.publish()) if multiprocess_dir() else None
        try:
            async with key_rotation(keys):
                yield
        finally:
            if publisher is not None:
                publisher.cancel()
            if grpc_server is not None:
                await grpc_server.stop(settings.shutdown_timeout_seconds)
            await control.stop()
            if listener is not None:
                await listener.stop()

    app = ServerApp(
        title="recap-serve",
        description="onnxruntime model server: Open Inference Protocol V2, TF-Serving style V1.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # Our own Prometheus metrics cover requests; FastAPI's OpenTelemetry hooks would cost every
        # request a few environment/provider look-ups (measured with py-spy: ~5 % of a V2 infer).
        telemetry=NO_TELEMETRY,
    )
    app.state.recap = state
    install_handlers(app, {openai.PREFIX: openai_encode.error_body})  # OpenAI's error object there
    app.include_router(health.build_router(state))
    app.include_router(repository_api.build_router(state))  # before v2: /v2/models/stats is no model
    app.include_router(v2.build_router(state, infer))
    app.include_router(v1.build_router(state))
    app.include_router(generate.build_router(state))
    app.include_router(samples.build_router(state))
    app.include_router(openai.build_router(state))  # OpenAI completions for the text models
    app.include_router(ui.build_router(state))  # the model browser: /ui pages and what they read
    docs.install_docs(app)
    app.infer = infer  # the front door's (ServerApp.build_middleware_stack) and the HTTP protocol's
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
