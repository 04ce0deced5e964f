"""Quick-train every zoo model (few epochs, the same code path as `make models`) into a temporary
repository, then compare onnxruntime with PyTorch at batch sizes and sequence lengths that differ from
both the export example and the exporter's own check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from training import zoo
from training.datasets import load_tabular
from training.recipe import Trained

DIGITS = load_tabular("digits").x
TIGHT = {"diabetes-linreg", "breast-cancer-mlp", "iris-mlp", "digits-mlp"}  # linear model and MLPs


@pytest.fixture(scope="module")
def quick_zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], Trained, Path]]:
    root = tmp_path_factory.mktemp("models")
    built = {}
    for name in zoo.build_order([e.name for e in zoo.ZOO]):  # what a model needs is built before it
        manifest, trained = zoo.build(name, root, quick=True)
        built[name] = (manifest, trained, root / name / "1")
    return built


def _inputs(name: str, manifest: dict[str, Any], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Batch 6 and (for sequences) a length unlike the example's, within the model's tables."""
    specs = manifest["inputs"]
    vocab = len(manifest.get("tokenizer", {}).get("vocab", [])) or 1
    out = []
    for i, spec in enumerate(specs):
        if spec["datatype"] == "INT64":
            length = 11 if i == 0 else 4
            out.append(torch.randint(4, vocab, (6, length), generator=gen))
        elif name == "digits-gan-generator":
            out.append(torch.randn(6, spec["shape"][1], generator=gen))
        elif name.startswith("digits"):  # real digits (6 random ones); sequence models read 5 of the rows
            images = torch.from_numpy(DIGITS[torch.randperm(len(DIGITS), generator=gen)[:6].numpy()])
            out.append(images.reshape(6, 8, 8)[:, 2:7] if len(spec["shape"]) == 3 else images)
    if name in ("diabetes-linreg", "breast-cancer-mlp", "iris-mlp"):
        # Realistic magnitudes: jitter real rows instead of uniform noise on standardized features.
        x = np.array(manifest["preprocessing"]["standardize"]["mean"], dtype=np.float32)
        s = np.array(manifest["preprocessing"]["standardize"]["std"], dtype=np.float32)
        out = [torch.from_numpy(x + s * torch.randn(6, len(x), generator=gen).numpy())]
    return tuple(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", [e.name for e in zoo.ZOO])
def test_onnxruntime_matches_torch(
    name: str, quick_zoo: dict[str, tuple[dict[str, Any], Trained, Path]]
) -> None:
    manifest, trained, folder = quick_zoo[name]
    assert manifest["training"]["quick"] is True
    inputs = _inputs(name, manifest, torch.Generator().manual_seed(1))
    for t, example in zip(inputs, trained.spec.example, strict=True):
        assert t.shape != example.shape  # really a different batch size / sequence length
    trained.servable.eval()
    with torch.no_grad():
        ref = trained.servable(*inputs)
    refs = list(ref) if isinstance(ref, tuple) else [ref]
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {s["name"]: t.numpy() for s, t in zip(manifest["inputs"], inputs, strict=True)})
    tolerance = 1e-5 if name in TIGHT else 1e-4
    for r, g in zip(refs, got, strict=True):
        assert r.shape == g.shape
        # Absolute under 1, relative above: the regression's outputs in the hundreds are 1.5e-5 apart
        # at one float32 step.
        np.testing.assert_allclose(g, r.numpy(), rtol=tolerance, atol=tolerance)
    # The written manifest is the contract the server reads.
    on_disk = json.loads((folder / "model.json").read_text())
    assert on_disk["sha256"] == manifest["sha256"]
    model = onnx.load(str(folder / "model.onnx"))
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "batch"
    if len(dims) > 2 or manifest["inputs"][0]["datatype"] == "INT64":
        assert dims[1] in ("sequence", "source")
