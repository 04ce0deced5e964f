"""Real server processes: cuda asked for on a machine without it (strict and fallback); concurrent clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.helpers.onnx_models import classifier, write_model
from tests.helpers.servers import E2E, start_server

pytestmark = pytest.mark.e2e
LABELS = {"task": "multiclass_classification", "labels": ["a", "b", "c"]}


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="checks the behaviour without CUDA"
)
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "fallback"])
def test_cuda_requested_without_a_gpu(tmp_path: Path, strict: bool) -> None:
    repository = tmp_path / "models"
    write_model(repository, "first", classifier(4, 3, seed=1), manifest=LABELS)
    write_model(repository, "second", classifier(4, 3, seed=2), manifest=LABELS)
    env = {"RECAP_PROVIDERS": '["cuda", "cpu"]', "RECAP_STRICT_PROVIDERS": str(strict).lower()}
    server = start_server(repository, tmp_path / "server.log", env=env, wait_path="/v2/health/live")
    try:
        with httpx.Client(base_url=server.url) as client:
            metadata = [client.get(f"/v2/models/{name}").json() for name in ("first", "second")]
            ready = client.get("/v2/health/ready").status_code
    finally:
        server.stop()
    log_lines = [line for line in server.log().splitlines() if "CUDAExecutionProvider" in line]
    if strict:
        assert ready == 503
        for model in metadata:
            assert model["ready"] is False and "strict providers" in model["reason"]
            assert "cuda (CUDAExecutionProvider) was requested" in model["reason"]
    else:
        assert ready == 200
        assert all(m["ready"] and m["providers"] == ["CPUExecutionProvider"] for m in metadata)
        assert len(log_lines) == 1 and "falling back" in log_lines[0]  # once, not once per model


def test_concurrent_requests_each_get_their_own_answer(e2e: E2E) -> None:
    rows = np.random.default_rng(7).normal(size=(200, 4)).astype(np.float32)
    session = ort.InferenceSession(str(e2e.repository / "iris-like" / "2" / "model.onnx"))
    (expected,) = session.run(["probabilities"], {"input": rows})

    async def one(client: httpx.AsyncClient, index: int) -> list[float]:
        body = {
            "id": str(index),
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": rows[index].tolist()}],
            "outputs": [{"name": "probabilities"}],
        }
        if index % 10 == 0:  # bad requests mixed in must not disturb the others
            await client.post("/v2/models/iris-like/infer", json={"inputs": [{"name": "input"}]})
        answer = (await client.post("/v2/models/iris-like/infer", json=body)).json()
        assert answer["id"] == str(index)
        return answer["outputs"][0]["data"]

    async def run_all() -> list[list[float]]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=e2e.server.url, limits=limits, timeout=30) as client:
            return await asyncio.gather(*(one(client, i) for i in range(len(rows))))

    got = np.array(asyncio.run(run_all()), np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-6)
