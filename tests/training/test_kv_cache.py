"""The committed text models' KV-cache graphs (decoder_with_past.onnx, and encoder.onnx for seq2seq):
listed in model.json with their sha256, every dynamic axis named, and decoding through the cache gives
the plain graph's tokens and logits. onnxruntime only, on the committed files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from training import kv_cache
from training.evaluate import run_onnx
from training.kv_cache import CacheShape, decoder_step, greedy_cached, greedy_full
from training.text import CharTokenizer, corpus_from_topics

MODELS = Path(__file__).resolve().parents[2] / "models"
TEXT_MODELS = ["pydoc-gpt", "dates-seq2seq"]
GRAPHS = {"pydoc-gpt": {"decoder"}, "dates-seq2seq": {"decoder", "encoder"}}
DIM_PARAMS = {"batch", "sequence", "past_sequence", kv_cache.PRESENT_AXIS, "source"}
TOLERANCE = 1e-4


def folder(name: str) -> Path:
    return MODELS / name / "1"


def manifest(name: str) -> dict[str, Any]:
    return json.loads((folder(name) / "model.json").read_text())


def gpt_text() -> list[int]:
    """The held-out text's first tokens (it starts with bos)."""
    m = manifest("pydoc-gpt")
    tok = CharTokenizer.from_manifest(m["tokenizer"])
    return [tok.id("bos"), *tok.encode(corpus_from_topics(m["split"]["test_topics"])[:200])]


