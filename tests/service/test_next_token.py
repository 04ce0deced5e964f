"""Hooks for the text and sequence models in the core: next-token classification, empty sequences."""

import numpy as np
import pytest

from service.errors import InvalidInputError
from service.runtime.postprocess import class_labels, class_scores, top_k_strings
from service.runtime.session import TensorSpec, check_input
from service.runtime.tokenizer import CharTokenizer

VOCAB = ["<pad>", "a", "b", ":"]


def test_language_model_scores_are_the_softmax_of_the_last_position() -> None:
    logits = np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)
    scores = class_scores(logits, "logits", "language_model")
    last = logits[:, -1, :].astype(np.float64)
    expected = np.exp(last) / np.exp(last).sum(axis=1, keepdims=True)
    assert scores.shape == (2, 4)
    np.testing.assert_allclose(scores, expected, rtol=1e-12)


def test_next_token_top_k_is_labelled_with_the_vocabulary() -> None:
    logits = np.log(np.array([[[0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]]], dtype=np.float32))
    labels = class_labels("language_model", None, CharTokenizer(tuple(VOCAB), {"pad": 0}))
    top = top_k_strings(class_scores(logits, "logits", "language_model"), 2, labels)
    (first, second) = top[0]
    assert first.startswith("0.4") and first.endswith(":3::")
    assert float(second.split(":")[0]) == pytest.approx(0.3, rel=1e-6)
    assert second.endswith(":2:b")


def test_labels_of_other_models_are_untouched() -> None:
    assert class_labels("multiclass_classification", ["x", "y"], None) == ["x", "y"]
    assert class_labels("multiclass_classification", None, CharTokenizer(tuple(VOCAB))) is None
    other = np.ones((2, 3, 4))
    assert class_scores(other, "logits", "sequence_classification") is other


def test_empty_sequences_are_refused() -> None:
    spec = TensorSpec("input", "FP32", ("batch", "sequence", 8))
    check_input(spec, "FP32", (3, 1, 8), None, 8)
    with pytest.raises(InvalidInputError, match="sequence is empty"):
        check_input(spec, "FP32", (3, 0, 8), None, 8)
    with pytest.raises(InvalidInputError, match="over the model's maximum of 8"):
        check_input(spec, "FP32", (3, 9, 8), None, 8)
