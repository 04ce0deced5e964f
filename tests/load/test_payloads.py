"""The committed payloads are what load/make_payloads.py draws, and they fit the models they feed."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest
from sklearn.datasets import load_breast_cancer

from load import make_payloads
from load.catalog import PAYLOAD_DIR, TabularModel, load_models, load_text_scenarios

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"


def _manifest(name: str) -> dict[str, object] | None:
    found = sorted(MODELS.glob(f"{name}/*/model.json"), key=lambda p: int(p.parent.name))
    return json.loads(found[-1].read_text()) if found else None


def test_committed_payloads_are_fresh(tmp_path: Path) -> None:
    """Regenerating gives the same files: the rows and labels follow the datasets and models/."""
    make_payloads.write_all(MODELS, tmp_path)
    for fresh in sorted(tmp_path.glob("*.json")):
        committed = PAYLOAD_DIR / fresh.name
        assert committed.is_file(), f"{fresh.name} missing: run python -m load.make_payloads"
        assert json.loads(committed.read_text()) == json.loads(fresh.read_text()), (
            f"{fresh.name} is stale: run python -m load.make_payloads"
        )


def test_rows_are_real_dataset_rows() -> None:
    data = load_breast_cancer().data.tolist()
    model = next(m for m in load_models() if m.name == "breast-cancer-mlp")
    assert len(model.rows) == make_payloads.ROWS_PER_MODEL
    assert all(row in data for row in model.rows)


@pytest.mark.parametrize("model", load_models(), ids=lambda m: m.name)
def test_payload_fits_the_model(model: object) -> None:
    assert isinstance(model, TabularModel)
    for row in model.rows:
        assert len(model.flat([row])) == math.prod(model.row_shape)
    if model.is_classifier and model.task != "discriminator":
        assert model.labels, f"{model.name}: a classifier needs labels to check answers against"
    manifest = _manifest(model.name)
    if manifest is None:
        pytest.skip(
            f"models/{model.name} is not in this checkout yet; shapes checked against the source only"
        )
    inputs = manifest["inputs"]
    assert isinstance(inputs, list)
    assert inputs[0]["name"] == model.input_name
    assert inputs[0]["shape"][1:] in (model.row_shape, [-1, *model.row_shape[1:]])
    assert model.labels == [str(label) for label in manifest.get("labels") or []]  # type: ignore[attr-defined]
    outputs = manifest["outputs"]
    assert isinstance(outputs, list)
    assert model.output in {o["name"] for o in outputs}


def test_prompts_use_the_model_vocabulary_and_greedy_answers_are_right() -> None:
    scenarios = load_text_scenarios()
    assert {s.model for s in scenarios} == set(make_payloads.TEXT_MODELS)
    for scenario in scenarios:
        assert 0 < scenario.max_tokens <= 64
        assert scenario.prompts and all(scenario.prompts), f"{scenario.model}: empty prompt list or prompt"
        manifest = _manifest(scenario.model)
        if manifest is None:
            continue
        tokenizer = manifest.get("tokenizer")
        assert isinstance(tokenizer, dict), f"{scenario.model}: a text model's model.json has a tokenizer"
        vocab = set(tokenizer["vocab"])
        for text in scenario.prompts:
            unknown = sorted(set(text) - vocab)
            assert not unknown, f"{scenario.model}: {text!r} has characters outside the vocabulary: {unknown}"
        if scenario.temperature == 0:
            # A greedy scenario's answers are the ground truth (the ISO dates), not the model's output.
            assert scenario.expected.keys() == set(scenario.prompts)
            for prompt, answer in scenario.expected.items():
                assert dt.date.fromisoformat(answer).isoformat() == answer, prompt
                assert set(answer) <= scenario.characters
        else:
            assert not scenario.expected
