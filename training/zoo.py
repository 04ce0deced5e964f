"""The zoo: one entry per recap topic, and `build` = train -> export (verified) -> evaluate -> model.json."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from training import plots
from training.export import export, export_cache, sha256
from training.gan import GANConfig
from training.models import RecurrentConfig
from training.recipe import Context, Trained
from training.recipes import gan, seq2seq, sequence, tabular, text
from training.train import TrainSettings
from training.transformer import TransformerConfig

VERSION = 1


@dataclass(frozen=True)
class Entry:
    name: str
    task: str
    recap_topic: str
    dataset: str
    description: str
    train: Callable[[Context], Trained]
    # Zoo models this one reads while it trains (from the output repository): they are built first.
    needs: tuple[str, ...] = ()


def _settings(**kw: Any) -> TrainSettings:
    return TrainSettings(**({"loss": "cross_entropy"} | kw))


def _mlp(
    dataset: str, cfg: dict[str, Any], settings: TrainSettings, cross_validate: bool = False
) -> Callable[[Context], Trained]:
    return partial(
        tabular.train_mlp, dataset=dataset, cfg=cfg, settings=settings, cross_validate=cross_validate
    )


def _recurrent(cell: str, hidden: int, schedule: str, augment: bool) -> Callable[[Context], Trained]:
    settings = _settings(epochs=60, batch_size=32, learning_rate=2e-3, schedule=schedule, grad_clip=1.0)
    return partial(
        sequence.train_sequence, cfg=RecurrentConfig(cell, hidden=hidden), settings=settings, augment=augment
    )


_TRANSFORMER_SETTINGS = {"optimizer": "adamw", "schedule": "cosine", "grad_clip": 1.0}
_ROWS = "sklearn load_digits (rows as a sequence)"
_DIGITS_TEXT = "Handwritten digit 0-9 read row by row by {}: input [batch, rows, 8] raw pixels 0..16."
_GAN_TOPIC = "GAN: generator and discriminator trained adversarially (auxiliary-classifier GAN)"


def _gan(fn: Callable[..., Trained]) -> Callable[[Context], Trained]:
    settings = TrainSettings(epochs=25, batch_size=64, learning_rate=2e-4, loss="acgan", select="metric")
    return partial(fn, cfg=GANConfig(), settings=settings, steps_per_epoch=200)


ZOO: list[Entry] = [
    Entry(
        "diabetes-linreg",
        "regression",
        "linear regression: MSE, mini-batch gradient descent",
        "sklearn load_diabetes",
        "Disease progression one year after baseline from 10 raw clinical features.",
        tabular.train_linreg,
    ),
    Entry(
        "breast-cancer-mlp",
        "binary_classification",
        "MLP: ReLU, dropout, decoupled weight decay, sigmoid output, binary cross-entropy",
        "sklearn load_breast_cancer",
        "Malignant or benign from 30 raw cell-nucleus measurements; probabilities is P(benign).",
        # Chosen by repeated 5-fold CV on the non-test rows only (5 x 3 folds; the model card records
        # the chosen recipe's): checkpoint selection on the 85-row validation accuracy was the main
        # cost (same recipe, select on accuracy: CV 0.966, NLL 0.121; on loss: 0.980, 0.076); batch
        # norm over batches of 32 of 370 rows cost a little more (0.972-0.975 with it). One hidden
        # layer, AdamW weight decay 1e-2, 100 epochs, selection on validation loss.
        _mlp(
            "breast_cancer",
            {"hidden": [16], "activation": "relu", "dropout": 0.2, "batch_norm": False},
            _settings(
                epochs=100,
                batch_size=32,
                learning_rate=5e-4,
                loss="bce",
                optimizer="adamw",
                weight_decay=1e-2,
                select="loss",
            ),
            cross_validate=True,
        ),
    ),
    Entry(
        "iris-mlp",
        "multiclass_classification",
        "MLP: tanh, one-hot labels, softmax output, categorical cross-entropy",
        "sklearn load_iris",
        "Iris species from 4 raw flower measurements (cm).",
        _mlp(
            "iris",
            {"hidden": [16], "activation": "tanh", "dropout": 0.0, "batch_norm": False},
            _settings(epochs=300, batch_size=16, learning_rate=1e-2),
        ),
    ),
    Entry(
        "digits-mlp",
        "multiclass_classification",
        "MLP: Leaky ReLU, batch norm, dropout, softmax output, categorical cross-entropy",
        "sklearn load_digits",
        "Handwritten digit 0-9 from 64 raw pixels (8x8, values 0..16, row-major).",
        _mlp(
            "digits",
            {"hidden": [128, 64], "activation": "leaky_relu", "dropout": 0.2, "batch_norm": True},
            _settings(epochs=100, batch_size=32, learning_rate=1e-3, weight_decay=1e-4),
        ),
    ),
    Entry(
        "digits-rnn",
        "sequence_classification",
        "RNN: recurrence over time steps, tanh cell",
        _ROWS,
        _DIGITS_TEXT.format("a simple (tanh) RNN"),
        _recurrent("rnn", 128, "cosine", augment=False),
    ),
    Entry(
        "digits-lstm",
        "sequence_classification",
        "LSTM: gated memory cell",
        _ROWS,
        _DIGITS_TEXT.format("an LSTM"),
        _recurrent("lstm", 64, "constant", augment=True),
    ),
    Entry(
        "digits-gru",
        "sequence_classification",
        "GRU: gated recurrent unit",
        _ROWS,
        _DIGITS_TEXT.format("a GRU"),
        _recurrent("gru", 64, "constant", augment=True),
    ),
    Entry(
        "digits-transformer",
        "sequence_classification",
        "Transformer, encoder-only: self-attention over the rows, mean pooling",
        _ROWS,
        _DIGITS_TEXT.format("an encoder-only Transformer (each row is a token)"),
        partial(
            sequence.train_sequence,
            cfg=TransformerConfig(d_model=128, heads=4, layers=2, d_ff=256, dropout=0.1, max_len=8),
            settings=_settings(
                epochs=60, batch_size=32, learning_rate=1e-3, weight_decay=1e-2, **_TRANSFORMER_SETTINGS
            ),
        ),
    ),
    Entry(
        "dates-seq2seq",
        "seq2seq",
        "Transformer, encoder-decoder: cross-attention, teacher forcing, greedy decoding",
        "dates generated with datetime (19 formats, 1950-2049)",
        "Rewrites a human-written date (e.g. 'Tue, 5 Mar 2024', 'the 3rd of May 1999', '05.03.2024' "
        "day-first) as an ISO date YYYY-MM-DD; decode greedily from bos until eos.",
        partial(
            seq2seq.train_seq2seq,
            cfg=TransformerConfig(d_model=128, heads=4, layers=2, d_ff=256, dropout=0.1),
            settings=_settings(
                epochs=4,
                batch_size=128,
                learning_rate=1e-3,
                weight_decay=1e-2,
                select="metric",
                **_TRANSFORMER_SETTINGS,
            ),
            n_train=30000,
        ),
    ),
    Entry(
        "pydoc-gpt",
        "language_model",
        "Transformer, decoder-only: causal self-attention, a language model trained on next-token CE",
        "pydoc_data.topics (Python's built-in help texts)",
        "Character-level GPT over Python's help texts; logits for the next character at every position.",
        partial(
            text.train_gpt,
            cfg=TransformerConfig(d_model=128, heads=4, layers=4, d_ff=512, dropout=0.0, max_len=128),
            settings=_settings(
                epochs=15, batch_size=16, learning_rate=3e-3, weight_decay=0.1, **_TRANSFORMER_SETTINGS
            ),
            steps_per_epoch=100,
        ),
    ),
    Entry(
        "digits-gan-generator",
        "generator",
        _GAN_TOPIC,
        "sklearn load_digits (training rows)",
        "Draws 8x8 digits: noise [batch, 32] standard normal -> images [batch, 64] raw pixels 0..16 "
        "(row-major); argmax(noise[:, :10]) picks the digit.",
        _gan(gan.train_generator),
        needs=("digits-mlp",),  # scores the samples: checkpoint selection and the test metric
    ),
    Entry(
        "digits-gan-discriminator",
        "discriminator",
        _GAN_TOPIC,
        "sklearn load_digits (training rows)",
        "The GAN's critic: 64 raw pixels (0..16) -> probability that the image is a real digit.",
        _gan(gan.train_discriminator),
        # The GAN run scores with digits-mlp; the test set holds samples of the exported generator.
        needs=("digits-mlp", "digits-gan-generator"),
    ),
]


def entries() -> dict[str, Entry]:
    return {e.name: e for e in ZOO}


def build_order(names: list[str]) -> list[str]:
    """`names` ordered so that every model comes after the zoo models it needs (those among `names`);
    the zoo's own order breaks ties. An unknown model or a cycle is an error."""
    known = entries()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown model(s) {unknown}; the zoo has {list(known)}")
    wanted, ordered, visiting = set(names), [], set()

    def visit(name: str) -> None:
        if name in ordered:
            return
        if name in visiting:
            raise ValueError(f"the zoo's needs form a cycle through {name}")
        visiting.add(name)
        for need in known[name].needs:
            if need not in known:
                raise KeyError(f"{name} needs {need!r}, which is not in the zoo")
            if need in wanted:
                visit(need)
        visiting.discard(name)
        ordered.append(name)

    for entry in ZOO:
        if entry.name in wanted:
            visit(entry.name)
    return ordered


