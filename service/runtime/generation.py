"""The token loop: text in, tokens out, over one onnxruntime session.

Two model shapes (docs/model-repository.md):
- decoder-only language model: ``input_ids`` [batch, sequence] -> ``logits`` [batch, sequence, vocab];
  the context is cropped to the last ``max_sequence_length`` tokens before every step.
- encoder-decoder: ``encoder_input_ids`` [batch, source], ``decoder_input_ids`` [batch, target] ->
  ``logits`` [batch, target, vocab]; the decoder starts with ``bos`` and stops at ``eos``.

``Generation.steps()`` is a generator of events, one per model call, so the streaming and the
non-streaming endpoints share one code path; closing the generator stops the loop between two model
calls. Stop strings are cut from the output; text that could be the start of a stop string is held back
until it is known not to be, so the concatenated stream always equals the non-streamed text.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from service.errors import InvalidInputError
from service.runtime.sampling import SamplingParams, sample_next
from service.runtime.tokenizer import CharTokenizer

# "timeout" and "shutdown" end a stream from outside the loop (the deadline, the drain: Call.ending).
FinishReason = Literal["length", "stop", "eos", "timeout", "shutdown"]
ModelKind = Literal["language_model", "seq2seq"]

TEXT_TASKS = ("language_model", "seq2seq")
MAX_STOP_STRINGS = 16
MAX_STOP_LENGTH = 64


class Runner(Protocol):
    """What the loop needs from a model: onnxruntime's ``InferenceSession.run`` signature (a
    ``LoadedModel``, which also records the compute metrics, or a bare session in tests)."""

    def run(self, output_names: list[str], input_feed: dict[str, np.ndarray]) -> Sequence[Any]: ...


@dataclass(frozen=True)
class GenerationParams:
    """One request's limits and sampling settings (already validated against the server's caps)."""

    max_tokens: int = 64
    stop: tuple[str, ...] = ()
    sampling: SamplingParams = field(default_factory=SamplingParams)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise InvalidInputError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise InvalidInputError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(self.stop)}")
        for s in self.stop:
            if not s or len(s) > MAX_STOP_LENGTH:
                raise InvalidInputError(
                    f"each stop string must have 1 to {MAX_STOP_LENGTH} characters, got {len(s)}"
                )


@dataclass(frozen=True)
class TokenEvent:
    """One model step: the token chosen and the text it releases ("" while held for a stop string)."""

    token_id: int
    text: str


@dataclass(frozen=True)
class FinishEvent:
    """The end of a generation; ``text`` is any held-back text released at the end."""

    reason: FinishReason
    text: str
    tokens: int


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: FinishReason
    tokens: int


class StopBuffer:
    """Releases text as it is generated, cutting at the first stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._pending = ""

    def push(self, piece: str) -> tuple[str, bool]:
        """Add generated text; returns (text safe to release, whether a stop string was hit)."""
        self._pending += piece
        if not self._stops:
            released, self._pending = self._pending, ""
            return released, False
        hits = [i for i in (self._pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            released, self._pending = self._pending[: min(hits)], ""
            return released, True
        hold = self._held_suffix()
        cut = len(self._pending) - hold
        released, self._pending = self._pending[:cut], self._pending[cut:]
        return released, False

    def flush(self) -> str:
        released, self._pending = self._pending, ""
        return released

    def _held_suffix(self) -> int:
        # Longest suffix of the pending text that is a proper prefix of some stop string.
        for k in range(min(len(self._pending), MAX_STOP_LENGTH), 0, -1):
            tail = self._pending[-k:]
            if any(s.startswith(tail) and len(s) > k for s in self._stops):
                return k
        return 0


@dataclass(frozen=True)
class TextModel:
    """A loaded text model: its session, tokenizer, kind and context window."""

    runner: Runner
    tokenizer: CharTokenizer
    kind: ModelKind
    max_sequence_length: int
    max_target_length: int | None = None  # seq2seq decoder positions; defaults to max_sequence_length
    output_name: str = "logits"

    @classmethod
    def from_manifest(cls, runner: Runner, manifest: Mapping[str, Any]) -> TextModel:
        """Build from model.json; raises ValueError when the manifest lacks what generation needs."""
        task = manifest.get("task")
        if task not in TEXT_TASKS:
            raise ValueError(f"task {task!r} does not generate text")
        if "tokenizer" not in manifest:
            raise ValueError("model.json has no tokenizer")
        tokenizer = CharTokenizer.from_manifest(manifest["tokenizer"])
        max_len = manifest.get("max_sequence_length")
        if not isinstance(max_len, int) or max_len < 1:
            raise ValueError("model.json needs a positive integer max_sequence_length")
        max_target = manifest.get("max_target_length")
        if max_target is not None and (not isinstance(max_target, int) or max_target < 2):
            raise ValueError("model.json's max_target_length must be an integer >= 2")
        if task == "seq2seq" and tokenizer.bos_id is None:
            raise ValueError("a seq2seq tokenizer needs a bos special token to start the decoder")
        return cls(runner, tokenizer, task, max_len, max_target)

    @property
    def decoder_limit(self) -> int:
        """How many decoder positions a seq2seq graph takes (bos included)."""
        return self.max_target_length or self.max_sequence_length

    def prepare(self, prompt: str, params: GenerationParams, *, max_prompt_length: int) -> Generation:
        """Validate and encode now, so bad input fails before any response (or stream) starts."""
        if not prompt:
            raise InvalidInputError("text_input is empty; expected at least one character")
        if len(prompt) > max_prompt_length:
            raise InvalidInputError(
                f"text_input has {len(prompt)} characters; this server accepts at most {max_prompt_length}"
            )
        ids = self.tokenizer.encode(prompt)
        if self.kind == "seq2seq" and len(ids) > self.max_sequence_length:
            raise InvalidInputError(
                f"text_input has {len(ids)} tokens; this model's encoder takes at most "
                f"{self.max_sequence_length}"
            )
        return Generation(self, ids, params)

    def logits(self, context: list[int], source: list[int] | None = None) -> np.ndarray:
        """Logits [vocab] for the next token after ``context`` (the decoder ids for seq2seq)."""
        feed: dict[str, np.ndarray]
        if self.kind == "seq2seq":
            assert source is not None
            feed = {
                "encoder_input_ids": np.asarray([source], dtype=np.int64),
                "decoder_input_ids": np.asarray([context], dtype=np.int64),
            }
        else:
            window = context[-self.max_sequence_length :]
            feed = {"input_ids": np.asarray([window], dtype=np.int64)}
        (logits,) = self.runner.run([self.output_name], feed)
        return np.asarray(logits)[0, -1]


class Generation:
    """One prepared request; ``steps()`` runs it lazily, ``run()`` to the end."""

    def __init__(self, model: TextModel, prompt_ids: list[int], params: GenerationParams) -> None:
        self.model = model
        self.prompt_ids = prompt_ids
        self.params = params

    def steps(self) -> Generator[TokenEvent | FinishEvent, None, None]:
        model, tok, params = self.model, self.model.tokenizer, self.params
        rng = params.sampling.make_rng()
        stops = StopBuffer(params.stop)
        if model.kind == "seq2seq":
            source: list[int] | None = self.prompt_ids
            context = [tok.bos_id] if tok.bos_id is not None else []
        else:
            source, context = None, list(self.prompt_ids)
        generated = 0
        reason: FinishReason = "length"
        while generated < params.max_tokens:
            if model.kind == "seq2seq" and len(context) >= model.decoder_limit:
                break  # the decoder's positional table is full: "length"
            token = sample_next(model.logits(context, source), params.sampling, rng)
            generated += 1
            if token == tok.eos_id:
                reason = "eos"
                break
            context.append(token)
            released, hit = stops.push(tok.token_text(token))
            yield TokenEvent(token_id=token, text=released)
            if hit:
                reason = "stop"
                break
        yield FinishEvent(reason=reason, text=stops.flush(), tokens=generated)

    def run(self, stop: threading.Event | None = None) -> GenerationResult:
        """The whole generation; with `stop`, it ends between two model steps once the event is set
        (the deadline passed, the client left) and its partial result is for nobody."""
        parts: list[str] = []
        for event in self.steps():
            if stop is not None and stop.is_set():
                return GenerationResult("".join(parts), "length", 0)
            parts.append(event.text)
            if isinstance(event, FinishEvent):
                return GenerationResult("".join(parts), event.reason, event.tokens)
        raise AssertionError("steps() always ends with a FinishEvent")
