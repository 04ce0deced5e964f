"""Turning raw outputs into answers: class scores, Triton-style top-k strings, labelled rankings.

A binary classifier has one output column (P of labels[1], or its logit); for classification it is
widened to two classes, [1 - p, p] or [0, logit] (softmax([0, l]) = [1 - sigmoid(l), sigmoid(l)]), so
that class indices always match `labels`.

A language model's logits are [batch, sequence, vocab]; its classes are the next token: the last
position's logits, softmaxed, labelled with the tokenizer's vocabulary (the characters).
"""

from __future__ import annotations

import numpy as np

from service.runtime.tokenizer import CharTokenizer

BINARY_TASKS = frozenset({"binary_classification", "discriminator"})
NEXT_TOKEN_TASKS = frozenset({"language_model"})


def class_scores(array: np.ndarray, output_name: str, task: str | None) -> np.ndarray:
    """Scores over the classes along the last axis (binary single columns widened to two)."""
    if array.ndim == 0:
        array = array.reshape(1)
    if task in NEXT_TOKEN_TASKS and array.ndim == 3:
        last = array[:, -1, :].astype(np.float64)  # [batch, vocab]: the next token's logits
        exp = np.exp(last - last.max(axis=-1, keepdims=True))
        return exp / exp.sum(axis=-1, keepdims=True)
    if task in BINARY_TASKS and array.shape[-1] == 1:
        column = array.astype(np.float64)
        other = 1.0 - column if output_name == "probabilities" else np.zeros_like(column)
        return np.concatenate([other, column], axis=-1)
    return array


def class_labels(
    task: str | None, labels: list[str] | None, tokenizer: CharTokenizer | None
) -> list[str] | None:
    """The class names: model.json's labels, or a language model's vocabulary (token id = index)."""
    if labels is None and task in NEXT_TOKEN_TASKS and tokenizer is not None:
        return list(tokenizer.vocab)
    return labels


def _label(index: int, labels: list[str] | None, classes: int) -> str | None:
    return labels[index] if labels is not None and len(labels) == classes else None


def _score_text(value: float) -> str:
    return str(np.float32(value))  # shortest text that reads back as the same float32


def top_k_strings(scores: np.ndarray, k: int, labels: list[str] | None) -> np.ndarray:
    """Triton's classification extension: the top k of the last axis as "score:index[:label]"."""
    classes = scores.shape[-1]
    k = min(k, classes)
    order = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
    flat_scores = scores.reshape(-1, classes)
    flat_order = order.reshape(-1, k)
    out = np.empty(flat_order.shape, dtype=np.object_)
    for row in range(flat_order.shape[0]):
        for col in range(k):
            index = int(flat_order[row, col])
            text = f"{_score_text(flat_scores[row, index])}:{index}"
            label = _label(index, labels, classes)
            out[row, col] = text if label is None else f"{text}:{label}"
    return out.reshape((*scores.shape[:-1], k))


def ranked_labels(scores: np.ndarray, labels: list[str] | None) -> list[list[tuple[str, float]]]:
    """Per row, every class as (label, score), best first (labels default to the class index)."""
    rows = scores.reshape(-1, scores.shape[-1])
    classes = rows.shape[1]
    names = labels if labels is not None and len(labels) == classes else [str(i) for i in range(classes)]
    order = np.argsort(-rows, axis=-1, kind="stable")
    return [
        [(names[i], float(row[i])) for i in row_order] for row, row_order in zip(rows, order, strict=True)
    ]