def check_needs(entry: Entry, output: Path) -> None:
    """Every model `entry` needs is already in the output repository (built before it)."""
    missing = [n for n in entry.needs if not (output / n / str(VERSION) / "model.onnx").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{entry.name} needs {', '.join(missing)} in {output}: build {' and '.join(missing)} first "
            f"(`train --all` orders the zoo by these needs)"
        )


def _json(obj: Any, indent: int = 0) -> str:
    """JSON with one key per line but lists of scalars kept on one line (test indices stay compact)."""
    pad = "  " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{pad}{json.dumps(k)}: {_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(obj, list) and any(isinstance(v, dict | list) for v in obj):
        return "[\n" + ",\n".join(pad + _json(v, indent + 1) for v in obj) + "\n" + "  " * indent + "]"
    return json.dumps(obj)


def build(name: str, output: Path, quick: bool = False, seed: int = 0) -> tuple[dict[str, Any], Trained]:
    """Train one model from scratch and write models/<name>/1/{model.onnx, model.json, learning_curve.png}
    (text models: also their KV-cache graphs, training.kv_cache)."""
    entry = entries()[name]
    check_needs(entry, output)
    start = time.perf_counter()
    torch.manual_seed(seed)
    trained = entry.train(Context(name, output, quick, seed))
    folder = output / name / str(VERSION)
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / "model.onnx"
    labels = trained.manifest.get("labels")
    description = entry.description
    metadata = {"name": name, "version": str(VERSION), "task": entry.task, "description": description,
                "recap_topic": entry.recap_topic}  # fmt: skip
    if labels is not None:
        metadata["labels"] = json.dumps(labels)
    onnx_record = export(trained.servable, trained.spec, onnx_path, metadata)
    kv_record = None if trained.kv_cache is None else export_cache(trained.kv_cache, folder, metadata)
    scores = trained.evaluate(onnx_path)
    plots.learning_curve(trained.history, f"{name}: learning curve", folder / "learning_curve.png")
    manifest: dict[str, Any] = {
        "name": name, "version": VERSION, "task": entry.task, "description": description,
        "recap_topic": entry.recap_topic, "dataset": entry.dataset,
    }  # fmt: skip
    manifest |= trained.manifest
    manifest |= scores
    manifest["training"] = {
        **manifest.get("training", {}),
        "quick": quick,
        "best_epoch": trained.history.best_epoch,
    }
    manifest["training"]["wall_time_s"] = round(time.perf_counter() - start, 1)
    manifest["onnx"] = onnx_record
    if kv_record is not None:
        manifest["kv_cache"] = kv_record
    manifest["learning_curve"] = "learning_curve.png"
    manifest["sha256"] = sha256(onnx_path)
    (folder / "model.json").write_text(_json(manifest) + "\n")
    return manifest, trained
