"""The Locust response checks catch wrong answers, not only wrong statuses."""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import pytest

from load.catalog import TextScenario
from load.checks import (
    CheckError,
    check_classification_strings,
    check_completion,
    check_completion_stream,
    check_finite,
    check_generated,
    check_probability_rows,
    check_ranked_labels,
    check_stream,
    check_v2_tensor,
    outputs_by_name,
    parse_sse,
    png_size,
)

LABELS = ["setosa", "versicolor", "virginica"]


def test_softmax_rows_must_sum_to_one() -> None:
    check_probability_rows([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], softmax=True, what="m")
    with pytest.raises(CheckError, match="sums to"):
        check_probability_rows([[0.2, 0.3, 0.4]], softmax=True, what="m")
    check_probability_rows([[0.2, 0.3, 0.49995]], softmax=True, what="m")  # within 1e-4


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), "0.5", None, True])
def test_probabilities_must_be_numbers_in_range(bad: object) -> None:
    with pytest.raises(CheckError):
        check_probability_rows([[bad]], softmax=False, what="m")  # type: ignore[list-item]


def test_regression_values_must_be_finite() -> None:
    assert check_finite([1.5, -300, 0], "m") == [1.5, -300.0, 0.0]
    with pytest.raises(CheckError, match="not finite"):
        check_finite([float("inf")], "m")


def test_v2_tensor_shape_and_datatype() -> None:
    out = {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [2, 3],
        "data": [0.1, 0.2, 0.7, 0.3, 0.3, 0.4],
    }
    assert check_v2_tensor(out, rows=2, width=3) == [[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]]
    with pytest.raises(CheckError, match="shape"):
        check_v2_tensor(out, rows=3, width=3)
    with pytest.raises(CheckError, match="values per row"):
        check_v2_tensor(out, rows=2, width=2)
    with pytest.raises(CheckError, match="elements"):
        check_v2_tensor({**out, "data": [0.1, 0.2]}, rows=2, width=3)
    with pytest.raises(CheckError, match="datatype"):
        check_v2_tensor({**out, "datatype": "FP64"}, rows=2, width=3)


def test_v2_answer_must_name_the_model_and_echo_the_id() -> None:
    body = {"model_name": "iris-mlp", "id": "abc", "outputs": [{"name": "probabilities"}]}
    assert set(outputs_by_name(body, model="iris-mlp", request_id="abc")) == {"probabilities"}
    with pytest.raises(CheckError, match="model_name"):
        outputs_by_name(body, model="digits-mlp", request_id="abc")
    with pytest.raises(CheckError, match="echo"):
        outputs_by_name(body, model="iris-mlp", request_id="xyz")
    with pytest.raises(CheckError, match="no outputs"):
        outputs_by_name({**body, "outputs": []}, model="iris-mlp", request_id=None)


def test_classification_strings() -> None:
    good = ["0.9:2:virginica", "0.08:1:versicolor", "0.7:0:setosa", "0.2:1:versicolor"]
    check_classification_strings(good, rows=2, labels=LABELS, top_k=3)
    cases = {
        "expected": ["0.9:2:setosa", "0.1:1:versicolor"],  # label does not match its index
        "best first": ["0.1:2:virginica", "0.9:1:versicolor"],
        "outside \\[0, 1\\]": ["1.5:2:virginica", "0.1:1:versicolor"],
        "outside the 3 labels": ["0.9:7:virginica", "0.1:1:versicolor"],
        "score:index:label": ["0.9-virginica", "0.1:1:versicolor"],
    }
    for reason, data in cases.items():
        with pytest.raises(CheckError, match=reason):
            check_classification_strings(data, rows=1, labels=LABELS, top_k=3)
    with pytest.raises(CheckError, match="classes for"):
        check_classification_strings(good, rows=1, labels=LABELS, top_k=3)  # 4 > top_k


