"""GET /v1/models/{m}[/versions/{v}]/samples.png: a PNG sheet of a generator's images.

Noise comes from a numpy Generator seeded by `seed` (standard normal, [count, latent_dim]), so the same
seed gives the same sheet byte for byte.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api import schemas
from service.api.pipeline import Call, Endpoint
from service.api.rest import serve
from service.api.state import AppState
from service.errors import InvalidInputError, UnsupportedError
from service.runtime.images import encode_png, image_grid
from service.runtime.model import LoadedModel

V1_SAMPLES = Endpoint("v1", "samples")
SEED_MAX = 2**63 - 1
COUNT_MAX = 2**31
SCALE_MAX = 32


def generator_geometry(model: LoadedModel) -> tuple[int, tuple[int, int], tuple[float, float]]:
    """(latent_dim, image_shape, pixel_range) from model.json, else from the graph's input shape."""
    raw = model.manifest.raw
    latent = raw.get("latent_dim")
    if not isinstance(latent, int):
        specs = [s for s in model.inputs if s.name == "noise"]
        dims = specs[0].dims if specs else ()
        latent = dims[-1] if dims and isinstance(dims[-1], int) else None
    shape = raw.get("image_shape", [8, 8])
    pixel_range = raw.get("pixel_range", [0, 16])
    if not isinstance(latent, int) or latent < 1 or len(shape) != 2 or len(pixel_range) != 2:
        raise UnsupportedError(f"model {model.name!r} does not describe its noise and image shapes")
    return latent, (int(shape[0]), int(shape[1])), (float(pixel_range[0]), float(pixel_range[1]))


def render_samples(call: Call, model: LoadedModel, count: int, seed: int | None, scale: int) -> bytes:
    if model.task != "generator":
        raise UnsupportedError(
            f"model {model.name!r} (task {model.task or 'unknown'}) is not an image generator; "
            "samples.png serves models whose task is generator"
        )
    latent, shape, pixel_range = generator_geometry(model)
    noise = np.random.default_rng(seed).standard_normal((count, latent)).astype(np.float32)
    feeds = {"noise": noise}
    model.check_input(model.input_spec("noise"), "FP32", noise.shape)
    model.check_complete(feeds)
    (images,) = call.run_model(model, ["images"], feeds)
    return encode_png(image_grid(images.reshape(count, *shape), pixel_range, scale=scale))


def _query_int(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    """One integer query parameter in [low, high], or its default when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = int(raw) if raw.isdigit() or (raw[:1] == "-" and raw[1:].isdigit()) else None
    if value is None or not low <= value <= high:
        raise InvalidInputError(f"query parameter {name!r} must be an integer from {low} to {high}")
    return value


def _query_parameter(name: str, description: str, default: int | None, low: int, high: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
    if default is not None:
        schema["default"] = default
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def build_router(state: AppState) -> APIRouter:
    router = APIRouter(tags=["v1"])
    pipeline, limit = state.pipeline, state.settings.samples_max_count
    docs: dict[str, Any] = {
        "responses": {
            200: {"content": {"image/png": {}}, "description": "PNG grid"},
            **{code: {"model": schemas.ErrorBody} for code in (400, 404, 503)},
        },
        "openapi_extra": {
            "parameters": [
                _query_parameter("count", f"Images on the sheet (at most {limit}).", 16, 1, limit),
                _query_parameter("seed", "Same seed, same sheet; none: random.", None, 0, SEED_MAX),
                _query_parameter("scale", "Screen pixels per image pixel.", 8, 1, SCALE_MAX),
            ]
        },
    }

    async def work(call: Call, model: LoadedModel, request: Request) -> Response:
        count = _query_int(request, "count", 16, 1, COUNT_MAX)
        if count is not None and count > limit:
            raise InvalidInputError(f"count {count} is over this server's limit of {limit} images")
        seed = _query_int(request, "seed", None, 0, SEED_MAX)
        scale = _query_int(request, "scale", 8, 1, SCALE_MAX)
        assert count is not None and scale is not None
        receive = request.receive
        content = await call.in_thread(render_samples, call, model, count, seed, scale, receive=receive)
        return Response(content, media_type="image/png")

    @router.get("/v1/models/{model_name}/samples.png", summary="Generated samples as a PNG grid", **docs)
    @router.get(
        "/v1/models/{model_name}/versions/{model_version}/samples.png",
        summary="Generated samples as a PNG grid (one version)",
        **docs,
    )
    async def samples(request: Request, model_name: str, model_version: str | None = None) -> Response:
        return await serve(pipeline, request, V1_SAMPLES, work, request)

    return router
