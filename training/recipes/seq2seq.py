"""dates-seq2seq: an encoder-decoder Transformer that rewrites human-written dates as ISO dates."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from torch import nn
from torch.nn import functional

from training import dates, evaluate
from training.export import ExportSpec
from training.recipe import Context, Trained, tensor, tensor_spec
from training.train import Batch, TrainSettings, fit, minibatches
from training.transformer import Seq2Seq, TransformerConfig

TEST_EXAMPLES = 1000


def seq2seq_loss(model: nn.Module, batch: Batch, pad: int) -> torch.Tensor:
    src, tgt = batch  # [B, S], [B, T]
    logits = model(src, tgt[:, :-1])  # teacher forcing: [B, T-1, vocab]
    return functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=pad
    )


def greedy(model: Seq2Seq, src: torch.Tensor, bos: int, steps: int) -> torch.Tensor:
    """Greedy decoding in torch (validation); the source is encoded once."""
    dec = torch.full((len(src), 1), bos, dtype=torch.long)
    mem, src_mask = model.encode(src)
    for _ in range(steps):
        nxt = model.decode(dec, mem, src_mask)[:, -1].argmax(dim=-1, keepdim=True)  # [B, 1]
        dec = torch.cat([dec, nxt], dim=1)
    return dec  # [B, 1 + steps]


def trim(ids: torch.Tensor, pad: int) -> torch.Tensor:
    """Drop the all-pad columns on the right: most dates are far shorter than MAX_SOURCE (speed only;
    the padding mask makes the result independent of the width)."""
    width = int((ids != pad).sum(dim=1).max())
    return ids[:, :width]


def until_eos(tok: dates.CharTokenizer, rows: np.ndarray) -> list[str]:
    """Decoded text of each row up to (not including) its first eos."""
    eos = tok.id("eos")
    return [tok.decode(r[: list(r).index(eos)] if eos in r else r) for r in rows]


def field_baseline(train: list[tuple[str, str]], test: list[tuple[str, str]]) -> dict[str, Any]:
    """scikit-learn baseline: one LogisticRegression per field (year, month, day) on character 1-3-grams."""
    vec = CountVectorizer(analyzer="char", ngram_range=(1, 3), lowercase=False)
    x_train, x_test = vec.fit_transform([s for s, _ in train]), vec.transform([s for s, _ in test])
    pred = np.empty((len(test), 3), dtype=object)
    for f in range(3):
        y = [t.split("-")[f] for _, t in train]
        pred[:, f] = LogisticRegression(max_iter=300).fit(x_train, y).predict(x_test)
    iso = ["-".join(row) for row in pred]
    return {
        "name": "LogisticRegression per field (year, month, day) on char 1-3-grams",
        "exact_match": float(np.mean([p == t for p, (_, t) in zip(iso, test, strict=True)])),
        "train_examples": len(train),
    }


def train_seq2seq(ctx: Context, cfg: TransformerConfig, settings: TrainSettings, n_train: int) -> Trained:
    tok = dates.tokenizer()
    pad, bos, eos = tok.id("pad"), tok.id("bos"), tok.id("eos")
    days = dates.split_days(seed=ctx.seed)
    n_train = ctx.scale(n_train, 512)
    train_pairs = dates.examples(days.train, n_train, seed=ctx.seed)
    val_pairs = dates.examples(days.val, ctx.scale(1000, 64), seed=ctx.seed + 1)
    test_pairs = dates.examples(days.test, ctx.scale(TEST_EXAMPLES, 64), seed=ctx.seed + 2)
    (xs, xt), (vs, vt) = (tuple(map(tensor, dates.encode_pairs(tok, p))) for p in (train_pairs, val_pairs))
    cfg = replace(cfg, vocab=len(tok), max_len=dates.MAX_SOURCE, max_target_len=dates.MAX_TARGET, pad_id=pad)
    settings = replace(settings, epochs=ctx.scale(settings.epochs, 1), seed=ctx.seed)
    model = Seq2Seq(cfg)

    def batches(gen: torch.Generator) -> Iterator[Batch]:
        for src, tgt in minibatches((xs, xt), settings.batch_size, gen):
            yield trim(src, pad), trim(tgt, pad)

    def val_eval(m: nn.Module) -> tuple[float, float]:
        loss = float(seq2seq_loss(m, (trim(vs, pad), vt), pad))
        pred = until_eos(tok, greedy(model, trim(vs, pad), bos, dates.MAX_TARGET - 1)[:, 1:].numpy())
        return loss, float(np.mean([p == t for p, (_, t) in zip(pred, val_pairs, strict=True)]))

    hist = fit(
        model,
        settings,
        batches=batches,
        loss_fn=lambda m, b: seq2seq_loss(m, b, pad),
        evaluate=val_eval,
        metric_name="val_exact_match",
        desc=ctx.name,
        steps_per_epoch=-(-n_train // settings.batch_size),
    )
    baseline = field_baseline(train_pairs[: ctx.scale(10000, 256)], test_pairs)

    def score(path: Path) -> dict[str, Any]:
        src, _ = dates.encode_pairs(tok, test_pairs)
        out = evaluate.greedy_decode(path, src, bos, eos, dates.MAX_TARGET)
        em = float(np.mean([p == t for p, (_, t) in zip(until_eos(tok, out), test_pairs, strict=True)]))
        return {"metrics": {"test": {"exact_match": em, "examples": len(test_pairs)}, "baseline": baseline}}

    spec = ExportSpec(
        ["encoder_input_ids", "decoder_input_ids"], ["logits"],
        example=(torch.randint(4, len(tok), (2, 20)), torch.randint(4, len(tok), (2, 5))),
        check=(torch.randint(4, len(tok), (3, 17)), torch.randint(4, len(tok), (3, 8))),
        dynamic={
            "encoder_input_ids": {0: "batch", 1: "source"},
            "decoder_input_ids": {0: "batch", 1: "target"},
            "logits": {0: "batch", 1: "target"},
        },
        tolerance=1e-4, max_dims={"source": dates.MAX_SOURCE, "target": dates.MAX_TARGET},
    )  # fmt: skip
    manifest = {
        "inputs": [
            tensor_spec("encoder_input_ids", "INT64", [-1, -1]),
            tensor_spec("decoder_input_ids", "INT64", [-1, -1]),
        ],
        "outputs": [tensor_spec("logits", "FP32", [-1, -1, len(tok)])],
        "tokenizer": tok.manifest(),
        "max_sequence_length": dates.MAX_SOURCE,
        "max_source_length": dates.MAX_SOURCE,
        "max_target_length": dates.MAX_TARGET,
        "decoding": "greedy: decoder_input_ids starts as [bos]; append the argmax of the last position "
        "until eos; the ISO date is the text before eos (source: no bos/eos; pad only to the right)",
        "preprocessing": {"text": "none: the source characters as typed", "in_graph": False},
        "architecture": {"type": "transformer_encoder_decoder", "norm": "pre-LayerNorm"} | vars(cfg),
        "formats": list(dates.FORMATS),
        "split": {
            "method": f"every day from {dates.FIRST_DAY} to {dates.LAST_DAY} permuted with numpy "
            "default_rng(seed); the first 10% are test days, the next 5% validation days, the rest "
            "training days; examples draw a day and a format uniformly (seeded), so no test day ever "
            "occurs in training, in any format",
            "seed": ctx.seed,
            "n_train_days": len(days.train),
            "n_test_days": len(days.test),
            "n_train_examples": n_train,
            "test_examples_seed": ctx.seed + 2,
            "test_examples": [list(p) for p in test_pairs],
        },
        "training": settings.record()
        | {"n_train_examples": n_train, "loss": "cross_entropy (teacher forcing)"},
    }
    return Trained(model.eval(), spec, manifest, hist, score)
