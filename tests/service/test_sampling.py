import numpy as np
import pytest

from service.errors import InvalidInputError
from service.runtime.sampling import SamplingParams, next_token_distribution, sample_next

LOGITS = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))


def draws(params: SamplingParams, n: int, logits: np.ndarray = LOGITS) -> list[int]:
    rng = params.make_rng()
    return [sample_next(logits, params, rng) for _ in range(n)]


def test_greedy_is_argmax_whatever_the_seed() -> None:
    logits = np.array([0.1, 3.0, -2.0, 2.9], dtype=np.float32)
    for seed in (None, 0, 1):
        assert draws(SamplingParams(temperature=0.0, seed=seed, top_k=3), 5, logits) == [1] * 5


def test_same_seed_same_draws_and_different_seeds_differ() -> None:
    a = draws(SamplingParams(temperature=1.0, seed=7), 200)
    b = draws(SamplingParams(temperature=1.0, seed=7), 200)
    c = draws(SamplingParams(temperature=1.0, seed=8), 200)
    assert a == b
    assert a != c


def test_temperature_one_matches_the_softmax() -> None:
    counts = np.bincount(draws(SamplingParams(temperature=1.0, seed=0), 20_000), minlength=4) / 20_000
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.015)


def test_temperature_sharpens_and_flattens() -> None:
    cold = next_token_distribution(LOGITS, SamplingParams(temperature=0.5))
    hot = next_token_distribution(LOGITS, SamplingParams(temperature=5.0))
    assert cold[0] > 0.5 > hot[0]
    assert hot.max() - hot.min() < 0.2
    np.testing.assert_allclose(cold.sum(), 1.0)


def test_top_k_restricts_support() -> None:
    probs = next_token_distribution(LOGITS, SamplingParams(temperature=1.0, top_k=2))
    np.testing.assert_allclose(probs, [0.5 / 0.8, 0.3 / 0.8, 0, 0], atol=1e-6)
    assert set(draws(SamplingParams(temperature=3.0, top_k=2, seed=1), 2000)) == {0, 1}
    assert set(draws(SamplingParams(temperature=3.0, top_k=1, seed=1), 50)) == {0}


@pytest.mark.parametrize(("top_p", "support"), [(0.4, 1), (0.75, 2), (0.85, 3), (1.0, 4)])
def test_top_p_keeps_the_smallest_nucleus(top_p: float, support: int) -> None:
    probs = next_token_distribution(LOGITS, SamplingParams(temperature=1.0, top_p=top_p))
    assert np.count_nonzero(probs) == support
    assert probs[:support].all()
    np.testing.assert_allclose(probs.sum(), 1.0)
    assert set(draws(SamplingParams(temperature=1.0, top_p=top_p, seed=3), 3000)) == set(range(support))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"temperature": float("inf")},
        {"top_k": -1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"seed": -1},
        {"seed": 2**63},
    ],
)
def test_impossible_parameters_are_domain_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        SamplingParams(**kwargs)  # type: ignore[arg-type]


def test_distribution_rejects_non_vector_logits() -> None:
    with pytest.raises(ValueError, match="1-D"):
        next_token_distribution(np.zeros((2, 3)), SamplingParams(temperature=1.0))
