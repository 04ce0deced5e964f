"""The model browser: `/ui` pages (open, they hold no data) and the read-only routes they read.

- `GET /ui`, `/ui/models/{m}[/versions/{v}]`: one static page (`service/static/ui/index.html`); its ES
  modules fetch everything else with the visitor's key, so the page itself needs none.
- `GET /ui/api/models`: every model version with its card summary (recap topic, task, dataset, test
  metrics against the baseline, ready or the reason, providers). The repository index needs `admin`;
  this listing says only what each model's metadata already says, so it takes the `inference` scope.
- `GET /ui/api/models/{m}[/versions/{v}]`: one version's card: model.json (long lists cut, and said so),
  its live state and tensors.
- `GET /v1/models/{m}[/versions/{v}]/learning_curve.png`: the version folder's learning curve, beside
  samples.png. The file name is fixed: nothing but that one file of a served version is ever opened.

None of this is on the V2 infer path: the front door answers infer before routing reaches these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from service.api import schemas
from service.api.pipeline import Call, Endpoint
from service.api.rest import json_response, serve, serve_server
from service.api.state import AppState
from service.errors import ModelNotFoundError
from service.runtime.model import LoadedModel

PAGE = Path(__file__).resolve().parent.parent / "static" / "ui" / "index.html"
LEARNING_CURVE = "learning_curve.png"
UI_MODELS = Endpoint("ui", "models")
UI_CARD = Endpoint("ui", "card", needs_session=False)
LEARNING_CURVE_PNG = Endpoint("v1", "learning_curve", needs_session=False)
LIST_LIMIT = 32  # a longer list in model.json (test indices, held-out examples) is cut to ...
LIST_KEEP = 12  # ... its first items; the card says how long it was
WHOLE = frozenset({"tokenizer", "labels", "feature_names"})  # what the try-it panels need whole
# The page loads only its own files and talks only to this server.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def trimmed(value: Any, path: str, cuts: dict[str, int]) -> Any:
    """`value` with every list longer than LIST_LIMIT cut to LIST_KEEP items; `cuts` gets path -> length."""
    if isinstance(value, dict):
        return {
            key: item if not path and key in WHOLE else trimmed(item, f"{path}.{key}" if path else key, cuts)
            for key, item in value.items()
        }
    if isinstance(value, list):
        if len(value) > LIST_LIMIT:
            cuts[path] = len(value)
            value = value[:LIST_KEEP]
        return [trimmed(item, f"{path}[{i}]", cuts) for i, item in enumerate(value)]
    return value


def summary(model: LoadedModel) -> dict[str, Any]:
    """One row of the model table."""
    raw = model.manifest.raw
    metrics, architecture = raw.get("metrics"), raw.get("architecture")
    return {
        "name": model.name,
        "version": model.version_str,
        "state": model.state,
        "ready": model.ready,
        "reason": model.status_reason,
        "providers": model.providers,
        "task": model.task,
        "description": model.manifest.description or None,
        "recap_topic": raw.get("recap_topic"),
        "dataset": raw.get("dataset"),
        "architecture": architecture.get("type") if isinstance(architecture, dict) else None,
        "metrics": metrics if isinstance(metrics, dict) else None,
        "labels": model.labels,
        "inputs": [spec.as_metadata() for spec in model.inputs],
    }


def card(state: AppState, model: LoadedModel) -> dict[str, Any]:
    cuts: dict[str, int] = {}
    document = summary(model)
    document.update(
        versions=[m.version_str for m in state.repository.versions(model.name)],
        outputs=[spec.as_metadata() for spec in model.outputs],
        model_json=trimmed(model.manifest.raw, "", cuts) if model.manifest.has_file else None,
        trimmed=cuts,
        learning_curve=(model.path / LEARNING_CURVE).is_file(),
    )
    return document


def build_router(state: AppState) -> APIRouter:
    router = APIRouter(tags=["ui"])
    pipeline, control = state.pipeline, state.control
    page = PAGE.read_bytes()  # once, when the app is built
    errors: dict[int | str, dict[str, Any]] = {code: {"model": schemas.ErrorBody} for code in (401, 403, 404)}

    @router.get("/ui", include_in_schema=False)
    @router.get("/ui/", include_in_schema=False)
    @router.get("/ui/models/{model_name}", include_in_schema=False)
    @router.get("/ui/models/{model_name}/versions/{model_version}", include_in_schema=False)
    async def ui_page() -> Response:
        headers = {"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"}
        return HTMLResponse(page, headers=headers)

    async def models_work(call: Call, _: None) -> Response:
        rows = [summary(model) for model in state.repository.models()]
        # Models on disk that are not in service (explicit mode): listed with the index's reason.
        served = {row["name"] for row in rows}
        for entry in control.index():
            if entry.version is None and entry.name not in served:
                rows.append(
                    {
                        "name": entry.name,
                        "version": None,
                        "state": entry.state,
                        "ready": False,
                        "reason": entry.reason,
                        "providers": [],
                    }
                )
        return json_response({"models": rows})

    @router.get("/ui/api/models", summary="Every model version with its card summary", responses=errors)
    async def ui_models(request: Request) -> Response:
        return await serve_server(pipeline, request, UI_MODELS, models_work, None)

    async def card_work(call: Call, model: LoadedModel, _: None) -> Response:
        return json_response(card(state, model))

    @router.get("/ui/api/models/{model_name}", summary="A model's card", responses=errors)
    @router.get(
        "/ui/api/models/{model_name}/versions/{model_version}",
        summary="A model version's card",
        responses=errors,
    )
    async def ui_card(request: Request, model_name: str, model_version: str | None = None) -> Response:
        return await serve(pipeline, request, UI_CARD, card_work, None)

    async def curve_work(call: Call, model: LoadedModel, _: None) -> Response:
        try:  # a file read, off the event loop (poll mode may remove the folder meanwhile)
            content = await anyio.to_thread.run_sync((model.path / LEARNING_CURVE).read_bytes)
        except (FileNotFoundError, IsADirectoryError) as error:
            missing = f"model {model.name!r} version {model.version} has no {LEARNING_CURVE}"
            raise ModelNotFoundError(missing) from error
        return Response(content, media_type="image/png")

    curve_docs: dict[str, Any] = {
        "responses": {200: {"content": {"image/png": {}}, "description": "PNG"}, **errors},
    }

    @router.get("/v1/models/{model_name}/learning_curve.png", summary="Learning curve", **curve_docs)
    @router.get(
        "/v1/models/{model_name}/versions/{model_version}/learning_curve.png",
        summary="Learning curve (one version)",
        **curve_docs,
    )
    async def learning_curve(request: Request, model_name: str, model_version: str | None = None) -> Response:
        return await serve(pipeline, request, LEARNING_CURVE_PNG, curve_work, None)

    return router
