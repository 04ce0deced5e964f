"""A text model's KV-cache graphs (model.json's `kv_cache` record, docs/model-repository.md) and the
running streams' caches as one batch.

`decoder_with_past.onnx` takes new token ids, every row's past keys and values (one tensor per layer
and kind, rows left-padded to one length; `past_padding[b]` says how many leading columns of row b are
padding, masked out of attention and left out of its positions) and returns the logits and the
presents (past + new). A seq2seq model adds `encoder.onnx`, run once per stream; its decoder also
takes the encoder's hidden states and their mask, right-padded to the longest source in the batch.

Prefill (a prompt, one stream, no past) and decode (one token per stream, many streams) are the same
graph, so a cache is exactly what the plain graph would compute over the same tokens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import ModelLoadError
from service.runtime.session import ModelSession, SessionConfig

# The only extra files a version folder may hold; the repository scan fingerprints them too.
EXTRA_GRAPH_FILES = {"decoder": "decoder_with_past.onnx", "encoder": "encoder.onnx"}
PAST_PADDING = "past_padding"
ENCODER_STATES = "encoder_hidden_states"
ENCODER_MASK = "encoder_attention_mask"

ReadFile = Callable[[str], bytes]  # a file of the version folder, by its plain name


@dataclass(frozen=True)
class CacheGraphs:
    """The sessions and tensor names of one model's cache graphs."""

    decoder: ModelSession
    encoder: ModelSession | None
    heads: int
    head_dim: int
    token_input: str  # input_ids (decoder-only) or decoder_input_ids (seq2seq)
    past_names: tuple[str, ...]  # past_key_values.{i}.key, past_key_values.{i}.value, ...
    output_names: list[str]  # logits, then present.{i}.key, present.{i}.value, ...

    @classmethod
    def load(
        cls, record: object, kind: str, read: ReadFile, config: SessionConfig, label: str
    ) -> tuple[CacheGraphs, dict[str, str]]:
        """The graphs a `kv_cache` record names, each checked against its sha256; also returns the
        sha256 of each file read (for the version's fingerprint)."""
        if not isinstance(record, Mapping) or not isinstance(record.get("graphs"), Mapping):
            raise ModelLoadError("model.json's kv_cache needs a 'graphs' object")
        layers, heads, head_dim = (_positive(record, key) for key in ("layers", "heads", "head_dim"))
        graphs: Mapping[str, Any] = record["graphs"]
        wanted = ("decoder", "encoder") if kind == "seq2seq" else ("decoder",)
        sessions: dict[str, ModelSession] = {}
        digests: dict[str, str] = {}
        for role in wanted:
            entry = graphs.get(role)
            file = EXTRA_GRAPH_FILES[role]
            if not isinstance(entry, Mapping) or entry.get("file") != file:
                raise ModelLoadError(f"model.json's kv_cache.graphs.{role} must name the file {file!r}")
            data = read(file)
            digest = hashlib.sha256(data).hexdigest()
            if entry.get("sha256") != digest:
                raise ModelLoadError(f"sha256 mismatch: {file} is not the file model.json's kv_cache names")
            digests[file] = digest
            sessions[role] = ModelSession(data, config, f"{label} {file}")
        token_input = "decoder_input_ids" if kind == "seq2seq" else "input_ids"
        past = tuple(f"past_key_values.{i}.{part}" for i in range(layers) for part in ("key", "value"))
        present = [f"present.{i}.{part}" for i in range(layers) for part in ("key", "value")]
        needed = {token_input, PAST_PADDING, *past} | (
            {ENCODER_STATES, ENCODER_MASK} if kind == "seq2seq" else set()
        )
        _require(sessions["decoder"], needed, {"logits", *present})
        encoder = sessions.get("encoder")
        if encoder is not None:
            _require(encoder, {"encoder_input_ids"}, {ENCODER_STATES})
        graphs_ = cls(sessions["decoder"], encoder, heads, head_dim, token_input, past, ["logits", *present])
        graphs_.warm_up()
        return graphs_, digests

    def empty_past(self, rows: int) -> list[np.ndarray]:
        shape = (rows, self.heads, 0, self.head_dim)
        return [np.zeros(shape, dtype=np.float32) for _ in self.past_names]

    def encode(self, source: list[int]) -> np.ndarray:
        """The encoder's hidden states [1, source, d_model] for one stream's source ids."""
        assert self.encoder is not None
        ids = np.asarray([source], dtype=np.int64)
        (states,) = self.encoder.run({"encoder_input_ids": ids}, [ENCODER_STATES])
        return states

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """The decoder on `feeds`: logits [batch, new, vocab] and the presents."""
        logits, *presents = self.decoder.run(feeds, self.output_names)
        return logits, presents

    def prefill(self, tokens: list[int], memory: Memory | None) -> list[np.ndarray]:
        """One stream's cache over `tokens` (none: an empty cache)."""
        if not tokens:
            return self.empty_past(1)
        feeds = {self.token_input: np.asarray([tokens], dtype=np.int64), PAST_PADDING: np.zeros(1, np.int64)}
        feeds |= zip(self.past_names, self.empty_past(1), strict=True)
        if memory is not None:
            feeds |= {ENCODER_STATES: memory.states, ENCODER_MASK: memory.mask}
        return self.run(feeds)[1]

    def warm_up(self) -> None:
        """Prefill and one step, so a graph that cannot run fails its load, not its first stream."""
        memory = Memory.of(self.encode([4, 5])) if self.encoder is not None else None
        batch = CacheBatch(self)
        batch.append(self.prefill([4, 5], memory), memory)
        batch.step(np.asarray([6], dtype=np.int64))


