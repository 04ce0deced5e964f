"""The committed model repository: every zoo model is present, self-describing, verified, and meets its
acceptance bar on its recorded held-out split. onnxruntime only: no training, no torch graphs."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from training import calibrate, dates, evaluate, zoo
from training.datasets import digits_rows, load_tabular, split_indices
from training.recipes.classifier import cross_validated_accuracy, logistic_accuracy
from training.recipes.gan import discriminator_test_set
from training.text import CharTokenizer, corpus_from_topics

MODELS = Path(__file__).resolve().parents[2] / "models"
ZOO = [entry.name for entry in zoo.ZOO]
ACCURACY_BARS = {
    "breast-cancer-mlp": 0.96, "iris-mlp": 0.93, "digits-mlp": 0.96, "digits-lstm": 0.95, "digits-gru": 0.95,
    "digits-transformer": 0.95, "digits-rnn": 0.90,
}  # fmt: skip
DATASETS = {"breast-cancer-mlp": "breast_cancer", "iris-mlp": "iris", "digits-mlp": "digits"}
KEYS = {"name", "version", "task", "description", "inputs", "outputs", "preprocessing", "metrics", "split",
        "training", "onnx", "sha256", "recap_topic"}  # fmt: skip


def folder(name: str) -> Path:
    return MODELS / name / "1"


def manifest(name: str) -> dict[str, Any]:
    return json.loads((folder(name) / "model.json").read_text())


@pytest.mark.parametrize("name", ZOO)
def test_model_folder_is_complete_and_self_describing(name: str) -> None:
    m = manifest(name)
    assert set(m) >= KEYS, f"model.json lacks {KEYS - set(m)}"
    assert (m["name"], m["version"]) == (name, 1)
    assert (folder(name) / m["learning_curve"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    onnx_path = folder(name) / "model.onnx"
    assert hashlib.sha256(onnx_path.read_bytes()).hexdigest() == m["sha256"]
    assert not list(folder(name).glob("*.data")), "model.onnx must be self-contained"
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: p.value for p in model.metadata_props}
    assert (meta["name"], meta["version"], meta["task"]) == (name, "1", m["task"])
    assert meta["description"] == m["description"]
    if "labels" in m:
        assert json.loads(meta["labels"]) == m["labels"]
    # Declared tensors match the graph; every -1 axis is a named dim_param.
    graph = {v.name: v for v in [*model.graph.input, *model.graph.output]}
    assert [t["name"] for t in m["inputs"]] == [v.name for v in model.graph.input]
    assert [t["name"] for t in m["outputs"]] == [v.name for v in model.graph.output]
    for spec in [*m["inputs"], *m["outputs"]]:
        dims = graph[spec["name"]].type.tensor_type.shape.dim
        assert len(dims) == len(spec["shape"])
        for declared, dim in zip(spec["shape"], dims, strict=True):
            assert (dim.dim_param != "") if declared == -1 else (dim.dim_value == declared), (spec, dim)
    for tensor_name, axes in m["onnx"]["dynamic_axes"].items():
        got = [d.dim_param for d in graph[tensor_name].type.tensor_type.shape.dim if d.dim_param]
        assert axes == got[: len(axes)]
    if m["task"] in ("sequence_classification", "language_model"):
        assert "sequence" in m["onnx"]["dynamic_axes"][m["inputs"][0]["name"]]


def _classifier_data(name: str, m: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    test = np.array(m["split"]["test_indices"])
    if name.startswith("digits-") and name != "digits-mlp":
        data = load_tabular("digits")
        return digits_rows(data.x)[test], data.y[test]
    data = load_tabular(DATASETS[name])
    return data.x[test], data.y[test]


@pytest.mark.parametrize("name", sorted(ACCURACY_BARS))
def test_classifier_accuracy_and_calibration(name: str) -> None:
    m = manifest(name)
    x, y = _classifier_data(name, m)
    t = m["calibration"]["temperature"]
    got = evaluate.classifier_metrics(folder(name) / "model.onnx", x, y, t)
    assert got["accuracy"] >= ACCURACY_BARS[name]
    assert got["accuracy"] == pytest.approx(m["metrics"]["test"]["accuracy"], abs=1e-9)
    assert got["ece_after"] == pytest.approx(m["calibration"]["ece_after"], abs=1e-5)
    assert 0.0 < m["metrics"]["baseline"]["accuracy"] <= 1.0
    # Temperature scaling minimises validation NLL; on the test rows the NLL must not get worse. ECE over
    # 15 bins of a few hundred rows moves by ~0.005 with the binning alone (digits-mlp: 0.011 to 0.019
    # for 10 to 20 bins at T = 1), so it may not worsen by more than that.
    logits, probs = evaluate.classifier_outputs(folder(name) / "model.onnx", x)
    assert calibrate.nll(logits, y, t) <= calibrate.nll(logits, y, 1.0) + 1e-6
    assert got["ece_after"] <= got["ece_before"] + 0.005
    # probabilities really are softmax/sigmoid(logits / T), computed in the graph
    np.testing.assert_allclose(probs, calibrate.probabilities(logits, t), atol=1e-5)


def test_discriminator_calibration_on_its_recorded_test_set() -> None:
    m = manifest("digits-gan-discriminator")
    gen = manifest("digits-gan-generator")
    x, y = discriminator_test_set(
        load_tabular("digits").x, np.array(m["split"]["test_indices"]),
        folder("digits-gan-generator") / "model.onnx", gen["latent_dim"],
    )  # fmt: skip
    got = evaluate.classifier_metrics(
        folder("digits-gan-discriminator") / "model.onnx", x, y, m["calibration"]["temperature"]
    )
    assert got["ece_after"] <= got["ece_before"] + 1e-6
    assert got["accuracy"] == pytest.approx(m["metrics"]["test"]["accuracy"], abs=1e-9)


def test_linear_regression_matches_closed_form_least_squares() -> None:
    m = manifest("diabetes-linreg")
    data = load_tabular("diabetes")
    test = np.array(m["split"]["test_indices"])
    train = np.setdiff1d(np.arange(len(data.y)), test)
    val_count = m["split"]["n_validation"]
    assert len(train) == m["split"]["n_train"] + val_count
    got = evaluate.regression_metrics(
        folder("diabetes-linreg") / "model.onnx", data.x[test], data.y[test].astype(np.float64)
    )
    # Independent closed form on the recorded training rows (train = all rows not test, not validation).
    split = split_indices(len(data.y), None, seed=m["split"]["seed"])
    assert np.array_equal(split.test, test)
    design = np.c_[data.x[split.train].astype(np.float64), np.ones(len(split.train))]
    coef, *_ = np.linalg.lstsq(design, data.y[split.train].astype(np.float64), rcond=None)
    pred = np.c_[data.x[test].astype(np.float64), np.ones(len(test))] @ coef
    yt = data.y[test].astype(np.float64)
    ls_r2 = 1 - np.sum((yt - pred) ** 2) / np.sum((yt - yt.mean()) ** 2)
    assert abs(got["r2"] - ls_r2) <= 0.03
    assert got["r2"] == pytest.approx(m["metrics"]["test"]["r2"], abs=1e-5)
    assert m["metrics"]["baseline"]["r2"] == pytest.approx(ls_r2, abs=1e-6)


def test_dates_seq2seq_exact_match_on_held_out_dates() -> None:
    m = manifest("dates-seq2seq")
    tok = CharTokenizer.from_manifest(m["tokenizer"])
    pairs = [tuple(p) for p in m["split"]["test_examples"]]
    assert len(pairs) >= 1000
    # Held-out days are never training days (re-derived from the recorded seed).
    days = dates.split_days(seed=m["split"]["seed"])
    assert not set(days.test) & set(days.train)
    test_days = {dt.date.fromisoformat(iso).toordinal() for _, iso in pairs}
    assert test_days <= set(days.test)
    src, _ = dates.encode_pairs(tok, pairs)
    out = evaluate.greedy_decode(
        folder("dates-seq2seq") / "model.onnx", src, tok.id("bos"), tok.id("eos"), m["max_target_length"]
    )
    eos = tok.id("eos")
    texts = [tok.decode(r[: list(r).index(eos)] if eos in r else r) for r in out]
    em = float(np.mean([p == t for p, (_, t) in zip(texts, pairs, strict=True)]))
    assert em >= 0.98
    assert em == pytest.approx(m["metrics"]["test"]["exact_match"], abs=1e-9)


def test_pydoc_gpt_beats_bigram_by_one_bit_per_char() -> None:
    m = manifest("pydoc-gpt")
    tok = CharTokenizer.from_manifest(m["tokenizer"])
    assert set(tok.vocab) >= {chr(c) for c in range(32, 127)} | {"\n"}
    test_ids = np.array([tok.id("bos"), *tok.encode(corpus_from_topics(m["split"]["test_topics"]))])
    bpc, _ = evaluate.lm_bits_per_char(folder("pydoc-gpt") / "model.onnx", test_ids, m["max_sequence_length"])
    assert bpc == pytest.approx(m["metrics"]["test"]["bits_per_char"], abs=1e-4)
    assert bpc <= m["metrics"]["baseline"]["bits_per_char"] - 1.0
    assert (
        m["metrics"]["baseline"]["bits_per_char"] > 3.0
    )  # a real bigram on English-like text, not a strawman


def test_generator_samples_are_confident_digits_of_every_class() -> None:
    m = manifest("digits-gan-generator")
    got = evaluate.generator_scores(
        folder("digits-gan-generator") / "model.onnx", folder("digits-mlp") / "model.onnx", 1000,
        m["metrics"]["test"]["noise_seed"], m["latent_dim"],
    )  # fmt: skip
    assert got["mean_top_class_probability"] >= 0.8
    assert got["classes_covered"] == 10
    assert got["pixel_min"] >= 0.0 and got["pixel_max"] <= 16.0
    assert got["mean_top_class_probability"] == pytest.approx(
        m["metrics"]["test"]["mean_top_class_probability"], abs=1e-4
    )


@pytest.mark.parametrize("name", ZOO)
def test_every_figure_sits_beside_a_baseline(name: str) -> None:
    metrics = manifest(name)["metrics"]
    assert metrics["baseline"]["name"]
    shared = (set(metrics["test"]) & set(metrics["baseline"])) - {"name"}
    assert shared, f"{name}: no metric recorded for both the model and its baseline"


def test_breast_cancer_card_shows_cross_validated_accuracy_of_model_and_baseline() -> None:
    """114 test rows cannot tell the MLP from the baseline (one row is 0.9 %): the card carries repeated
    k-fold accuracy of both on the non-test rows. The baseline's figure is recomputed here."""
    m = manifest("breast-cancer-mlp")
    cv = m["cross_validation"]
    data = load_tabular("breast_cancer")
    split = split_indices(len(data.y), data.y, seed=m["split"]["seed"])
    rows = np.sort(np.r_[split.train, split.val])
    assert cv["rows"] == len(rows) and not set(rows) & set(m["split"]["test_indices"])
    again = cross_validated_accuracy(
        data.y,
        rows,
        {"baseline": logistic_accuracy(data.x, data.y)},
        validation_share=len(split.val) / len(rows),
    )
    assert again["baseline"] == pytest.approx(cv["baseline"], abs=1e-12)
    for who in ("model", "baseline"):
        assert 0.9 < cv[who]["accuracy_mean"] <= 1.0 and 0.0 < cv[who]["accuracy_std"] < 0.05
