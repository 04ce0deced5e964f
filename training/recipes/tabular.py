"""diabetes-linreg and the MLP classifiers (breast-cancer, iris, digits) on scikit-learn's bundled sets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training import evaluate
from training.datasets import load_tabular, split_indices
from training.export import ExportSpec
from training.models import MLP, LinearConfig, LinearRegression, MLPConfig, Servable, Standardize
from training.recipe import Context, Trained, batch_dynamic, tensor, tensor_spec
from training.recipes.classifier import (
    calibrated_scorer,
    cross_validated_accuracy,
    fit_classifier,
    logistic_accuracy,
    logistic_baseline,
    network_accuracy,
)
from training.train import TrainSettings, fit_linear_gd, minibatches


def _standardizer(x_train: np.ndarray) -> Standardize:
    return Standardize(tensor(x_train.mean(axis=0)), tensor(x_train.std(axis=0)))


def train_linreg(ctx: Context) -> Trained:
    data = load_tabular("diabetes")
    split = split_indices(len(data.y), None, seed=ctx.seed)
    x, y = data.x, data.y.astype(np.float32)
    prep = _standardizer(x[split.train])
    y_mean, y_std = float(y[split.train].mean()), float(y[split.train].std())

    def zy(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return prep(tensor(x[idx])), tensor((y[idx, None] - y_mean) / y_std)

    model = LinearRegression(LinearConfig(x.shape[1]))
    settings = TrainSettings(
        epochs=ctx.scale(300, 5),
        seed=ctx.seed,
        batch_size=32,
        learning_rate=0.01,
        loss="mse",
        optimizer="minibatch_gd",
    )
    hist = fit_linear_gd(
        model.weight.data,
        model.bias.data,
        train=zy(split.train),
        val=zy(split.val),
        settings=settings,
        desc=ctx.name,
    )
    servable = Servable(model, prep, "regression", target_scale=(y_mean, y_std)).eval()

    # Baseline: closed-form least squares on the same training rows.
    design = np.c_[x[split.train].astype(np.float64), np.ones(len(split.train))]
    coef, *_ = np.linalg.lstsq(design, y[split.train].astype(np.float64), rcond=None)
    ls_pred = np.c_[x[split.test].astype(np.float64), np.ones(len(split.test))] @ coef
    y_test = y[split.test].astype(np.float64)
    ls_r2 = 1.0 - np.sum((y_test - ls_pred) ** 2) / np.sum((y_test - y_test.mean()) ** 2)

    def score(path: Path) -> dict[str, Any]:
        test = evaluate.regression_metrics(path, x[split.test], y_test)
        return {
            "metrics": {"test": test, "baseline": {"name": "least squares (closed form)", "r2": float(ls_r2)}}
        }

    spec = ExportSpec(
        ["input"], ["prediction"], (tensor(x[:4]),), (tensor(x[split.test[:7]]),),
        batch_dynamic("input", "prediction"), tolerance=1e-5,
    )  # fmt: skip
    manifest = {
        "inputs": [tensor_spec("input", "FP32", [-1, x.shape[1]])],
        "outputs": [tensor_spec("prediction", "FP32", [-1, 1])],
        "feature_names": data.feature_names,
        "preprocessing": _prep_record(prep, target=(y_mean, y_std)),
        "architecture": {"type": "linear", "n_features": x.shape[1]},
        "split": split.describe(),
        "training": settings.record()
        | {"update_rule": "w <- w - lr * (2/B) X^T (X w + b - y); b <- b - lr * (2/B) sum(X w + b - y)"},
    }
    return Trained(servable, spec, manifest, hist, score)


def _prep_record(prep: Standardize, target: tuple[float, float] | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "standardize": {"mean": prep.mean.tolist(), "std": prep.std.tolist()},
        "in_graph": True,
    }
    if target is not None:
        rec["target_standardize"] = {"mean": target[0], "std": target[1], "note": "undone in the graph"}
    return rec


def train_mlp(
    ctx: Context, dataset: str, cfg: dict[str, Any], settings: TrainSettings, cross_validate: bool = False
) -> Trained:
    """An MLP classifier with the standardisation in its graph; `cross_validate` also records the
    repeated k-fold accuracy of the recipe and of the baseline on the non-test rows (model card)."""
    data = load_tabular(dataset)
    assert data.labels is not None
    x, y = data.x, data.y
    split = split_indices(len(y), y, seed=ctx.seed)
    binary = len(data.labels) == 2
    out_dim = 1 if binary else len(data.labels)
    mlp = MLPConfig(n_features=x.shape[1], n_outputs=out_dim, **cfg)
    prep, net = _standardizer(x[split.train]), MLP(mlp)
    model = nn.Sequential(prep, net)
    xt, yt = tensor(x[split.train]), tensor(y[split.train])
    xv, yv = tensor(x[split.val]), tensor(y[split.val])
    settings = replace(settings, epochs=ctx.scale(settings.epochs, 3), seed=ctx.seed)
    hist, temperature, val_ece = fit_classifier(
        ctx,
        model,
        settings,
        lambda g: minibatches((xt, yt), settings.batch_size, g),
        n_train=len(xt),
        xv=xv,
        yv=yv,
        binary=binary,
    )
    servable = Servable(net, prep, "binary" if binary else "multiclass", temperature).eval()
    spec = ExportSpec(
        ["input"], ["logits", "probabilities"], (tensor(x[:4]),), (tensor(x[split.test[:7]]),),
        batch_dynamic("input", "logits", "probabilities"), tolerance=1e-5,
    )  # fmt: skip
    manifest = {
        "inputs": [tensor_spec("input", "FP32", [-1, x.shape[1]])],
        "outputs": [
            tensor_spec("logits", "FP32", [-1, out_dim]),
            tensor_spec("probabilities", "FP32", [-1, out_dim]),
        ],
        "labels": data.labels,
        "feature_names": data.feature_names,
        "preprocessing": _prep_record(prep),
        "architecture": {"type": "mlp", **cfg},
        "split": split.describe(),
        "training": settings.record(),
    }
    if cross_validate:
        scorers = {
            "model": network_accuracy(
                ctx,
                x,
                y,
                lambda rows: nn.Sequential(_standardizer(x[rows]), MLP(mlp)),
                settings,
                binary=binary,
            ),
            "baseline": logistic_accuracy(x, y),
        }
        rows = np.sort(np.r_[split.train, split.val])
        manifest["cross_validation"] = cross_validated_accuracy(
            y, rows, scorers, validation_share=len(split.val) / len(rows), repeats=ctx.scale(3, 1)
        )
    score = calibrated_scorer(
        x[split.test], y[split.test], temperature, logistic_baseline(x, y, split), val_ece
    )
    return Trained(servable, spec, manifest, hist, score)
