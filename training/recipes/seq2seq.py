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

from training import dates, evaluate, kv_cache
from training.export import CacheGraph, ExportSpec, KVCache
from training.recipe import Context, Trained, cache_axes, cache_example, cache_specs, tensor, tensor_spec
from training.train import Batch, TrainSettings, fit, minibatches
from training.transformer import Seq2Seq, Seq2SeqDecoderWithPast, Seq2SeqEncoder, TransformerConfig

TEST_EXAMPLES = 1000
CACHE_CHECK_SOURCES = 32  # held-out dates the KV-cache graphs decode against model.onnx


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
    sources = [tok.encode(human) for human, _ in test_pairs[:CACHE_CHECK_SOURCES]]
    return Trained(model.eval(), spec, manifest, hist, score, seq2seq_cache(model, sources, bos, eos))


def encoder_graph(model: Seq2Seq, gen: torch.Generator) -> CacheGraph:
    """encoder.onnx: run once per source; its output is what every decoder step attends to."""
    cfg = model.cfg
    spec = ExportSpec(
        ["encoder_input_ids"], ["encoder_hidden_states"],
        example=(torch.randint(4, cfg.vocab, (2, 20), generator=gen),),
        check=(torch.randint(4, cfg.vocab, (3, 17), generator=gen),),
        dynamic={n: {0: "batch", 1: "source"} for n in ("encoder_input_ids", "encoder_hidden_states")},
        max_dims={"source": cfg.max_len},
    )  # fmt: skip
    return CacheGraph(
        kv_cache.ENCODER_FILE, Seq2SeqEncoder(model).eval(), spec,
        inputs=[tensor_spec("encoder_input_ids", "INT64", [-1, -1])],
        outputs=[tensor_spec("encoder_hidden_states", "FP32", [-1, -1, cfg.d_model])],
    )  # fmt: skip


def decoder_graph(model: Seq2Seq, gen: torch.Generator) -> CacheGraph:
    cfg = model.cfg

    def example(batch: int, source: int, past: int, t: int) -> tuple[torch.Tensor, ...]:
        mask = torch.ones(batch, source, dtype=torch.long)
        mask[0, source // 2 :] = 0  # one row's source is padded
        return (
            torch.randint(4, cfg.vocab, (batch, t), generator=gen),
            torch.randn(batch, source, cfg.d_model, generator=gen),
            mask,
            *cache_example(cfg, gen, batch, past),
        )

    names = ["decoder_input_ids", "encoder_hidden_states", "encoder_attention_mask", "past_padding"]
    source = {0: "batch", 1: "source"}
    spec = ExportSpec(
        names + kv_cache.past_names(cfg.layers), ["logits", *kv_cache.present_names(cfg.layers)],
        example=example(2, 7, 5, 3), check=example(3, 11, 4, 2),
        dynamic={"decoder_input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"},
                 "encoder_hidden_states": source, "encoder_attention_mask": source} | cache_axes(cfg),
    )  # fmt: skip
    inputs = [
        tensor_spec("decoder_input_ids", "INT64", [-1, -1]),
        tensor_spec("encoder_hidden_states", "FP32", [-1, -1, cfg.d_model]),
        tensor_spec("encoder_attention_mask", "INT64", [-1, -1]),
        tensor_spec("past_padding", "INT64", [-1]),
    ]
    outputs = [tensor_spec("logits", "FP32", [-1, -1, cfg.vocab])]
    return CacheGraph(
        kv_cache.DECODER_FILE, Seq2SeqDecoderWithPast(model).eval(), spec,
        inputs=inputs + cache_specs(cfg, kv_cache.past_names(cfg.layers)),
        outputs=outputs + cache_specs(cfg, kv_cache.present_names(cfg.layers)),
    )  # fmt: skip


def seq2seq_cache(model: Seq2Seq, sources: list[list[int]], bos: int, eos: int) -> KVCache:
    """encoder.onnx and decoder_with_past.onnx; the checks decode `sources` (held-out dates)."""
    cfg = model.cfg
    gen = torch.Generator().manual_seed(0)  # its own: the plain graph's examples stay as they were
    graphs = {"decoder": decoder_graph(model, gen), "encoder": encoder_graph(model, gen)}
    shape = kv_cache.CacheShape(cfg.layers, cfg.heads, cfg.d_model // cfg.heads)
    return KVCache(
        shape.layers, shape.heads, shape.head_dim, graphs,
        "the decoder stops at max_target_length positions ('length')",
        verify=lambda folder: kv_cache.seq2seq_checks(
            folder, shape, sources, bos=bos, eos=eos, max_target=cfg.max_target_len
        ),
    )  # fmt: skip