def test_ranked_labels_in_every_shape() -> None:
    check_ranked_labels([["virginica", 0.99], ["versicolor", 0.01], ["setosa", 0.0]], labels=LABELS)
    with pytest.raises(CheckError, match="best first"):
        check_ranked_labels([["virginica", 0.01], ["versicolor", 0.99]], labels=LABELS)
    with pytest.raises(CheckError, match="label, probability"):
        check_ranked_labels([["virginica", 0.01, 3]], labels=LABELS)
    check_ranked_labels(
        [{"label": "setosa", "probability": 0.8}, {"label": "virginica", "probability": 0.2}], labels=LABELS
    )
    check_ranked_labels({"labels": ["virginica", "setosa"], "probabilities": [0.6, 0.4]}, labels=LABELS)
    with pytest.raises(CheckError, match="unknown label"):
        check_ranked_labels([{"label": "rose", "probability": 0.8}], labels=LABELS)
    with pytest.raises(CheckError, match="best first"):
        check_ranked_labels({"labels": ["virginica", "setosa"], "probabilities": [0.4, 0.6]}, labels=LABELS)
    with pytest.raises(CheckError, match="empty"):
        check_ranked_labels([], labels=LABELS)


SAMPLED = TextScenario("pydoc-gpt", ["The "], 0.8, {}, frozenset("abc "), max_tokens=16)
GREEDY = TextScenario("dates-seq2seq", ["3 March 2021"], 0.0, {"3 March 2021": "2021-03-03"},
                      frozenset("0123456789-"), max_tokens=16)  # fmt: skip


def answer(
    text: str, finish_reason: str = "length", tokens: int = 16, model: str = "pydoc-gpt"
) -> dict[str, Any]:
    return {"model_name": model, "text_output": text, "finish_reason": finish_reason, "tokens": tokens}


def test_sampled_text_is_checked_for_its_characters_and_length() -> None:
    assert check_generated(answer("a cab"), scenario=SAMPLED, prompt="The ") == "a cab"
    with pytest.raises(CheckError, match=r"characters the model cannot write: \['Z'\]"):
        check_generated(answer("aZ"), scenario=SAMPLED, prompt="The ")
    with pytest.raises(CheckError, match="3 characters from 2 one-character tokens"):
        check_generated(answer("abc", tokens=2), scenario=SAMPLED, prompt="The ")
    with pytest.raises(CheckError, match=r"tokens 17, expected 1\.\.16"):
        check_generated(answer("abc", tokens=17), scenario=SAMPLED, prompt="The ")
    with pytest.raises(CheckError, match="finish_reason 'tired'"):
        check_generated(answer("abc", "tired"), scenario=SAMPLED, prompt="The ")
    with pytest.raises(CheckError, match="model_name"):
        check_generated(answer("x", model="other"), scenario=SAMPLED, prompt="The ")


def test_an_empty_sampled_text_passes_only_when_the_model_ended_it() -> None:
    # The model may sample its end token first: an empty text then is a right answer.
    assert check_generated(answer("", "eos", tokens=1), scenario=SAMPLED, prompt="The ") == ""
    with pytest.raises(CheckError, match="empty text with finish_reason 'length'"):
        check_generated(answer("", "length"), scenario=SAMPLED, prompt="The ")


def test_a_greedy_answer_must_be_the_right_one() -> None:
    right = answer("2021-03-03", "eos", 11, model="dates-seq2seq")
    assert check_generated(right, scenario=GREEDY, prompt="3 March 2021") == "2021-03-03"
    wrong = answer("2021-03-04", "eos", 11, model="dates-seq2seq")
    with pytest.raises(CheckError, match="expected '2021-03-03'"):
        check_generated(wrong, scenario=GREEDY, prompt="3 March 2021")


def _sse(*events: dict[str, object]) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events)


