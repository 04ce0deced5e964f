"""pydoc-gpt: a decoder-only character language model on the stdlib's pydoc help texts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from training import evaluate, kv_cache
from training.export import CacheGraph, ExportSpec, KVCache
from training.recipe import Context, Trained, cache_axes, cache_example, cache_specs, tensor, tensor_spec
from training.text import CharTokenizer, Corpus, gpt_tokenizer, pydoc_corpus
from training.train import Batch, TrainSettings, fit
from training.transformer import GPT, GPTWithPast, TransformerConfig

BIGRAM_ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0)


def stream(tok: CharTokenizer, text: str) -> np.ndarray:
    """Token ids of a split: topics are separated by a blank line; the split starts with bos."""
    return np.array([tok.id("bos"), *tok.encode(text)], dtype=np.int64)


def windows(ids: np.ndarray, length: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """`count` random windows of `length` + 1 tokens (inputs and shifted targets)."""
    starts = torch.randint(0, len(ids) - length - 1, (count,), generator=gen)
    src = tensor(ids)
    return torch.stack([src[s : s + length + 1] for s in starts.tolist()])


def lm_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    (win,) = batch  # [B, T + 1]
    logits = model(win[:, :-1])  # [B, T, vocab]
    return functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), win[:, 1:].reshape(-1))


def train_gpt(ctx: Context, cfg: TransformerConfig, settings: TrainSettings, steps_per_epoch: int) -> Trained:
    tok = gpt_tokenizer()
    corpus: Corpus = pydoc_corpus()
    train_ids, val_ids, test_ids = (stream(tok, t) for t in (corpus.train, corpus.val, corpus.test))
    cfg = replace(cfg, vocab=len(tok))
    settings = replace(settings, epochs=ctx.scale(settings.epochs, 1), seed=ctx.seed)
    steps = ctx.scale(steps_per_epoch, 3)
    model = GPT(cfg)
    length = cfg.max_len
    # A fixed validation sample, non-overlapping windows from the start of the validation text.
    n_val = ctx.scale(48, 4)
    val = torch.stack([tensor(val_ids[i * length : i * length + length + 1]) for i in range(n_val)])

    def batches(gen: torch.Generator) -> Iterator[Batch]:
        for _ in range(steps):
            yield (windows(train_ids, length, settings.batch_size, gen),)

    def val_eval(m: torch.nn.Module) -> tuple[float, float]:
        loss = float(lm_loss(m, (val,)))
        return loss, loss / float(np.log(2.0))

    hist = fit(
        model,
        settings,
        batches=batches,
        loss_fn=lm_loss,
        evaluate=val_eval,
        metric_name="val_bits_per_char",
        desc=ctx.name,
        steps_per_epoch=steps,
    )
    hist.x_label = f"epoch ({steps} steps of {settings.batch_size} windows)"

    # Baseline: add-alpha bigram counts on the training text, alpha picked on validation.
    val_positions = np.arange(1, len(val_ids))
    alpha = min(
        BIGRAM_ALPHAS,
        key=lambda a: evaluate.bigram_bits_per_char(
            evaluate.bigram_log_probs(train_ids, len(tok), a), val_ids, val_positions
        ),
    )
    table = evaluate.bigram_log_probs(train_ids, len(tok), alpha)

    def score(path: Path) -> dict[str, Any]:
        bpc, positions = evaluate.lm_bits_per_char(path, test_ids, length)
        base = evaluate.bigram_bits_per_char(table, test_ids, positions)
        return {
            "metrics": {
                "test": {"bits_per_char": bpc, "characters": len(positions)},
                "baseline": {"name": f"bigram (add-{alpha} smoothing)", "bits_per_char": base},
                "evaluation": f"non-overlapping windows of {length} targets over the held-out topics; "
                "the bigram is scored on exactly the same target positions",
            }
        }

    spec = ExportSpec(
        ["input_ids"], ["logits"],
        example=(torch.randint(4, len(tok), (2, 16)),),
        check=(torch.randint(4, len(tok), (3, 37)),),
        dynamic={"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}},
        tolerance=1e-4, max_dims={"sequence": length},
    )  # fmt: skip
    manifest = {
        "inputs": [tensor_spec("input_ids", "INT64", [-1, -1])],
        "outputs": [tensor_spec("logits", "FP32", [-1, -1, len(tok)])],
        "labels": list(tok.vocab),
        "tokenizer": tok.manifest(),
        "max_sequence_length": length,
        "preprocessing": {
            "text": "typographic quotes and dashes folded to ASCII, accents stripped, other non-ASCII "
            "dropped; the vocabulary has <unk> (id 3) for anything else a client sends",
            "in_graph": False,
        },
        "architecture": {"type": "gpt", "norm": "pre-LayerNorm", "tied_embeddings": True} | vars(cfg),
        "split": {
            "method": "pydoc_data.topics, sorted keys; topic k -> test if k % 10 == 0, "
            "validation if k % 10 == 5, else training",
            "seed": ctx.seed,
            "test_topics": corpus.test_topics,
            "validation_topics": corpus.val_topics,
            "n_train_chars": len(train_ids),
            "n_validation_chars": len(val_ids),
            "n_test_chars": len(test_ids),
        },
        "training": settings.record() | {"steps_per_epoch": steps, "context": length},
    }
    return Trained(model.eval(), spec, manifest, hist, score, gpt_cache(model, test_ids))


def gpt_cache(model: GPT, text_ids: np.ndarray) -> KVCache:
    """decoder_with_past.onnx; the checks decode from the start of `text_ids` (real text)."""
    cfg = model.cfg
    gen = torch.Generator().manual_seed(0)  # its own: the plain graph's examples stay as they were

    def example(batch: int, past: int, t: int) -> tuple[torch.Tensor, ...]:
        return (torch.randint(4, cfg.vocab, (batch, t), generator=gen), *cache_example(cfg, gen, batch, past))

    names = ["input_ids", "past_padding", *kv_cache.past_names(cfg.layers)]
    spec = ExportSpec(
        names, ["logits", *kv_cache.present_names(cfg.layers)],
        example=example(2, 5, 3), check=example(3, 9, 4),
        dynamic={"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
        | cache_axes(cfg),
    )  # fmt: skip
    inputs = [tensor_spec("input_ids", "INT64", [-1, -1]), tensor_spec("past_padding", "INT64", [-1])]
    outputs = [tensor_spec("logits", "FP32", [-1, -1, cfg.vocab])]
    graph = CacheGraph(
        kv_cache.DECODER_FILE, GPTWithPast(model).eval(), spec,
        inputs=inputs + cache_specs(cfg, kv_cache.past_names(cfg.layers)),
        outputs=outputs + cache_specs(cfg, kv_cache.present_names(cfg.layers)),
    )  # fmt: skip
    shape = kv_cache.CacheShape(cfg.layers, cfg.heads, cfg.d_model // cfg.heads)
    policy = (
        f"past the window of {cfg.max_len} positions the server re-prefills the last {cfg.max_len // 2} "
        "tokens and continues from that cache"
    )
    text = text_ids[: cfg.max_len].tolist()
    return KVCache(
        shape.layers, shape.heads, shape.head_dim, {"decoder": graph}, policy,
        verify=lambda folder: kv_cache.gpt_checks(folder, shape, text, cfg.max_len),
    )  # fmt: skip
