"""digits-rnn/-lstm/-gru/-transformer: each 8x8 digit read as a sequence of 8 rows of 8 raw pixels."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from training.datasets import digits_rows, load_tabular, split_indices
from training.export import ExportSpec
from training.models import RecurrentClassifier, RecurrentConfig, Servable, Standardize
from training.recipe import Context, Trained, tensor, tensor_spec
from training.recipes.classifier import calibrated_scorer, fit_classifier, logistic_baseline
from training.train import Batch, TrainSettings, minibatches
from training.transformer import TransformerClassifier, TransformerConfig

ROWS = 8


def shifted(images: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Augmentation: move each [8, 8] digit by up to `max_shift` pixels each way (zero fill)."""
    n = images.shape[0]
    pad = nn.functional.pad(images, (max_shift, max_shift, max_shift, max_shift))  # [n, 8+2s, 8+2s]
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen)).unbind(0)
    rows = (dy[:, None] + torch.arange(ROWS)[None, :])[:, :, None]  # [n, 8, 1]
    cols = (dx[:, None] + torch.arange(ROWS)[None, :])[:, None, :]  # [n, 1, 8]
    return pad[torch.arange(n)[:, None, None], rows, cols]


def augmented_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator
) -> Iterator[Batch]:
    for xb, yb in minibatches((x, y), batch_size, gen):
        yield shifted(xb, gen), yb


def train_sequence(
    ctx: Context, cfg: RecurrentConfig | TransformerConfig, settings: TrainSettings, augment: bool = True
) -> Trained:
    data = load_tabular("digits")
    assert data.labels is not None
    x, y = digits_rows(data.x), data.y  # [n, 8, 8] raw 0..16
    split = split_indices(len(y), y, seed=ctx.seed)  # the same split as digits-mlp
    # One mean/std per pixel column, shared by every row, so any sequence length standardizes alike.
    prep = Standardize(tensor(x[split.train].mean(axis=(0, 1))), tensor(x[split.train].std(axis=(0, 1))))
    net: nn.Module = (
        TransformerClassifier(cfg) if isinstance(cfg, TransformerConfig) else RecurrentClassifier(cfg)
    )
    model = nn.Sequential(prep, net)
    xt, yt = tensor(x[split.train]), tensor(y[split.train])
    xv, yv = tensor(x[split.val]), tensor(y[split.val])
    settings = replace(settings, epochs=ctx.scale(settings.epochs, 2), seed=ctx.seed)

    def batches(gen: torch.Generator) -> Iterator[Batch]:
        return (
            augmented_batches(xt, yt, settings.batch_size, gen)
            if augment
            else minibatches((xt, yt), settings.batch_size, gen)
        )

    hist, temperature, val_ece = fit_classifier(
        ctx, model, settings, batches, n_train=len(xt), xv=xv, yv=yv, binary=False
    )
    servable = Servable(net, prep, "multiclass", temperature).eval()
    is_transformer = isinstance(cfg, TransformerConfig)
    spec = ExportSpec(
        ["input"], ["logits", "probabilities"],
        example=(tensor(x[:3]),),
        check=(tensor(x[split.test[:5], 1:7]),),  # batch 5, sequence 6: both differ from the example
        dynamic={"input": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}, "probabilities": {0: "batch"}},
        tolerance=1e-4,
        # nn.RNN loses its dynamic sequence axis under dynamo; the TorchScript exporter keeps it.
        exporter="dynamo" if is_transformer else "legacy",
        max_dims={"sequence": cfg.max_len} if isinstance(cfg, TransformerConfig) else {},
    )  # fmt: skip
    arch: dict[str, Any] = vars(cfg).copy()
    if isinstance(cfg, TransformerConfig):
        arch |= {"type": "transformer_encoder", "pooling": "mean over positions", "norm": "pre-LayerNorm"}
    else:
        arch["type"] = cfg.cell
    manifest = {
        "inputs": [tensor_spec("input", "FP32", [-1, -1, ROWS])],
        "outputs": [tensor_spec("logits", "FP32", [-1, 10]), tensor_spec("probabilities", "FP32", [-1, 10])],
        "labels": data.labels,
        "feature_names": [f"pixel_column_{c}" for c in range(8)],
        "preprocessing": {
            "standardize": {"mean": prep.mean.tolist(), "std": prep.std.tolist(), "per": "pixel column"},
            "in_graph": True,
            "input_layout": "[batch, rows, 8] raw pixels 0..16; a digit is 8 rows, top to bottom",
        },
        "architecture": arch,
        "max_sequence_length": ROWS,  # a digit has 8 rows (and the Transformer's position table 8 entries)
        "split": split.describe() | {"same_as": "digits-mlp"},
        "training": settings.record()
        | {"augmentation": "random shift of up to 1 pixel each way" if augment else None},
    }
    flat_x = data.x
    score = calibrated_scorer(
        x[split.test], y[split.test], temperature, logistic_baseline(flat_x, y, split), val_ece
    )
    return Trained(servable, spec, manifest, hist, score)
