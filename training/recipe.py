"""What every recipe returns, and the small helpers the recipes share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.export import ExportSpec
from training.train import History


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


def tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def tensor_spec(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


def batch_dynamic(*names: str) -> dict[str, dict[int, str]]:
    return {n: {0: "batch"} for n in names}
