"""What every recipe returns, and the small helpers the recipes share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training import kv_cache
from training.export import ExportSpec, KVCache
from training.train import History
from training.transformer import TransformerConfig


@dataclass(frozen=True)
class Context:
    name: str
    output: Path  # the model repository root (other models' files are read from here, e.g. digits-mlp)
    quick: bool = False  # few epochs / steps, same code path (tests)
    seed: int = 0

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass
class Trained:
    servable: nn.Module  # eval-mode module that is exported as is
    spec: ExportSpec
    manifest: dict[str, Any]  # task-specific model.json keys (inputs, outputs, labels, split, training...)
    history: History
    evaluate: Callable[[Path], dict[str, Any]]  # model.onnx -> {"metrics": ..., "calibration"?: ...}
    kv_cache: KVCache | None = None  # text models: the KV-cache graphs written beside model.onnx


def tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def tensor_spec(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


def batch_dynamic(*names: str) -> dict[str, dict[int, str]]:
    return {n: {0: "batch"} for n in names}


# KV-cache graphs (text models): the past/present tensors every decoder_with_past.onnx shares.


def cache_specs(cfg: TransformerConfig, names: list[str]) -> list[dict[str, Any]]:
    """model.json specs of pasts or presents: FP32 [batch, heads, length, head_dim]."""
    return [tensor_spec(n, "FP32", [-1, cfg.heads, -1, cfg.d_model // cfg.heads]) for n in names]


def cache_example(cfg: TransformerConfig, gen: torch.Generator, batch: int, past: int) -> list[torch.Tensor]:
    """Random past_padding [B] and pasts [B, heads, P, head_dim] (export example and parity check)."""
    shape = (batch, cfg.heads, past, cfg.d_model // cfg.heads)
    padding = torch.randint(0, past + 1, (batch,), generator=gen)
    return [padding, *(torch.randn(shape, generator=gen) for _ in range(2 * cfg.layers))]


def cache_axes(cfg: TransformerConfig) -> dict[str, dict[int, str]]:
    """Dynamic axes of past_padding, the pasts and the presents."""
    pasts = {n: {0: "batch", 2: "past_sequence"} for n in kv_cache.past_names(cfg.layers)}
    presents = {n: {0: "batch", 2: kv_cache.PRESENT_AXIS} for n in kv_cache.present_names(cfg.layers)}
    return {"past_padding": {0: "batch"}} | pasts | presents
