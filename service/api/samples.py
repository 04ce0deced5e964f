"""GET /v1/models/{m}[/versions/{v}]/samples.png: a PNG sheet of a generator's images.

Noise comes from a numpy Generator seeded by `seed` (standard normal, [count, latent_dim]), so the same
seed gives the same sheet byte for byte.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import anyio.to_thread
import numpy as np
from fastapi import APIRouter, Query
from starlette.responses import Response

from service.api import schemas
from service.api.state import AppState
from service.errors import InternalError, InvalidInputError, RecapError, UnsupportedError
from service.runtime.images import encode_png, image_grid
from service.runtime.repository import LoadedModel

log = logging.getLogger(__name__)
Count = Annotated[
    int, Query(ge=1, description="Images on the sheet (at most the server's samples_max_count).")
]
Seed = Annotated[int | None, Query(ge=0, lt=2**63, description="Same seed, same sheet; none: random.")]
Scale = Annotated[int, Query(ge=1, le=32, description="Screen pixels per image pixel.")]


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


def render_samples(model: LoadedModel, count: int, seed: int | None, scale: int) -> bytes:
    model.require_session()
    if model.task != "generator":
        raise UnsupportedError(
            f"model {model.name!r} (task {model.task or 'unknown'}) is not an image generator; "
            "samples.png serves models whose task is generator"
        )
    latent, shape, pixel_range = generator_geometry(model)
    noise = np.random.default_rng(seed).standard_normal((count, latent)).astype(np.float32)
    images = model.run({"noise": noise}, ["images"], checked=True)["images"]
    return encode_png(image_grid(images.reshape(count, *shape), pixel_range, scale=scale))


def build_router(state: AppState) -> APIRouter:
    router = APIRouter(tags=["v1"])
    repository, limit = state.repository, state.settings.samples_max_count
    errors: dict[int | str, dict[str, Any]] = {code: {"model": schemas.ErrorBody} for code in (400, 404, 503)}
    png: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "PNG grid"}}

    async def samples(
        model_name: str, model_version: str | None, count: int, seed: int | None, scale: int
    ) -> Response:
        start = time.perf_counter()
        model = repository.get(model_name, model_version)
        children = model.metrics.protocols["v1"]
        try:
            if count > limit:
                raise InvalidInputError(f"count {count} is over this server's limit of {limit} images")
            content = await anyio.to_thread.run_sync(render_samples, model, count, seed, scale)
        except RecapError as error:
            model.metrics.failure("v1", error.code)
            raise
        except Exception as error:
            log.exception("unexpected error in samples.png for %s", model.name)
            model.metrics.failure("v1", InternalError.code)
            raise InternalError("internal server error") from error
        finally:
            children.requests.inc()
            children.duration.observe(time.perf_counter() - start)
        return Response(content, media_type="image/png")

    @router.get(
        "/v1/models/{model_name}/samples.png",
        summary="Generated samples as a PNG grid",
        responses={**png, **errors},
    )
    async def samples_default(
        model_name: str, count: Count = 16, seed: Seed = None, scale: Scale = 8
    ) -> Response:
        return await samples(model_name, None, count, seed, scale)

    @router.get(
        "/v1/models/{model_name}/versions/{model_version}/samples.png",
        summary="Generated samples as a PNG grid (one version)",
        responses={**png, **errors},
    )
    async def samples_version(
        model_name: str, model_version: str, count: Count = 16, seed: Seed = None, scale: Scale = 8
    ) -> Response:
        return await samples(model_name, model_version, count, seed, scale)

    return router
