"""Triton's model repository and statistics extensions, as Triton spells them.

- `POST /v2/repository/index` (`{"ready": bool}` optional) -> `[{"name", "version", "state", "reason"}]`;
- `POST /v2/repository/models/{m}/load` and `.../unload`: only with `--model-control-mode explicit`.
  In another mode they answer 400 naming the mode (Triton answers 503 UNAVAILABLE there; a retry
  cannot help, so it is the client's request that is wrong). `{m}` is looked up in the repository's
  listing, never used as a path. A load whose model has no ready version answers 400 with the reason.
- `GET /v2/models/stats`, `/v2/models/{m}/stats`, `/v2/models/{m}/versions/{v}/stats` ->
  `{"model_stats": [...]}` (`service.runtime.stats`).

The repository routes need the `admin` scope, statistics the `metrics` scope (usage data, as /metrics).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api import schemas
from service.api.pipeline import Call, Endpoint
from service.api.rest import json_response, parse_json, serve_server
from service.api.state import AppState
from service.errors import InvalidInputError
from service.runtime.lifecycle import ModelControl
from service.runtime.model import LoadedModel

INDEX = Endpoint("v2", "repository_index", scope="admin")
LOAD = Endpoint("v2", "repository_load", scope="admin")
UNLOAD = Endpoint("v2", "repository_unload", scope="admin")
STATS = Endpoint("v2", "statistics", scope="metrics")
IGNORED_UNLOAD_PARAMETERS = frozenset({"unload_dependents"})  # no ensembles here: nothing depends


async def _options(call: Call, request: Request) -> dict[str, Any]:
    """An optional JSON object body (empty: no options)."""
    body = await call.read_body(request.receive)
    if not bytes(body).strip():
        return {}
    document = parse_json(body)
    if type(document) is not dict:
        raise InvalidInputError("request body must be a JSON object")
    return document


def _parameters(options: dict[str, Any], allowed: frozenset[str]) -> None:
    """Triton's load `parameters` (config or file overrides) are not supported: say so, never ignore."""
    unknown = set(options) - {"parameters"}
    if unknown:
        raise InvalidInputError(f"unknown field {sorted(unknown)[0][:64]!r}; expected only 'parameters'")
    parameters = options.get("parameters") or {}
    if type(parameters) is not dict:
        raise InvalidInputError("'parameters' must be a JSON object")
    unsupported = set(parameters) - allowed
    if unsupported:
        raise InvalidInputError(
            f"parameter {sorted(unsupported)[0][:64]!r} is not supported: models are loaded from the "
            "repository's files as they are"
        )


def _model_rows(control: ModelControl, name: str) -> list[dict[str, str]]:
    return [entry.document() for entry in control.index() if entry.name == name]


def build_router(state: AppState) -> APIRouter:
    router = APIRouter(tags=["repository"])
    control, pipeline, repository = state.control, state.pipeline, state.repository
    state.extensions.extend(["model_repository", "statistics"])
    errors: dict[int | str, dict[str, Any]] = {code: {"model": schemas.ErrorBody} for code in (400, 404)}

    async def index_work(call: Call, request: Request) -> Response:
        options = await _options(call, request)
        ready = options.get("ready", False)
        if type(ready) is not bool or set(options) - {"ready", "repository_name"}:
            raise InvalidInputError('the index takes an optional {"ready": true|false}')
        return json_response([entry.document() for entry in control.index(ready_only=ready)])

    @router.post("/v2/repository/index", summary="Model repository index", responses=errors)
    async def repository_index(request: Request) -> Response:
        return await serve_server(pipeline, request, INDEX, index_work, request)

    async def load_work(call: Call, request: Request) -> Response:
        control.require_explicit("load")
        _parameters(await _options(call, request), frozenset())
        name = request.path_params["model_name"]
        model = await control.load(name)
        return json_response(_model_rows(control, model.name))

    @router.post("/v2/repository/models/{model_name}/load", summary="Load a model", responses=errors)
    async def load(request: Request, model_name: str) -> Response:
        return await serve_server(pipeline, request, LOAD, load_work, request)

    async def unload_work(call: Call, request: Request) -> Response:
        control.require_explicit("unload")
        _parameters(await _options(call, request), IGNORED_UNLOAD_PARAMETERS)
        name = request.path_params["model_name"]
        await control.unload(name)
        return json_response(_model_rows(control, name))

    @router.post("/v2/repository/models/{model_name}/unload", summary="Unload a model", responses=errors)
    async def unload(request: Request, model_name: str) -> Response:
        return await serve_server(pipeline, request, UNLOAD, unload_work, request)

    async def stats_work(call: Call, request: Request) -> Response:
        name = request.path_params.get("model_name")
        version = request.path_params.get("model_version")
        chosen: list[LoadedModel]
        if name is None:
            chosen = repository.models()
        elif version is None:
            chosen = repository.versions(name)
        else:
            chosen = [repository.get(name, version)]
        return json_response({"model_stats": [m.stats.document(m.name, m.version_str) for m in chosen]})

    stats_docs: dict[str, Any] = {"summary": "Inference statistics (Triton)", "responses": errors}

    @router.get("/v2/models/stats", **stats_docs)
    @router.get("/v2/models/{model_name}/stats", **stats_docs)
    @router.get("/v2/models/{model_name}/versions/{model_version}/stats", **stats_docs)
    async def statistics(request: Request) -> Response:
        return await serve_server(pipeline, request, STATS, stats_work, request)

    return router
