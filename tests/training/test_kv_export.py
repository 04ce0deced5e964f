"""The cached forward (training.transformer's *WithPast wrappers) against the plain forward in torch,
on tiny random models, and the exporter's KV-cache step: graphs written, every axis named, the checks
enforced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from training import kv_cache
from training.export import ExportError, ExportSpec, KVCache, export, export_cache
from training.recipes.text import gpt_cache
from training.transformer import (
    GPT,
    GPTWithPast,
    Seq2Seq,
    Seq2SeqDecoderWithPast,
    Seq2SeqEncoder,
    TransformerConfig,
)

CFG = TransformerConfig(d_model=16, heads=2, layers=2, d_ff=32, dropout=0.0, max_len=32, vocab=12)


def empty(cfg: TransformerConfig, batch: int = 1) -> list[torch.Tensor]:
    return [torch.zeros(batch, cfg.heads, 0, cfg.d_model // cfg.heads) for _ in range(2 * cfg.layers)]


def no_padding(batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, dtype=torch.long)


@pytest.fixture
def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(CFG).eval()


@torch.no_grad()
def test_gpt_prefill_and_single_token_steps_give_the_full_forward(gpt: GPT) -> None:
    ids = torch.randint(4, CFG.vocab, (2, 20))
    full = gpt(ids)
    cached = GPTWithPast(gpt)
    logits, *past = cached(ids[:, :7], no_padding(2), *empty(CFG, 2))  # prefill: past_sequence 0
    torch.testing.assert_close(logits, full[:, :7], atol=1e-5, rtol=0)
    for i in range(7, 20):
        logits, *past = cached(ids[:, i : i + 1], no_padding(2), *past)
        torch.testing.assert_close(logits[:, 0], full[:, i], atol=1e-5, rtol=0)
    assert past[0].shape == (2, CFG.heads, 20, CFG.d_model // CFG.heads)


@torch.no_grad()
def test_gpt_padding_columns_are_ignored_whatever_they_hold(gpt: GPT) -> None:
    ids = torch.randint(4, CFG.vocab, (1, 6))
    cached = GPTWithPast(gpt)
    _, *past = cached(ids[:, :5], no_padding(), *empty(CFG))
    alone = cached(ids[:, 5:], no_padding(), *past)[0]
    junk = [torch.cat([torch.randn(1, CFG.heads, 4, CFG.d_model // CFG.heads) * 100, p], dim=2) for p in past]
    padded = cached(ids[:, 5:], torch.tensor([4]), *junk)[0]  # 4 junk columns, then the row's 5
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)


@torch.no_grad()
def test_seq2seq_cached_decoder_gives_decode_with_padded_sources() -> None:
    torch.manual_seed(0)
    cfg = TransformerConfig(d_model=16, heads=2, layers=2, d_ff=32, dropout=0.0, max_len=24, vocab=12,
                            max_target_len=8)  # fmt: skip
    model = Seq2Seq(cfg).eval()
    src = torch.randint(4, cfg.vocab, (1, 9))
    tgt = torch.randint(4, cfg.vocab, (1, 6))
    full = model(src, tgt)
    states = Seq2SeqEncoder(model)(src)
    torch.testing.assert_close(states, model.encode(src)[0])
    # The server right-pads sources with zeros in the states and the mask.
    padded = torch.cat([states, torch.zeros(1, 4, cfg.d_model)], dim=1)
    mask = torch.tensor([[1] * 9 + [0] * 4])
    decoder = Seq2SeqDecoderWithPast(model)
    logits, *past = decoder(tgt[:, :3], padded, mask, no_padding(), *empty(cfg))
    torch.testing.assert_close(logits, full[:, :3], atol=1e-5, rtol=0)
    for i in range(3, 6):
        logits, *past = decoder(tgt[:, i : i + 1], padded, mask, no_padding(), *past)
        torch.testing.assert_close(logits[:, 0], full[:, i], atol=1e-5, rtol=0)


def test_a_cached_decode_that_differs_is_refused(tmp_path: Path) -> None:
    def verify(folder: Path) -> dict[str, dict[str, Any]]:
        return {"greedy": {"tokens_equal": False, "max_abs_diff": 0.0}}

    with pytest.raises(ExportError, match="other tokens"):
        export_cache(KVCache(1, 1, 1, {}, "", verify), tmp_path, {})
    drift = KVCache(1, 1, 1, {}, "", lambda folder: {"batched": {"max_abs_diff": 1e-3}})
    with pytest.raises(ExportError, match="batched: logits differ"):
        export_cache(drift, tmp_path, {})


@pytest.mark.slow
def test_a_tiny_gpts_cache_graph_is_exported_named_and_checked(gpt: GPT, tmp_path: Path) -> None:
    ids = {"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    example, check = torch.randint(4, CFG.vocab, (2, 16)), torch.randint(4, CFG.vocab, (3, 9))
    plain = ExportSpec(
        ["input_ids"], ["logits"], (example,), (check,), ids, max_dims={"sequence": CFG.max_len}
    )
    export(gpt, plain, tmp_path / "model.onnx", {"name": "tiny"})
    record = export_cache(gpt_cache(gpt, np.arange(1, 60) % CFG.vocab), tmp_path, {"name": "tiny"})
    json.dumps(record)  # model.json material
    assert list(record["graphs"]) == ["decoder"]
    assert record["checks"]["greedy"]["tokens"] == CFG.max_len - 8 + 1  # prefill 8, then fill the table
    model = onnx.load(str(tmp_path / kv_cache.DECODER_FILE))
    present = model.graph.output[1].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in present] == ["batch", 2, kv_cache.PRESENT_AXIS, 8]
