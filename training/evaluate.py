"""Held-out evaluation of exported models with onnxruntime only (no torch): the numbers in model.json
come from here, and the committed-model tests call the same functions on the committed files."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
from scipy.special import log_softmax

from training import calibrate


@lru_cache(maxsize=16)
def _session(path: str, mtime: float) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = _session(str(path), path.stat().st_mtime)
    return [np.asarray(o) for o in sess.run(None, inputs)]


def run_batched(path: Path, inputs: dict[str, np.ndarray], batch: int = 512) -> list[np.ndarray]:
    n = len(next(iter(inputs.values())))
    parts = [run_onnx(path, {k: v[i : i + batch] for k, v in inputs.items()}) for i in range(0, n, batch)]
    return [np.concatenate(p) for p in zip(*parts, strict=True)]


def regression_metrics(path: Path, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    (pred,) = run_batched(path, {"input": x.astype(np.float32)})
    pred = pred[:, 0].astype(np.float64)
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {"r2": 1.0 - ss_res / ss_tot, "mse": ss_res / len(y), "mae": float(np.mean(np.abs(y - pred)))}


def classifier_outputs(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits, probs = run_batched(path, {"input": x.astype(np.float32)})
    return logits, probs


def classifier_metrics(path: Path, x: np.ndarray, y: np.ndarray, temperature: float) -> dict[str, float]:
    """Accuracy and NLL (from logits / T), plus ECE of the uncalibrated (softmax(logits)) and the graph's
    calibrated probabilities."""
    logits, probs = classifier_outputs(path, x)
    pred = (probs[:, 0] >= 0.5).astype(np.int64) if probs.shape[1] == 1 else probs.argmax(axis=1)
    return {
        "accuracy": float(np.mean(pred == y)),
        "nll": calibrate.nll(logits, y, temperature),
        "ece_before": calibrate.ece(calibrate.probabilities(logits), y),
        "ece_after": calibrate.ece(probs.astype(np.float64), y),
    }


def greedy_decode(path: Path, src: np.ndarray, bos: int, eos: int, max_len: int) -> np.ndarray:
    """Greedy decoding from bos, batched; returns [n, <= max_len] ids without bos (eos kept)."""
    dec = np.full((len(src), 1), bos, dtype=np.int64)
    done = np.zeros(len(src), dtype=bool)
    for _ in range(max_len - 1):
        (logits,) = run_batched(path, {"encoder_input_ids": src, "decoder_input_ids": dec})
        nxt = logits[:, -1].argmax(axis=1).astype(np.int64)
        nxt[done] = eos
        dec = np.concatenate([dec, nxt[:, None]], axis=1)
        done |= nxt == eos
        if done.all():
            break
    return dec[:, 1:]


def lm_bits_per_char(path: Path, ids: np.ndarray, window: int) -> tuple[float, np.ndarray]:
    """Bits per character of a decoder-only LM over `ids`, predicted in non-overlapping windows of
    `window` targets (each target sees up to `window` - 1 preceding tokens of its window). Also returns
    the predicted positions so a baseline can be scored on exactly the same targets."""
    starts = np.arange(0, len(ids) - window - 1, window)
    x = np.stack([ids[s : s + window] for s in starts])
    y = np.stack([ids[s + 1 : s + window + 1] for s in starts])
    total = 0.0
    for i in range(0, len(x), 64):
        (logits,) = run_onnx(path, {"input_ids": x[i : i + 64]})
        lp = log_softmax(logits.astype(np.float64), axis=-1)
        total += float(np.take_along_axis(lp, y[i : i + 64, :, None], axis=-1).sum())
    positions = (starts[:, None] + 1 + np.arange(window)[None, :]).ravel()
    return -total / (y.size * np.log(2.0)), positions


def bigram_log_probs(train_ids: np.ndarray, vocab: int, alpha: float) -> np.ndarray:
    """[vocab, vocab] log P(next | prev) with add-alpha smoothing."""
    counts = np.full((vocab, vocab), alpha, dtype=np.float64)
    np.add.at(counts, (train_ids[:-1], train_ids[1:]), 1.0)
    return np.log(counts / counts.sum(axis=1, keepdims=True))


def bigram_bits_per_char(table: np.ndarray, ids: np.ndarray, positions: np.ndarray) -> float:
    return float(-table[ids[positions - 1], ids[positions]].mean() / np.log(2.0))


def generator_scores(
    generator: Path, classifier: Path, n: int, seed: int, latent_dim: int
) -> dict[str, float]:
    """Sample `n` images from standard-normal noise (numpy seed) and score them with digits-mlp."""
    return image_scores(generator_images(generator, n, seed, latent_dim), classifier)


def generator_images(generator: Path, n: int, seed: int, latent_dim: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)
    (images,) = run_batched(generator, {"noise": noise})
    return images


def image_scores(images: np.ndarray, classifier: Path) -> dict[str, float]:
    _, probs = classifier_outputs(classifier, images)
    counts = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1])
    return {
        "mean_top_class_probability": float(probs.max(axis=1).mean()),
        "classes_covered": int((counts > 0).sum()),
        "smallest_class_share": float(counts.min() / len(images)),
        "pixel_min": float(images.min()),
        "pixel_max": float(images.max()),
    }