def test_stream_needs_tokens_then_a_finish_reason() -> None:
    final = {"text_output": "", "finish_reason": "length", "tokens": 3}
    good = _sse({"text_output": "ab"}, {"text_output": "c"}, final)
    assert check_stream(": ping\n\n" + good, scenario=SAMPLED, prompt="The ") == "abc"
    with pytest.raises(CheckError, match="finish_reason"):
        check_stream(_sse({"text_output": "ab"}, {"text_output": "c"}), scenario=SAMPLED, prompt="The ")
    with pytest.raises(CheckError, match="empty text"):
        check_stream(
            _sse({"text_output": ""}, {"finish_reason": "stop", "tokens": 1}), scenario=SAMPLED, prompt="x"
        )
    assert (
        check_stream(
            _sse({"text_output": "", "finish_reason": "eos", "tokens": 1}), scenario=SAMPLED, prompt="x"
        )
        == ""
    )
    with pytest.raises(CheckError, match="error event"):
        check_stream(
            _sse({"text_output": "a"}, {"error": "boom", "finish_reason": "error"}),
            scenario=SAMPLED,
            prompt="x",
        )
    with pytest.raises(CheckError, match="not JSON"):
        parse_sse("data: {oops\n\n")


def completion(text: str, reason: str = "length", tokens: int = 16, prompt: str = "The ") -> dict[str, Any]:
    choice = {"text": text, "index": 0, "finish_reason": reason, "logprobs": None}
    usage = {"prompt_tokens": len(prompt), "completion_tokens": tokens, "total_tokens": len(prompt) + tokens}
    head = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "pydoc-gpt"}
    return {**head, "choices": [choice], "usage": usage}


def test_an_openai_completion_is_checked_like_a_generation() -> None:
    assert check_completion(completion("a cab"), scenario=SAMPLED, prompt="The ") == "a cab"
    assert check_completion(completion("", "stop", 1), scenario=SAMPLED, prompt="The ") == ""  # eos
    cases = {
        "finish_reason 'eos'": completion("ab", "eos"),  # OpenAI's client types only stop and length
        "characters the model cannot write": completion("aZ"),
        "prompt_tokens 3 for 4": completion("ab", prompt="abc"),
        "object 'completion'": {**completion("ab"), "object": "completion"},
        "expected one": {**completion("ab"), "choices": []},
        "does not add up": completion("ab") | {"usage": {"prompt_tokens": 4, "completion_tokens": 2}},
    }
    for reason, body in cases.items():
        with pytest.raises(CheckError, match=reason):
            check_completion(body, scenario=SAMPLED, prompt="The ")
    right = completion("2021-03-03", "stop", 11, prompt="3 March 2021") | {"model": "dates-seq2seq"}
    assert check_completion(right, scenario=GREEDY, prompt="3 March 2021") == "2021-03-03"


def _chunks(*texts: tuple[str, str | None], usage: int | None = 3) -> str:
    head = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "pydoc-gpt"}
    events: list[dict[str, object]] = [
        {**head, "choices": [{"text": t, "index": 0, "finish_reason": r, "logprobs": None}], "usage": None}
        for t, r in texts
    ]
    if usage is not None:
        counted = {"prompt_tokens": 4, "completion_tokens": usage, "total_tokens": 4 + usage}
        events.append({**head, "choices": [], "usage": counted})
    return _sse(*events) + "data: [DONE]\n\n"


def test_an_openai_stream_is_chunks_usage_then_done() -> None:
    good = _chunks(("ab", None), ("c", None), ("", "length"))
    assert check_completion_stream(good, scenario=SAMPLED, prompt="The ") == "abc"
    cases = {
        "does not end with": good.removesuffix("data: [DONE]\n\n"),
        "not on the last chunk only": _chunks(("ab", "stop"), ("c", "length")),
        "usage chunk carries choices": _chunks(("ab", None), ("c", "length"), usage=None),
        "error": _sse({"error": {"message": "boom"}}) + "data: [DONE]\n\n",
        "3 characters from 2": _chunks(("abc", "length"), usage=2),
    }
    for reason, payload in cases.items():
        with pytest.raises(CheckError, match=reason):
            check_completion_stream(payload, scenario=SAMPLED, prompt="The ")


def _png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def test_png_size() -> None:
    assert png_size(_png(32, 24)) == (32, 24)
    with pytest.raises(CheckError, match="not a PNG"):
        png_size(b"GIF89a....")
    with pytest.raises(CheckError, match="size"):
        png_size(_png(0, 24))
