"""The token loop over real onnxruntime sessions of tiny graphs built with onnx.helper."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from service.errors import InvalidInputError
from service.runtime.generation import (
    FinishEvent,
    GenerationParams,
    StopBuffer,
    TextModel,
    TokenEvent,
)
from service.runtime.sampling import SamplingParams
from tests.helpers.text_models import (
    BOS,
    SPACE,
    SPECIALS,
    VOCAB,
    A,
    B,
    C,
    D,
    V,
    bigram_lm,
    copy_seq2seq,
    cycle_table,
)


class Recorder:
    """Wraps a real session and records every feed it runs (shapes, contents, call count)."""

    def __init__(self, inner: ort.InferenceSession) -> None:
        self.inner = inner
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, output_names: list[str] | None, input_feed: dict[str, Any]) -> Sequence[Any]:
        self.feeds.append({k: np.array(v) for k, v in input_feed.items()})
        return self.inner.run(output_names, input_feed)


def manifest(task: str, max_len: int = 16) -> dict[str, Any]:
    return {
        "task": task,
        "max_sequence_length": max_len,
        "tokenizer": {"type": "char", "vocab": VOCAB, "special_tokens": SPECIALS},
    }


def lm(table: np.ndarray | None = None, max_len: int = 16) -> tuple[TextModel, Recorder]:
    recorder = Recorder(bigram_lm(cycle_table() if table is None else table))
    return TextModel.from_manifest(recorder, manifest("language_model", max_len)), recorder


def params(max_tokens: int = 8, stop: tuple[str, ...] = (), **sampling: Any) -> GenerationParams:
    return GenerationParams(max_tokens=max_tokens, stop=stop, sampling=SamplingParams(**sampling))


def test_greedy_lm_follows_the_argmax_chain_to_max_tokens() -> None:
    model, recorder = lm()
    result = model.prepare("ab", params(max_tokens=7), max_prompt_length=100).run()
    assert result.text == "cd abcd"
    assert (result.finish_reason, result.tokens) == ("length", 7)
    assert len(recorder.feeds) == 7
    assert recorder.feeds[0]["input_ids"].tolist() == [[A, B]]


def test_lm_stops_at_eos_without_emitting_it() -> None:
    model, _ = lm(cycle_table(eos_after=C))
    result = model.prepare("a", params(max_tokens=10), max_prompt_length=100).run()
    assert (result.text, result.finish_reason, result.tokens) == ("bc", "eos", 3)


def test_context_is_cropped_to_the_last_window() -> None:
    model, recorder = lm(max_len=4)
    model.prepare("abcd abc", params(max_tokens=3), max_prompt_length=100).run()
    windows = [feed["input_ids"][0].tolist() for feed in recorder.feeds]
    assert windows == [[SPACE, A, B, C], [A, B, C, D], [B, C, D, SPACE]]


def test_stop_string_cuts_the_output() -> None:
    model, _ = lm()
    result = model.prepare("a", params(max_tokens=20, stop=("d a",)), max_prompt_length=100).run()
    assert (result.text, result.finish_reason) == ("bc", "stop")


def test_stream_concatenation_equals_the_result_and_has_one_event_per_token() -> None:
    model, _ = lm()
    generation = model.prepare("a", params(max_tokens=12, stop=("cx", "d b")), max_prompt_length=100)
    events = list(generation.steps())
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    finish = events[-1]
    assert isinstance(finish, FinishEvent)
    assert len(tokens) == finish.tokens == 12  # no stop string completed
    assert "".join(e.text for e in events) == generation.run().text == "bcd abcd abc"
    # 'c' could start "cx" and 'd ' could start "d b": held back, released once they cannot.
    assert [e.text for e in tokens[:5]] == ["b", "", "c", "", "d a"]


def test_held_back_prefix_is_flushed_at_the_end() -> None:
    model, _ = lm()
    generation = model.prepare("a", params(max_tokens=2, stop=("cx",)), max_prompt_length=100)
    events = list(generation.steps())
    assert [e.text for e in events] == ["b", "", "c"]
    assert isinstance(events[-1], FinishEvent)
    assert events[-1].reason == "length"


def test_sampling_is_reproducible_per_seed_and_differs_across_seeds() -> None:
    rng = np.random.default_rng(0)
    model, _ = lm(table=rng.normal(size=(V, V)).astype(np.float32))

    def text(seed: int) -> str:
        return (
            model.prepare("a", params(max_tokens=30, temperature=1.0, seed=seed), max_prompt_length=9)
            .run()
            .text
        )

    assert text(1) == text(1)
    assert len({text(s) for s in range(5)}) > 1


def test_closing_the_generator_stops_model_calls() -> None:
    model, recorder = lm()
    steps = model.prepare("a", params(max_tokens=50), max_prompt_length=100).steps()
    for _ in range(3):
        next(steps)
    steps.close()
    assert len(recorder.feeds) == 3


def test_seq2seq_copies_source_and_stops_at_eos() -> None:
    recorder = Recorder(copy_seq2seq())
    model = TextModel.from_manifest(recorder, manifest("seq2seq", max_len=10))
    result = model.prepare("cab d", params(max_tokens=20), max_prompt_length=100).run()
    assert (result.text, result.finish_reason, result.tokens) == ("cab d", "eos", 6)
    first = recorder.feeds[0]
    assert first["encoder_input_ids"].tolist() == [[C, A, B, SPACE, D]]
    assert first["decoder_input_ids"].tolist() == [[BOS]]
    assert recorder.feeds[-1]["decoder_input_ids"].tolist() == [[BOS, C, A, B, SPACE, D]]


def test_seq2seq_decoder_is_bounded_by_its_positional_table() -> None:
    model = TextModel.from_manifest(copy_seq2seq(), manifest("seq2seq", max_len=4))
    result = model.prepare("abcd", params(max_tokens=20), max_prompt_length=100).run()
    # bos + 3 generated tokens fill the 4 decoder positions.
    assert (result.text, result.finish_reason, result.tokens) == ("abc", "length", 3)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("", "empty"),
        ("a" * 11, "at most 10"),
        ("abz", "'z' at position 2"),
    ],
)
def test_bad_prompts_fail_before_any_model_call(prompt: str, message: str) -> None:
    model, recorder = lm()
    with pytest.raises(InvalidInputError, match=message):
        model.prepare(prompt, params(), max_prompt_length=10)
    assert recorder.feeds == []


def test_seq2seq_decoder_limit_can_differ_from_the_encoder() -> None:
    spec = {**manifest("seq2seq", max_len=10), "max_target_length": 3}
    model = TextModel.from_manifest(copy_seq2seq(), spec)
    result = model.prepare("abcd", params(max_tokens=20), max_prompt_length=100).run()
    assert (result.text, result.finish_reason) == ("ab", "length")


def test_seq2seq_source_longer_than_the_encoder_is_rejected() -> None:
    model = TextModel.from_manifest(copy_seq2seq(), manifest("seq2seq", max_len=4))
    with pytest.raises(InvalidInputError, match="encoder takes at most 4"):
        model.prepare("abcda", params(), max_prompt_length=100)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ("",)}, "stop string"),
        ({"stop": ("x" * 65,)}, "stop string"),
        ({"stop": tuple("abcdefghijklmnopq")}, "at most 16 stop strings"),
    ],
)
def test_bad_generation_params(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        GenerationParams(**kwargs)


def test_stop_buffer_finds_stops_spanning_pieces() -> None:
    buffer = StopBuffer(["END"])
    assert buffer.push("abE") == ("ab", False)
    assert buffer.push("N") == ("", False)
    assert buffer.push("Dzz") == ("", True)
    assert buffer.flush() == ""


def test_manifest_without_what_generation_needs_is_rejected() -> None:
    runner = bigram_lm(cycle_table())
    with pytest.raises(ValueError, match="does not generate"):
        TextModel.from_manifest(runner, {**manifest("language_model"), "task": "regression"})
    with pytest.raises(ValueError, match="max_sequence_length"):
        TextModel.from_manifest(runner, {**manifest("language_model"), "max_sequence_length": None})
    with pytest.raises(ValueError, match="no tokenizer"):
        TextModel.from_manifest(runner, {"task": "language_model", "max_sequence_length": 4})