@dataclass(frozen=True)
class Memory:
    """One seq2seq stream's encoder output [1, source, d_model] and its mask [1, source]."""

    states: np.ndarray
    mask: np.ndarray

    @classmethod
    def of(cls, states: np.ndarray) -> Memory:
        return cls(states, np.ones(states.shape[:2], dtype=np.int64))


class CacheBatch:
    """Every running stream's cache as one left-padded batch, row b for the loop's stream b.

    Rows join (their cache padded on the left to the batch's length, or the batch padded to theirs),
    leave (their row dropped, then columns that are padding in every row trimmed) and step together:
    one decoder run gives each row its next logits and grows every cache by one column.
    """

    def __init__(self, graphs: CacheGraphs) -> None:
        self.graphs = graphs
        self.past = graphs.empty_past(0)
        self.padding = np.zeros(0, dtype=np.int64)
        self.memory: Memory | None = None

    @property
    def rows(self) -> int:
        return int(self.padding.shape[0])

    @property
    def length(self) -> int:
        return int(self.past[0].shape[2])

    def append(self, past: list[np.ndarray], memory: Memory | None) -> None:
        """Add one row (a cache from `prefill`, and its encoder output for seq2seq) at the end."""
        before, row_length = self.length, past[0].shape[2]
        length = max(before, row_length)
        self.past = [
            np.concatenate([_left_pad(mine, length), _left_pad(theirs, length)])
            for mine, theirs in zip(self.past, past, strict=True)
        ]
        self.padding = np.append(self.padding + (length - before), length - row_length)
        if memory is not None:
            self.memory = memory if self.memory is None else _stack_memory(self.memory, memory)

    def keep(self, rows: list[int]) -> None:
        """Only `rows` stay, in this order; columns now padding in every row are dropped."""
        index = np.asarray(rows, dtype=np.int64)
        self.padding = self.padding[index]
        trim = int(self.padding.min()) if rows else self.length
        self.past = [p[index, :, trim:] for p in self.past]
        self.padding -= trim
        if self.memory is not None:
            self.memory = _keep_memory(self.memory, index) if rows else None

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """One token per row in, each row's next-token logits [rows, vocab] out; caches grow by one."""
        graphs = self.graphs
        feeds = {graphs.token_input: tokens.reshape(-1, 1), PAST_PADDING: self.padding}
        feeds |= zip(graphs.past_names, self.past, strict=True)
        if self.memory is not None:
            feeds |= {ENCODER_STATES: self.memory.states, ENCODER_MASK: self.memory.mask}
        logits, self.past = graphs.run(feeds)
        return logits[:, -1]


def _left_pad(past: np.ndarray, length: int) -> np.ndarray:
    extra = length - past.shape[2]
    if extra == 0:
        return past
    return np.pad(past, ((0, 0), (0, 0), (extra, 0), (0, 0)))


def _stack_memory(batch: Memory, row: Memory) -> Memory:
    """Append one stream's encoder output, right-padding whichever source is shorter (mask 0)."""
    source = max(batch.states.shape[1], row.states.shape[1])

    def pad(memory: Memory) -> Memory:
        extra = source - memory.states.shape[1]
        if extra == 0:
            return memory
        return Memory(
            np.pad(memory.states, ((0, 0), (0, extra), (0, 0))), np.pad(memory.mask, ((0, 0), (0, extra)))
        )

    mine, theirs = pad(batch), pad(row)
    return Memory(np.concatenate([mine.states, theirs.states]), np.concatenate([mine.mask, theirs.mask]))


def _keep_memory(memory: Memory, index: np.ndarray) -> Memory:
    mask = memory.mask[index]
    source = int(mask.sum(axis=1).max())  # sources are right-padded: the longest real one is enough
    return Memory(memory.states[index, :source], mask[:, :source])


def _positive(record: Mapping[str, Any], key: str) -> int:
    value = record.get(key)
    if type(value) is not int or value < 1:
        raise ModelLoadError(f"model.json's kv_cache.{key} must be a positive integer")
    return value


def _require(session: ModelSession, inputs: set[str], outputs: set[str]) -> None:
    missing = sorted((inputs - set(session.input_by_name)) | (outputs - set(session.output_by_name)))
    if missing:
        raise ModelLoadError(f"the KV-cache graph lacks {', '.join(missing)}")
