"""Next-token choice from a logits vector: greedy, temperature, top-k and top-p (nucleus) sampling.

Each request owns a numpy ``Generator`` seeded from its ``seed``, so the same seed gives the same
text whatever else the server is doing. All arithmetic is float64 and the draw is one uniform number
per token against the cumulative distribution, which keeps it reproducible across numpy versions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.errors import InvalidInputError


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token. ``temperature == 0`` is greedy (argmax) and ignores the rest."""

    temperature: float = 0.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1.0: no nucleus cut
    seed: int | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise InvalidInputError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise InvalidInputError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not math.isfinite(self.top_p) or not 0 < self.top_p <= 1:
            raise InvalidInputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise InvalidInputError(f"seed must be in [0, 2**63), got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def make_rng(self) -> np.random.Generator:
        """A fresh generator for one request: seeded if a seed was given, else from OS entropy."""
        return np.random.default_rng(self.seed)


def next_token_distribution(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """Probabilities (float64, sums to 1) after temperature, top-k and top-p; zero outside the cut."""
    if logits.ndim != 1 or logits.size == 0:
        raise ValueError(f"expected a non-empty 1-D logits vector, got shape {logits.shape}")
    scaled = logits.astype(np.float64) / params.temperature
    if params.top_k and params.top_k < scaled.size:
        # Keep the k largest; ties at the threshold are kept too (deterministic, rarely matters).
        threshold = np.partition(scaled, -params.top_k)[-params.top_k]
        scaled = np.where(scaled >= threshold, scaled, -np.inf)
    probs = np.exp(scaled - np.max(scaled))
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        # Smallest prefix whose mass reaches top_p; always at least the most likely token.
        keep = int(np.searchsorted(cumulative, params.top_p, side="left")) + 1
        mask = np.zeros_like(probs, dtype=bool)
        mask[order[:keep]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return probs


def sample_next(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """The next token id for a 1-D logits vector over the vocabulary."""
    if params.greedy:
        return int(np.argmax(logits))
    probs = next_token_distribution(logits, params)
    cumulative = np.cumsum(probs)
    draw = rng.random() * cumulative[-1]
    token = int(np.searchsorted(cumulative, draw, side="right"))
    # Guard against float round-off at the very top and against landing on a zero-probability id.
    token = min(token, probs.size - 1)
    while probs[token] == 0.0 and token > 0:
        token -= 1
    return token