def dims(value: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_cache_graphs_are_listed_with_sha256_and_their_declared_tensors(name: str) -> None:
    kv = manifest(name)["kv_cache"]
    assert set(kv["graphs"]) == GRAPHS[name]
    assert kv["window_policy"]
    for role, graph in kv["graphs"].items():
        path = folder(name) / graph["file"]
        assert graph["file"] == {"decoder": kv_cache.DECODER_FILE, "encoder": kv_cache.ENCODER_FILE}[role]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == graph["sha256"]
        assert graph["parity_max_abs_diff"] <= TOLERANCE
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert {p.key: p.value for p in model.metadata_props}["name"] == name
        values = {v.name: v for v in [*model.graph.input, *model.graph.output]}
        assert [t["name"] for t in graph["inputs"]] == [v.name for v in model.graph.input]
        assert [t["name"] for t in graph["outputs"]] == [v.name for v in model.graph.output]
        for spec in [*graph["inputs"], *graph["outputs"]]:
            got = dims(values[spec["name"]])
            assert len(got) == len(spec["shape"]), spec
            for declared, dim in zip(spec["shape"], got, strict=True):
                assert dim in DIM_PARAMS if declared == -1 else dim == declared, (spec, got)
    assert not list(folder(name).glob("*.data")), "every graph is self-contained"


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_every_dynamic_axis_has_the_contract_name(name: str) -> None:
    kv = manifest(name)["kv_cache"]
    model = onnx.load(str(folder(name) / kv_cache.DECODER_FILE))
    values = {v.name: dims(v) for v in [*model.graph.input, *model.graph.output]}
    tokens = "input_ids" if name == "pydoc-gpt" else "decoder_input_ids"
    assert values[tokens] == ["batch", "sequence"]
    assert values["past_padding"] == ["batch"]
    assert values["logits"][:2] == ["batch", "sequence"]
    hd = (kv["heads"], kv["head_dim"])
    for past, present in zip(
        kv_cache.past_names(kv["layers"]), kv_cache.present_names(kv["layers"]), strict=True
    ):
        assert values[past] == ["batch", hd[0], "past_sequence", hd[1]]
        assert values[present] == ["batch", hd[0], kv_cache.PRESENT_AXIS, hd[1]]
    if name == "dates-seq2seq":
        d_model = manifest(name)["architecture"]["d_model"]
        assert values["encoder_hidden_states"] == ["batch", "source", d_model]
        assert values["encoder_attention_mask"] == ["batch", "source"]
        encoder = onnx.load(str(folder(name) / kv_cache.ENCODER_FILE))
        assert [dims(v) for v in encoder.graph.input] == [["batch", "source"]]
        assert [dims(v) for v in encoder.graph.output] == [["batch", "source", d_model]]


def test_the_plain_graphs_keep_their_inputs() -> None:
    """model.onnx is untouched: V2 infer still sends input_ids alone (and the seq2seq pair)."""
    for name, inputs in (
        ("pydoc-gpt", ["input_ids"]),
        ("dates-seq2seq", ["encoder_input_ids", "decoder_input_ids"]),
    ):
        model = onnx.load(str(folder(name) / "model.onnx"))
        assert [v.name for v in model.graph.input] == inputs
        assert [v.name for v in model.graph.output] == ["logits"]


def test_window_policies_name_the_tables() -> None:
    gpt, s2s = manifest("pydoc-gpt"), manifest("dates-seq2seq")
    window = gpt["max_sequence_length"]
    assert gpt["kv_cache"]["window_policy"] == (
        f"past the window of {window} positions the server re-prefills the last {window // 2} tokens and "
        "continues from that cache"
    )
    assert s2s["kv_cache"]["window_policy"] == "the decoder stops at max_target_length positions ('length')"


def test_pydoc_gpt_prefill_with_an_empty_past_matches_the_plain_graph() -> None:
    shape = CacheShape.of(manifest("pydoc-gpt"))
    prompt = gpt_text()[:30]
    (whole,) = run_onnx(folder("pydoc-gpt") / "model.onnx", {"input_ids": np.array([prompt])})
    step = decoder_step(folder("pydoc-gpt") / kv_cache.DECODER_FILE, "input_ids")
    logits, present = step(np.array([prompt]), np.zeros(1, dtype=np.int64), shape.empty())
    assert float(np.max(np.abs(logits - whole))) <= TOLERANCE
    assert [p.shape for p in present] == [(1, shape.heads, 30, shape.head_dim)] * (2 * shape.layers)


def test_pydoc_gpt_120_cached_greedy_steps_give_the_full_recompute_text() -> None:
    m = manifest("pydoc-gpt")
    tok = CharTokenizer.from_manifest(m["tokenizer"])
    prompt = gpt_text()[:8]  # prefill 8 tokens + 120 steps: the whole positional table of 128
    step = decoder_step(folder("pydoc-gpt") / kv_cache.DECODER_FILE, "input_ids")
    want, want_logits = greedy_full(kv_cache.gpt_full(folder("pydoc-gpt") / "model.onnx"), prompt, 121)
    got, got_logits = greedy_cached(step, CacheShape.of(m).empty(), prompt, 121)
    assert tok.decode(got) == tok.decode(want) and got == want
    assert got_logits.shape == want_logits.shape == (121, len(tok))
    assert float(np.max(np.abs(got_logits - want_logits))) <= TOLERANCE


def test_pydoc_gpt_left_padded_rows_give_each_row_alone() -> None:
    text = gpt_text()
    step = decoder_step(folder("pydoc-gpt") / kv_cache.DECODER_FILE, "input_ids")
    prompts = [text[:n] for n in (5, 33, 1, 12)]
    got = kv_cache.compare_batched([step] * 4, step, CacheShape.of(manifest("pydoc-gpt")).empty(), prompts, 6)
    assert got["past_padding"] == [28, 0, 32, 21]
    assert got["max_abs_diff"] <= TOLERANCE


def seq2seq_sources(n: int) -> list[list[int]]:
    m = manifest("dates-seq2seq")
    tok = CharTokenizer.from_manifest(m["tokenizer"])
    return [tok.encode(human) for human, _ in m["split"]["test_examples"][:n]]


def test_dates_seq2seq_cached_greedy_gives_the_full_graph_dates() -> None:
    m = manifest("dates-seq2seq")
    tok = CharTokenizer.from_manifest(m["tokenizer"])
    shape, model = CacheShape.of(m), folder("dates-seq2seq") / "model.onnx"
    bos, eos = tok.id("bos"), tok.id("eos")
    for source, (_, iso) in zip(seq2seq_sources(12), m["split"]["test_examples"], strict=False):
        memory = kv_cache.encode(folder("dates-seq2seq") / kv_cache.ENCODER_FILE, source)  # once
        assert memory.shape == (1, len(source), m["architecture"]["d_model"])
        feeds = kv_cache.memory_feeds([memory])
        step = decoder_step(folder("dates-seq2seq") / kv_cache.DECODER_FILE, "decoder_input_ids", feeds)
        full = kv_cache.seq2seq_full(model, source)
        want, want_logits = greedy_full(full, [bos], m["max_target_length"] - 1, stop=eos)
        got, got_logits = greedy_cached(step, shape.empty(), [bos], m["max_target_length"] - 1, stop=eos)
        assert got == want, (tok.decode(got), tok.decode(want), iso)
        assert float(np.max(np.abs(got_logits - want_logits))) <= TOLERANCE


def test_dates_seq2seq_batched_sources_and_pasts_give_each_row_alone() -> None:
    m = manifest("dates-seq2seq")
    tok = CharTokenizer.from_manifest(m["tokenizer"])
    sources = seq2seq_sources(8)
    assert len({len(s) for s in sources}) > 3, "sources of different lengths"
    got = kv_cache.seq2seq_checks(
        folder("dates-seq2seq"), CacheShape.of(m), sources,
        bos=tok.id("bos"), eos=tok.id("eos"), max_target=m["max_target_length"],
    )  # fmt: skip
    assert got["greedy"]["tokens_equal"] and got["greedy"]["max_abs_diff"] <= TOLERANCE
    assert got["batched"]["past_padding"] == [3, 2, 1, 0] * 2
    assert got["batched"]["max_abs_diff"] <= TOLERANCE


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_the_exporters_checks_are_recorded_within_tolerance(name: str) -> None:
    checks = manifest(name)["kv_cache"]["checks"]
    assert set(checks) >= {"greedy", "batched"}
    for check in checks.values():
        assert check.get("tokens_equal", True) and check["max_abs_diff"] <= TOLERANCE
    if name == "pydoc-gpt":
        assert checks["greedy"]["tokens"] == 121  # prefill, then 120 single-token steps
