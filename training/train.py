"""Training loops: a generic mini-batch loop with best-on-validation restore, and the linear model's
hand-written gradient step (the recap's update rule, no autograd)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

Batch = tuple[torch.Tensor, ...]


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    loss: str
    optimizer: str = "adam"  # adam | adamw | sgd
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine (with linear warm-up over the first epoch)
    grad_clip: float | None = None
    seed: int = 0
    select: str = "loss"  # restore the epoch with the best validation "loss" or "metric"
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


@dataclass
class History:
    metric_name: str
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_metric: list[float] = field(default_factory=list)
    best_epoch: int = 0
    x_label: str = "epoch"


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def minibatches(tensors: Batch, batch_size: int, gen: torch.Generator) -> Iterator[Batch]:
    """One shuffled pass over equally long tensors."""
    n = tensors[0].shape[0]
    perm = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        yield tuple(t[idx] for t in tensors)


def _optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.learning_rate, momentum=0.9, weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
    return torch.optim.Adam(params, lr=s.learning_rate, weight_decay=s.weight_decay)


def fit(
    model: nn.Module,
    settings: TrainSettings,
    *,
    batches: Callable[[torch.Generator], Iterator[Batch]],
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    evaluate: Callable[[nn.Module], tuple[float, float]],
    metric_name: str,
    desc: str,
    steps_per_epoch: int,
) -> History:
    """Train for `settings.epochs`; evaluate (val loss, val metric) after each; restore the best epoch."""
    gen = seed_everything(settings.seed)
    opt = _optimizer(model, settings)
    total = max(1, settings.epochs * steps_per_epoch)
    warmup = steps_per_epoch if settings.schedule == "cosine" else 0

    def lr_factor(step: int) -> float:
        if settings.schedule != "cosine":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    hist = History(metric_name)
    best_score, best_state = -math.inf, copy.deepcopy(model.state_dict())
    bar = tqdm(range(settings.epochs), desc=desc, leave=False, disable=None)
    for epoch in bar:
        model.train()
        losses = []
        for batch in batches(gen):
            loss = loss_fn(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            val_loss, val_metric = evaluate(model)
        hist.train_loss.append(float(np.mean(losses)))
        hist.val_loss.append(val_loss)
        hist.val_metric.append(val_metric)
        score = -val_loss if settings.select == "loss" else val_metric
        if score > best_score:
            best_score, best_state, hist.best_epoch = score, copy.deepcopy(model.state_dict()), epoch
        if bar.disable:  # no progress bar (not a TTY): one line per epoch keeps logs informative
            print(
                f"{desc} epoch {epoch + 1}/{settings.epochs}: loss {hist.train_loss[-1]:.4f} "
                f"val {val_loss:.4f} {metric_name} {val_metric:.4f}",
                flush=True,
            )
        bar.set_postfix(
            loss=f"{hist.train_loss[-1]:.4f}", val=f"{val_loss:.4f}", **{metric_name: f"{val_metric:.4f}"}
        )
    model.load_state_dict(best_state)
    model.eval()
    return hist


def fit_linear_gd(
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    settings: TrainSettings,
    desc: str,
) -> History:
    """Mini-batch gradient descent on MSE, written out: for a batch (X, y) of size B,
    e = X w + b - y;  w <- w - lr * (2/B) X^T e;  b <- b - lr * (2/B) sum(e).  Updates in place."""
    gen = seed_everything(settings.seed)
    hist = History("val_mse")
    x, y = train
    bar = tqdm(range(settings.epochs), desc=desc, leave=False, disable=None)
    with torch.no_grad():
        for _ in bar:
            losses = []
            for xb, yb in minibatches((x, y), settings.batch_size, gen):
                err = xb @ weight + bias - yb  # [B, 1]
                losses.append(float((err**2).mean()))
                weight -= settings.learning_rate * (2.0 / len(xb)) * (xb.T @ err)
                bias -= settings.learning_rate * (2.0 / len(xb)) * err.sum(dim=0)
            val_mse = float(((val[0] @ weight + bias - val[1]) ** 2).mean())
            hist.train_loss.append(float(np.mean(losses)))
            hist.val_loss.append(val_mse)
            hist.val_metric.append(val_mse)
    hist.best_epoch = settings.epochs - 1
    return hist
