"""Open Inference Protocol V2 (KServe/Triton): server and model metadata, readiness, infer.

The infer endpoint is the hot path: the front door answers it through `service.api.infer`, and the
route here documents it for /docs and serves anything the front door passes on.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api import schemas
from service.api.front import BINARY_HEADER, InferHead, request_id_of
from service.api.infer import InferHandler, answer
from service.api.pipeline import Call, Endpoint
from service.api.rest import content_length, json_response, serve, serve_server
from service.api.state import AppState
from service.runtime.model import LoadedModel
from service.runtime.repository import PLATFORM

SERVER_NAME = "recap-serve"
V2_METADATA = Endpoint("v2", "metadata", needs_session=False)
V2_READY = Endpoint("v2", "ready", needs_session=False)
V2_SERVER = Endpoint("v2", "server_metadata")


def _server_version() -> str:
    try:
        return package_version("recap-serve")
    except PackageNotFoundError:
        return "0.0.0"


def server_document(state: AppState) -> dict[str, object]:
    return {"name": SERVER_NAME, "version": _server_version(), "extensions": state.extensions}


def model_metadata(state: AppState, model: LoadedModel) -> dict[str, object]:
    every = state.repository.versions(model.name)
    versions = [m.version_str for m in every]
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
    # recap-serve extension: every version's state, so a failed or pending one shows here too.
    document["version_states"] = [
        {"version": m.version_str, "state": m.state, "reason": m.status_reason} for m in every
    ]
    return document


def build_router(state: AppState, infer_handler: InferHandler) -> APIRouter:
    router = APIRouter(tags=["v2"])
    pipeline = state.pipeline
    server = server_document(state)
    errors: dict[int | str, dict[str, Any]] = {code: {"model": schemas.ErrorBody} for code in (400, 404)}

    async def server_work(call: Call, _: None) -> Response:
        return json_response(server)

    @router.get("/v2", responses={200: {"model": schemas.ServerMetadata}}, summary="Server metadata")
    @router.get("/v2/", include_in_schema=False)
    async def server_metadata(request: Request) -> Response:
        return await serve_server(pipeline, request, V2_SERVER, server_work, None)

    async def metadata_work(call: Call, model: LoadedModel, _: None) -> Response:
        return json_response(model_metadata(state, model))

    @router.get("/v2/models/{model_name}", responses={200: {"model": schemas.ModelMetadata}, **errors})
    @router.get(
        "/v2/models/{model_name}/versions/{model_version}",
        responses={200: {"model": schemas.ModelMetadata}, **errors},
    )
    async def metadata(request: Request, model_name: str, model_version: str | None = None) -> Response:
        return await serve(pipeline, request, V2_METADATA, metadata_work, None)

    async def ready_work(call: Call, model: LoadedModel, _: None) -> Response:
        model.require_session()  # 503 with the reason when it is not
        return json_response({"name": model.name, "version": model.version_str, "ready": True})

    ready_docs: dict[int | str, dict[str, Any]] = {200: {"model": schemas.ModelReady}, **errors}

    @router.get("/v2/models/{model_name}/ready", responses=ready_docs)
    @router.get("/v2/models/{model_name}/versions/{model_version}/ready", responses=ready_docs)
    async def model_ready(request: Request, model_name: str, model_version: str | None = None) -> Response:
        return await serve(pipeline, request, V2_READY, ready_work, None)

    infer_docs: dict[str, Any] = {
        "openapi_extra": schemas.request_body(schemas.InferenceRequest),
        "responses": {200: {"model": schemas.InferenceResponse}, 413: {"model": schemas.ErrorBody}, **errors},
    }

    # Normally answered by the front door before routing; this route documents the endpoint and serves
    # any request the front door passes on (e.g. under a mounted prefix).
    @router.post("/v2/models/{model_name}/infer", summary="Inference", **infer_docs)
    @router.post(
        "/v2/models/{model_name}/versions/{model_version}/infer",
        summary="Inference (one version)",
        **infer_docs,
    )
    async def infer(request: Request, model_name: str, model_version: str | None = None) -> Response:
        header = request.headers.get(BINARY_HEADER.decode())
        head = InferHead(
            request_id_of(request.scope),
            model_name,
            model_version,
            header.encode("latin-1") if header is not None else None,
            content_length(request),
            request.headers.get("authorization"),
            request.receive,
        )
        status, content, headers = answer(await infer_handler.run(head))
        response = Response(content, status_code=status)
        response.headers.update({k.decode(): v.decode() for k, v in headers})
        return response

    return router
