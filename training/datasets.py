"""Offline datasets and reproducible splits (numpy and scikit-learn only: no torch here).

The committed-model tests import this module to re-create each model's held-out split, so it must stay
cheap and must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import datasets as skdatasets
from sklearn.model_selection import train_test_split

TABULAR = ("diabetes", "breast_cancer", "iris", "digits")


@dataclass(frozen=True)
class Tabular:
    """A bundled scikit-learn dataset: raw float32 features, targets, names."""

    name: str
    x: np.ndarray  # [n, features] float32, raw (unscaled)
    y: np.ndarray  # [n] int64 class ids, or float32 targets for regression
    feature_names: list[str]
    labels: list[str] | None  # class names; None for regression


def load_tabular(name: str) -> Tabular:
    """Load one of scikit-learn's bundled datasets (no network)."""
    loaders = {
        "diabetes": lambda: skdatasets.load_diabetes(scaled=False),
        "breast_cancer": skdatasets.load_breast_cancer,
        "iris": skdatasets.load_iris,
        "digits": skdatasets.load_digits,
    }
    if name not in loaders:
        raise KeyError(f"unknown dataset {name!r}; expected one of {sorted(loaders)}")
    bunch: Any = loaders[name]()
    x = np.asarray(bunch.data, dtype=np.float32)
    if name == "diabetes":
        return Tabular(name, x, np.asarray(bunch.target, dtype=np.float32), list(bunch.feature_names), None)
    feature_names = [str(f) for f in getattr(bunch, "feature_names", [])]
    if not feature_names:  # digits has none in older releases
        feature_names = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    labels = [str(t) for t in bunch.target_names]
    return Tabular(name, x, np.asarray(bunch.target, dtype=np.int64), feature_names, labels)


@dataclass(frozen=True)
class Split:
    """Train/validation/test row indices; re-created from (seed, fractions, stratify) alone."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    test_fraction: float
    validation_fraction: float
    stratified: bool

    def describe(self) -> dict[str, Any]:
        """The model.json `split` record (test indices included so tests need no re-derivation)."""
        return {
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "validation_fraction": self.validation_fraction,
            "stratified": self.stratified,
            "method": "sklearn.model_selection.train_test_split twice: test off all rows, "
            "then validation off the rest (fractions of all rows)",
            "n_train": len(self.train),
            "n_validation": len(self.val),
            "n_test": len(self.test),
            "test_indices": [int(i) for i in self.test],
        }


def split_indices(
    n: int,
    y: np.ndarray | None = None,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.15,
) -> Split:
    """Deterministic split; stratified on `y` when given (classification)."""
    idx = np.arange(n)
    rest, test = train_test_split(
        idx, test_size=test_fraction, random_state=seed, stratify=None if y is None else y
    )
    val_size = validation_fraction / (1.0 - test_fraction)
    train, val = train_test_split(
        rest, test_size=val_size, random_state=seed, stratify=None if y is None else y[rest]
    )
    return Split(
        np.sort(train), np.sort(val), np.sort(test), seed, test_fraction, validation_fraction, y is not None
    )


def digits_rows(x: np.ndarray) -> np.ndarray:
    """Flat 64-pixel digits -> [n, 8 rows, 8 pixels] sequences (row-major, raw 0..16)."""
    return x.reshape(-1, 8, 8)
