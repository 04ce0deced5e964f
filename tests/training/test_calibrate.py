"""Temperature scaling and ECE against cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from training import calibrate


def test_fit_temperature_recovers_the_true_temperature() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(20000, 5)) * 2.0
    probs = calibrate.probabilities(true_logits)
    y = np.array([rng.choice(5, p=p) for p in probs])
    # A model that is overconfident by a factor 3 needs T = 3.
    assert calibrate.fit_temperature(true_logits * 3.0, y) == pytest.approx(3.0, rel=0.05)


def test_binary_nll_is_finite_where_float32_sigmoid_saturates() -> None:
    logits = np.array([[40.0], [-40.0]], dtype=np.float32)
    y = np.array([0, 1])  # confidently wrong: the loss must be large, not inf/nan
    assert calibrate.nll(logits, y) == pytest.approx(40.0, rel=1e-6)


def test_ece_is_zero_when_confidence_equals_accuracy_and_large_when_not() -> None:
    probs = np.array([[0.8, 0.2]] * 10)
    y = np.array([0] * 8 + [1] * 2)
    assert calibrate.ece(probs, y) == pytest.approx(0.0, abs=1e-12)
    assert calibrate.ece(np.array([[0.99, 0.01]] * 10), y) == pytest.approx(0.19)
    binary = np.array([[0.9]] * 10)  # P(class 1)
    assert calibrate.ece(binary, np.array([1] * 9 + [0])) == pytest.approx(0.0, abs=1e-12)


def test_a_perfectly_separated_validation_split_keeps_t_at_one() -> None:
    # Every validation row right with a margin: NLL falls all the way to T -> 0, which is no optimum.
    # Adopting it would ship one-hot probabilities (iris-mlp once did, with T = 0.05).
    torch = pytest.importorskip("torch")
    from training.recipes.classifier import fit_calibration  # noqa: PLC0415 (needs torch, skipped without)

    logits = torch.tensor([[4.0, 0.0, -1.0], [0.0, 3.0, 1.0], [-2.0, 0.5, 2.5]] * 10)
    y = np.array([0, 1, 2] * 10)
    fitted = calibrate.fit_temperature(logits.numpy(), y)
    assert not calibrate.is_interior_optimum(logits.numpy(), y, fitted)
    temperature, record = fit_calibration(logits, y)
    assert temperature == 1.0
    assert record["fitted_temperature"] < 0.1  # the search ran towards T_MIN, and was overruled


def test_an_overconfident_model_has_an_interior_optimum() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2000, 4)) * 2.0
    y = np.array([rng.choice(4, p=p) for p in calibrate.probabilities(logits)])
    fitted = calibrate.fit_temperature(logits * 2.0, y)
    assert calibrate.is_interior_optimum(logits * 2.0, y, fitted)
