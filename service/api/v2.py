"""Open Inference Protocol V2 (KServe/Triton): server and model metadata, readiness, infer.

The infer endpoint is the hot path; it lives in `service.api.infer` (a pure ASGI fast path in
front of FastAPI's routing) and the routes here declare it for /docs.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api import schemas
from service.api.errors import error_response
from service.api.infer import HEADER, InferHandler
from service.api.state import AppState
from service.runtime.repository import PLATFORM, LoadedModel

log = logging.getLogger(__name__)
SERVER_NAME = "recap-serve"


def _server_version() -> str:
    try:
        return package_version("recap-serve")
    except PackageNotFoundError:
        return "0.0.0"


def json_response(document: object, status: int = 200) -> Response:
    return Response(
        orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


def model_metadata(state: AppState, model: LoadedModel) -> dict[str, object]:
    versions = [m.version_str for m in state.repository.versions(model.name)]
    document: dict[str, object] = {
        "name": model.name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [spec.as_metadata() for spec in model.inputs],
        "outputs": [spec.as_metadata() for spec in model.outputs],
        "ready": model.ready,
        "providers": model.providers,
    }
    optional = {
        "reason": model.reason,
        "task": model.task,
        "labels": model.labels,
        "description": model.manifest.description or None,
        "max_batch_size": model.batch_limit,
    }
    document.update({k: v for k, v in optional.items() if v is not None})
    return document


def build_router(state: AppState) -> APIRouter:
    router = APIRouter(tags=["v2"])
    repository = state.repository
    server = {"name": SERVER_NAME, "version": _server_version(), "extensions": state.extensions}

    errors: dict[int | str, dict[str, Any]] = {code: {"model": schemas.ErrorBody} for code in (400, 404)}

    @router.get("/v2", responses={200: {"model": schemas.ServerMetadata}}, summary="Server metadata")
    @router.get("/v2/", include_in_schema=False)
    async def server_metadata() -> Response:
        return json_response(server)

    @router.get("/v2/models/{model_name}", responses={200: {"model": schemas.ModelMetadata}, **errors})
    @router.get(
        "/v2/models/{model_name}/versions/{model_version}",
        responses={200: {"model": schemas.ModelMetadata}, **errors},
    )
    async def metadata(model_name: str, model_version: str | None = None) -> Response:
        return json_response(model_metadata(state, repository.get(model_name, model_version)))

    @router.get("/v2/models/{model_name}/ready", responses={200: {"model": schemas.ModelReady}, **errors})
    @router.get(
        "/v2/models/{model_name}/versions/{model_version}/ready",
        responses={200: {"model": schemas.ModelReady}, **errors},
    )
    async def model_ready(model_name: str, model_version: str | None = None) -> Response:
        model = repository.get(model_name, model_version)
        if not model.ready:
            return error_response(
                503, f"model {model.name!r} version {model.version} is not ready: {model.reason}"
            )
        return json_response({"name": model.name, "version": model.version_str, "ready": True})

    @router.post("/v2/repository/index", summary="Model repository index (Triton)")
    async def repository_index() -> Response:
        return json_response(
            [
                {"name": m.name, "version": m.version_str, "state": "READY" if m.ready else "UNAVAILABLE"}
                | ({"reason": m.reason} if m.reason else {})
                for m in repository.models()
            ]
        )

    infer_docs = {
        "openapi_extra": schemas.request_body(schemas.InferenceRequest),
        "responses": {200: {"model": schemas.InferenceResponse}, 413: {"model": schemas.ErrorBody}, **errors},
    }

    handler = InferHandler(state)

    async def infer(request: Request, model_name: str, model_version: str | None) -> Response:
        # Normally answered by FastInferMiddleware before routing; this route documents the endpoint
        # and serves any request the middleware passes on (e.g. under a mounted prefix).
        status, content, headers = await handler.handle(
            request.body, request.headers.get(HEADER), model_name, model_version
        )
        response = Response(content, status_code=status)
        response.headers.update({k.decode(): v.decode() for k, v in headers})
        return response

    @router.post("/v2/models/{model_name}/infer", summary="Inference", **infer_docs)  # type: ignore[arg-type]
    async def infer_default(request: Request, model_name: str) -> Response:
        return await infer(request, model_name, None)

    @router.post(
        "/v2/models/{model_name}/versions/{model_version}/infer",
        summary="Inference (one version)",
        **infer_docs,  # type: ignore[arg-type]
    )
    async def infer_version(request: Request, model_name: str, model_version: str) -> Response:
        return await infer(request, model_name, model_version)

    return router
