"""The GAN (samples.png, V2 infer) and the sequence classifiers over real HTTP, against onnxruntime."""

from __future__ import annotations

import io
import math

import httpx
import numpy as np
import orjson
import pytest
from PIL import Image

from tests.helpers.zoo import (
    DISCRIMINATOR,
    GAN,
    SEQUENCE_MODELS,
    manifest,
    require_models,
    session,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SCALE, GUTTER = 8, 4  # the endpoint's defaults


def infer(client: httpx.Client, model: str, name: str, array: np.ndarray) -> dict[str, np.ndarray]:
    datatype = {np.float32: "FP32", np.int64: "INT64"}[array.dtype.type]
    body = {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.ravel().tolist()}
        ]
    }
    response = client.post(f"/v2/models/{model}/infer", content=orjson.dumps(body))
    assert response.status_code == 200, response.text
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]}


@pytest.mark.parametrize(("count", "rows", "columns"), [(16, 4, 4), (10, 3, 4), (1, 1, 1)])
def test_samples_png_is_the_requested_grid_and_repeats_per_seed(
    client: httpx.Client, count: int, rows: int, columns: int
) -> None:
    require_models(GAN)
    spec = manifest(GAN)
    height, width = spec.get("image_shape", [8, 8])
    url = f"/v1/models/{GAN}/samples.png"
    response = client.get(url, params={"count": count, "seed": 7})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(response.content)) as image:
        image.load()
        assert image.format == "PNG"
        sheet = np.asarray(image.convert("L"))
    assert sheet.shape == (
        rows * height * SCALE + (rows + 1) * GUTTER,
        columns * width * SCALE + (columns + 1) * GUTTER,
    )
    assert client.get(url, params={"count": count, "seed": 7}).content == response.content
    assert client.get(url, params={"count": count, "seed": 8}).content != response.content
    # The cells are the generator's images for the seeded noise (ink dark on white).
    noise = np.random.default_rng(7).standard_normal((count, spec["latent_dim"])).astype(np.float32)
    (images,) = session(GAN).run(["images"], {"noise": noise})
    low, high = spec.get("pixel_range", [0, 16])
    grey = np.round(255 * (1 - np.clip((images.astype(np.float64) - low) / (high - low), 0, 1)))
    last = count - 1
    top = GUTTER + (last // columns) * (height * SCALE + GUTTER)
    left = GUTTER + (last % columns) * (width * SCALE + GUTTER)
    cell = sheet[top : top + height * SCALE : SCALE, left : left + width * SCALE : SCALE]
    np.testing.assert_allclose(cell, grey[last].reshape(height, width), atol=1)


def test_gan_generator_and_discriminator_through_v2_infer(client: httpx.Client) -> None:
    require_models(GAN, DISCRIMINATOR)
    noise = np.random.default_rng(0).standard_normal((5, manifest(GAN)["latent_dim"])).astype(np.float32)
    images = infer(client, GAN, "noise", noise)["images"]
    (expected,) = session(GAN).run(["images"], {"noise": noise})
    np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-5)
    assert images.shape == (5, 64)
    real = infer(client, DISCRIMINATOR, "input", images.astype(np.float32))["probabilities"]
    assert real.shape == (5, 1)
    assert ((real >= 0) & (real <= 1)).all()
    (reference,) = session(DISCRIMINATOR).run(["probabilities"], {"input": images.astype(np.float32)})
    np.testing.assert_allclose(real, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_sequence_classifiers_take_any_batch_and_length(client: httpx.Client, name: str) -> None:
    require_models(name)
    limit = manifest(name).get("max_sequence_length", 8)
    rng = np.random.default_rng(0)
    for batch, length in [(1, 8), (3, 5), (2, 1), (4, limit)]:
        rows = rng.integers(0, 17, size=(batch, length, 8)).astype(np.float32)
        probabilities = infer(client, name, "input", rows)["probabilities"]
        (expected,) = session(name).run(["probabilities"], {"input": rows})
        assert probabilities.shape == (batch, 10)
        np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert not math.isnan(float(probabilities.max()))
