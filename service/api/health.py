"""Operations: V2 liveness/readiness (always open: probes send no key) and Prometheus `/metrics`."""

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


def build_router(state: AppState) -> APIRouter:
    router = APIRouter(tags=["health"])
    repository = state.repository
    strict = state.settings.strict_readiness

    @router.get("/v2/health/live", summary="Server live")
    async def live() -> Response:
        return json_response({"live": True})

    @router.get("/v2/health/ready", summary="Server ready", responses={503: {"model": schemas.ErrorBody}})
    async def ready() -> Response:
        models = repository.models()
        broken = [f"{m.name} v{m.version}" for m in models if not m.ready]
        if strict and broken:
            return error_response(503, f"{len(broken)} model version(s) not ready: {', '.join(broken[:10])}")
        if not any(m.ready for m in models) and models:
            return error_response(503, "no model is ready")
        return json_response({"ready": True})

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        return await serve_server(state.pipeline, request, METRICS, metrics_work, state.metrics)

    return router
