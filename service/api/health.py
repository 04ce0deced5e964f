"""Operations: V2 liveness/readiness (always open: probes send no key) and Prometheus `/metrics`.

Readiness follows what clients can use: 200 when every model's default version is ready (strict, the
default) or when at least one is (--no-strict-readiness); 503 from the moment SIGTERM starts the drain.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api import schemas
from service.api.errors import error_response
from service.api.pipeline import Call, Endpoint
from service.api.rest import json_response, serve_server
from service.api.state import AppState
from service.metrics import Metrics

METRICS = Endpoint("operations", "metrics", scope="metrics")


async def metrics_work(call: Call, metrics: Metrics) -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


def readiness_problem(state: AppState) -> str | None:
    """Why the server is not ready (None: it is). REST's /v2/health/ready, gRPC's ServerReady and
    health service all answer from here."""
    repository = state.repository
    # What clients can use: the default version of each model (requests without a version go there).
    # A failed or pending other version shows in the index and the metrics instead.
    if state.drain.draining:
        return "the server is shutting down"
    defaults = [repository.default(name) for name in repository.names()]
    unusable = [f"{m.name} v{m.version}" for m in defaults if m is not None and not m.ready]
    if state.settings.strict_readiness and unusable:
        shown = ", ".join(unusable[:10])
        return f"{len(unusable)} model(s) have no ready version: {shown} (reasons: the model metadata)"
    if defaults and len(unusable) == len(defaults):
        return "no model is ready"
    return None


def build_router(state: AppState) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/v2/health/live", summary="Server live")
    async def live() -> Response:
        return json_response({"live": True})

    @router.get("/v2/health/ready", summary="Server ready", responses={503: {"model": schemas.ErrorBody}})
    async def ready() -> Response:
        problem = readiness_problem(state)
        if problem is not None:
            return error_response(503, problem)
        return json_response({"ready": True})

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        return await serve_server(state.pipeline, request, METRICS, metrics_work, state.metrics)

    return router
