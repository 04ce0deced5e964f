"""Temperature scaling (fit T on validation logits by minimising NLL) and expected calibration error.

Everything is computed from logits with log-sum-exp: onnxruntime's float32 sigmoid saturates to exactly
0/1 beyond |z| > 15.8, so log-probabilities taken from probabilities would be -inf."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_expit, log_softmax, softmax

ECE_BINS = 15
# Search range of the temperature. On a perfectly separated validation split the NLL keeps falling as
# T -> 0 (down to float underflow), so the search ends near T_MIN without finding a real optimum.
T_MIN, T_MAX = 0.05, 20.0


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of labels `y` under logits / T ([n, 1] binary or [n, C])."""
    z = logits.astype(np.float64) / temperature
    if z.shape[1] == 1:
        z = z[:, 0]
        return float(-np.mean(np.where(y == 1, log_expit(z), log_expit(-z))))
    return float(-np.mean(log_softmax(z, axis=1)[np.arange(len(y)), y]))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """argmin_T NLL(logits / T), searched over log T in [log T_MIN, log T_MAX]."""
    res = minimize_scalar(
        lambda log_t: nll(logits, y, float(np.exp(log_t))),
        bounds=(np.log(T_MIN), np.log(T_MAX)),
        method="bounded",
    )
    return float(np.exp(res.x))


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    return 1.0 / (1.0 + np.exp(-z)) if z.shape[1] == 1 else softmax(z, axis=1)


def ece(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-class confidence, equal-width bins over [0, 1]."""
    if probs.shape[1] == 1:
        p = probs[:, 0]
        pred = (p >= 0.5).astype(np.int64)
        conf = np.where(pred == 1, p, 1.0 - p)
    else:
        pred, conf = probs.argmax(axis=1), probs.max(axis=1)
    correct = (pred == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total)


def is_interior_optimum(logits: np.ndarray, y: np.ndarray, temperature: float) -> bool:
    """True when the NLL at `temperature` is strictly below the NLL at both ends of the search range,
    i.e. the validation data really pin T down (False for a monotone or underflowed-flat NLL)."""
    at_t = nll(logits, y, temperature)
    return min(nll(logits, y, T_MIN), nll(logits, y, T_MAX)) > at_t + 1e-9
