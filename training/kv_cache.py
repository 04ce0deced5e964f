"""KV-cache graphs beside a text model's model.onnx, measured with onnxruntime only (no torch): a
greedy decode through decoder_with_past.onnx must give the tokens and logits of the full recompute
on the plain graph, and rows left-padded into one batched cache must give what each row gives alone.
The exporter runs these checks after every export; tests/training runs them on the committed files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.evaluate import run_onnx

DECODER_FILE, ENCODER_FILE = "decoder_with_past.onnx", "encoder.onnx"
# The dim_param the dynamo exporter derives for the presents' axis 2 (past concatenated with the new).
PRESENT_AXIS = "past_sequence + sequence"

Cache = list[np.ndarray]  # past/present: key, value per layer, each [B, heads, length, head_dim]
# A decoder_with_past run: (new token ids [B, T], past_padding [B], past) -> (logits [B, T, V], present)
Step = Callable[[np.ndarray, np.ndarray, Cache], tuple[np.ndarray, Cache]]
Full = Callable[[list[int]], np.ndarray]  # the plain graph over all tokens so far -> last logits [V]


def past_names(layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


def present_names(layers: int) -> list[str]:
    return [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]


@dataclass(frozen=True)
class CacheShape:
    layers: int
    heads: int
    head_dim: int

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> CacheShape:
        kv = manifest["kv_cache"]
        return cls(kv["layers"], kv["heads"], kv["head_dim"])

    def empty(self, batch: int = 1) -> Cache:
        """A past of length 0 (prefill)."""
        shape = (batch, self.heads, 0, self.head_dim)
        return [np.zeros(shape, dtype=np.float32) for _ in range(2 * self.layers)]


def decoder_step(path: Path, token_input: str, extra: dict[str, np.ndarray] | None = None) -> Step:
    """A Step on `path`; `extra` adds fixed feeds (a seq2seq row's encoder states and mask)."""

    def step(ids: np.ndarray, padding: np.ndarray, past: Cache) -> tuple[np.ndarray, Cache]:
        feeds = {token_input: ids.astype(np.int64), "past_padding": padding.astype(np.int64)}
        feeds |= dict(zip(past_names(len(past) // 2), past, strict=True)) | (extra or {})
        logits, *present = run_onnx(path, feeds)
        return logits, present

    return step


def greedy_full(
    full: Full, prompt: Sequence[int], tokens: int, stop: int | None = None
) -> tuple[list[int], np.ndarray]:
    """Greedy decoding by full recompute: `tokens` new tokens (fewer if `stop` comes), with the
    logits each was chosen from [n, V]."""
    ids, rows = list(prompt), []
    for _ in range(tokens):
        rows.append(full(ids))
        ids.append(int(rows[-1].argmax()))
        if ids[-1] == stop:
            break
    return ids[len(prompt) :], np.stack(rows)


def greedy_cached(
    step: Step, empty: Cache, prompt: Sequence[int], tokens: int, stop: int | None = None
) -> tuple[list[int], np.ndarray]:
    """The same decode through the cache: prefill the prompt, then one token per run."""
    new, past, out, rows = np.array([prompt]), empty, [], []
    for _ in range(tokens):
        logits, past = step(new, np.zeros(1, dtype=np.int64), past)
        rows.append(logits[0, -1])
        out.append(int(rows[-1].argmax()))
        new = np.array([[out[-1]]])
        if out[-1] == stop:
            break
    return out, np.stack(rows)


def compare_greedy(
    full: Full, step: Step, empty: Cache, prompt: Sequence[int], tokens: int, *, stop: int | None = None
) -> tuple[dict[str, Any], list[int]]:
    """Both greedy decodes: the record, and the full recompute's tokens."""
    want, want_logits = greedy_full(full, prompt, tokens, stop)
    got, got_logits = greedy_cached(step, empty, prompt, tokens, stop)
    n = min(len(got), len(want))  # on a mismatch, the logits up to the shorter decode
    diff = float(np.max(np.abs(got_logits[:n] - want_logits[:n])))
    return {"tokens": len(want), "tokens_equal": got == want, "max_abs_diff": diff}, want


def left_pad(caches: list[Cache]) -> tuple[Cache, np.ndarray]:
    """Single-row caches of different lengths as one batch, each row padded on the left with zeros
    to the longest; returns the batch and past_padding."""
    lengths = [c[0].shape[2] for c in caches]
    longest = max(lengths)

    def pad(t: np.ndarray, n: int) -> np.ndarray:
        return np.concatenate([np.zeros((*t.shape[:2], n, t.shape[3]), dtype=t.dtype), t], axis=2)

    batch = [np.concatenate([pad(c[i], longest - n) for c, n in zip(caches, lengths, strict=True)])
             for i in range(len(caches[0]))]  # fmt: skip
    return batch, np.array([longest - n for n in lengths], dtype=np.int64)


def compare_batched(
    alone: list[Step], together: Step, empty: Cache, prompts: list[list[int]], steps: int
) -> dict[str, Any]:
    """Prefill each row alone, left-pad the caches into one past, then take `steps` batched greedy
    steps: max |batched logits - the row's own logits, run alone| over rows and steps."""
    caches, nexts = [], []
    for step, prompt in zip(alone, prompts, strict=True):
        logits, cache = step(np.array([prompt]), np.zeros(1, dtype=np.int64), empty)
        caches.append(cache)
        nexts.append(int(logits[0, -1].argmax()))
    past, padding = left_pad(caches)
    diff = 0.0
    for _ in range(steps):
        logits, past = together(np.array(nexts)[:, None], padding, past)
        for r, step in enumerate(alone):
            ref, caches[r] = step(np.array([[nexts[r]]]), np.zeros(1, dtype=np.int64), caches[r])
            diff = max(diff, float(np.max(np.abs(logits[r, -1] - ref[0, -1]))))
        nexts = [int(i) for i in logits[:, -1].argmax(axis=-1)]
    return {"rows": len(prompts), "past_padding": padding.tolist(), "steps": steps, "max_abs_diff": diff}


def prefill_diff(full_logits: np.ndarray, step: Step, empty: Cache, prompt: Sequence[int]) -> float:
    """Prefill with an empty past (past_sequence 0) against the plain graph's logits at every position."""
    logits, _ = step(np.array([prompt]), np.zeros(1, dtype=np.int64), empty)
    return float(np.max(np.abs(logits - full_logits)))


# The two text models' checks; both run on a version folder (model.onnx and the cache graphs).


def gpt_checks(folder: Path, shape: CacheShape, text: Sequence[int], window: int) -> dict[str, Any]:
    """`text` holds real token ids: the greedy decode prefills its first 8 and steps until the
    positional table of `window` positions is full (120 steps for 128); the batched rows are prefixes
    of it of different lengths."""
    model, step = folder / "model.onnx", decoder_step(folder / DECODER_FILE, "input_ids")
    full = gpt_full(model)
    prompt, steps = list(text[:8]), window - 8
    (whole,) = run_onnx(model, {"input_ids": np.array([prompt])})
    prompts = [list(text[:n]) for n in (3, window // 8, window // 16, window // 4)]
    greedy, _ = compare_greedy(full, step, shape.empty(), prompt, steps + 1)
    return {
        "prefill": {"tokens": len(prompt), "max_abs_diff": prefill_diff(whole, step, shape.empty(), prompt)},
        "greedy": {"prompt": len(prompt), **greedy},
        "batched": compare_batched([step] * len(prompts), step, shape.empty(), prompts, steps=8),
    }


def seq2seq_checks(
    folder: Path, shape: CacheShape, sources: list[list[int]], *, bos: int, eos: int, max_target: int
) -> dict[str, Any]:
    """Greedy decoding of each source (no padding) via encoder.onnx once and decoder_with_past steps
    against model.onnx; then the rows batched with right-padded sources and left-padded pasts."""
    model, decoder = folder / "model.onnx", folder / DECODER_FILE
    memories = [encode(folder / ENCODER_FILE, s) for s in sources]
    alone = [decoder_step(decoder, "decoder_input_ids", memory_feeds([m])) for m in memories]
    greedy, decoded = [], []
    for src, step in zip(sources, alone, strict=True):
        record, tokens = compare_greedy(
            seq2seq_full(model, src), step, shape.empty(), [bos], max_target - 1, stop=eos
        )
        greedy.append(record)
        decoded.append(tokens)
    # Rows at different decoding steps: row r has fed bos and its first r % 4 tokens.
    prompts = [[bos, *d[: r % 4]] for r, d in enumerate(decoded)]
    together = decoder_step(decoder, "decoder_input_ids", memory_feeds(memories))
    steps = max_target - 1 - max(len(p) for p in prompts)
    return {
        "greedy": {
            "sources": len(sources),
            "tokens_equal": all(g["tokens_equal"] for g in greedy),
            "max_abs_diff": max(g["max_abs_diff"] for g in greedy),
        },
        "batched": {"source_lengths": [len(s) for s in sources]}
        | compare_batched(alone, together, shape.empty(), prompts, steps),
    }


def gpt_full(model: Path) -> Full:
    def full(ids: list[int]) -> np.ndarray:
        return run_onnx(model, {"input_ids": np.array([ids])})[0][0, -1]

    return full


def seq2seq_full(model: Path, source: list[int]) -> Full:
    def full(ids: list[int]) -> np.ndarray:
        feeds = {"encoder_input_ids": np.array([source]), "decoder_input_ids": np.array([ids])}
        return run_onnx(model, feeds)[0][0, -1]

    return full


def encode(path: Path, source: list[int]) -> np.ndarray:
    return run_onnx(path, {"encoder_input_ids": np.array([source], dtype=np.int64)})[0]  # [1, S, C]


def memory_feeds(memories: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Encoder states of rows with different source lengths, right-padded with zeros, and their mask."""
    longest = max(m.shape[1] for m in memories)
    states = np.zeros((len(memories), longest, memories[0].shape[2]), dtype=np.float32)
    mask = np.zeros((len(memories), longest), dtype=np.int64)
    for r, m in enumerate(memories):
        states[r, : m.shape[1]], mask[r, : m.shape[1]] = m[0], 1
    return {"encoder_hidden_states": states, "encoder_attention_mask": mask}
