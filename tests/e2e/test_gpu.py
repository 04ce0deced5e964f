"""On a machine whose onnxruntime offers CUDA: the server runs the models on the GPU (skips elsewhere)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.helpers.onnx_models import build_repository
from tests.helpers.servers import start_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.gpu,
    pytest.mark.skipif(
        "CUDAExecutionProvider" not in ort.get_available_providers(),
        reason="onnxruntime here has no CUDAExecutionProvider (install onnxruntime-gpu on an NVIDIA machine)",
    ),
]


def test_models_run_on_cuda_and_match_the_cpu(tmp_path: Path) -> None:
    repository = build_repository(tmp_path / "models")
    server = start_server(
        repository,
        tmp_path / "server.log",
        env={"RECAP_PROVIDERS": '["cuda", "cpu"]', "RECAP_STRICT_PROVIDERS": "true"},
        wait_path="/v2/health/live",  # the test repository holds broken models on purpose
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            metadata = client.get("/v2/models/iris-like").json()
            assert metadata["ready"], metadata.get("reason")
            assert metadata["providers"][0] == "CUDAExecutionProvider"
            rows = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
            body = {
                "inputs": [{"name": "input", "shape": [16, 4], "datatype": "FP32", "data": rows.tolist()}]
            }
            answer = client.post("/v2/models/iris-like/infer", json=body)
            assert answer.status_code == 200, answer.text
            got = np.array(answer.json()["outputs"][1]["data"], np.float32).reshape(16, 3)
    finally:
        server.stop()
    cpu = ort.InferenceSession(
        str(repository / "iris-like" / "2" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(got, cpu.run(["probabilities"], {"input": rows})[0], atol=1e-5)
