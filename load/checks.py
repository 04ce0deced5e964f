"""Response checks for the Locust users: plain functions, no Locust import, so pytest can test them.

Each check raises `CheckError` with a short reason when a response is wrong in content (not only in
status): probabilities out of [0, 1], softmax rows that do not sum to 1, unknown labels, a wrong
greedy answer. Every check holds for every answer the server may legitimately give, so a failure is
always a bug.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from load.catalog import TextScenario

SOFTMAX_TOLERANCE = 1e-4
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class CheckError(Exception):
    """A response that arrived but is wrong."""


def expect(condition: bool, reason: str) -> None:
    if not condition:
        raise CheckError(reason)


def _numbers(values: Iterable[Any], what: str) -> list[float]:
    out: list[float] = []
    for value in values:
        expect(
            isinstance(value, int | float) and not isinstance(value, bool),
            f"{what}: {value!r} is not a number",
        )
        expect(math.isfinite(value), f"{what}: {value!r} is not finite")
        out.append(float(value))
    return out


def check_finite(values: Iterable[Any], what: str) -> list[float]:
    """Plain finite numbers (a regression's predictions): no NaN, no infinity, no strings."""
    return _numbers(values, what)


def check_probability_rows(rows: Sequence[Sequence[float]], *, softmax: bool, what: str) -> None:
    """Every value in [0, 1]; with softmax, every row sums to 1 within SOFTMAX_TOLERANCE."""
    for i, row in enumerate(rows):
        values = _numbers(row, what)
        for p in values:
            expect(0.0 <= p <= 1.0, f"{what}: probability {p} of row {i} is outside [0, 1]")
        if softmax:
            total = math.fsum(values)
            expect(abs(total - 1.0) <= SOFTMAX_TOLERANCE, f"{what}: row {i} sums to {total}, not 1")


def reshape(flat: Sequence[Any], shape: Sequence[int]) -> list[list[Any]]:
    """Split a V2 row-major flat `data` list into rows of shape[1:] elements."""
    width = math.prod(shape[1:]) if len(shape) > 1 else 1
    expect(len(flat) == math.prod(shape), f"data has {len(flat)} elements, shape {list(shape)} needs more")
    return [list(flat[i * width : (i + 1) * width]) for i in range(shape[0])]


def check_v2_tensor(
    output: dict[str, Any], *, rows: int, width: int, datatype: str = "FP32"
) -> list[list[Any]]:
    """A V2 output tensor with `rows` rows of `width` values; returns the rows."""
    name = output.get("name")
    expect(output.get("datatype") == datatype, f"{name}: datatype {output.get('datatype')!r}, not {datatype}")
    shape = output.get("shape")
    expect(
        isinstance(shape, list) and shape[:1] == [rows], f"{name}: shape {shape!r}, expected [{rows}, ...]"
    )
    assert isinstance(shape, list)
    expect(math.prod(shape[1:]) == width, f"{name}: shape {shape}, expected {width} values per row")
    data = output.get("data")
    expect(isinstance(data, list), f"{name}: data is not a list")
    assert isinstance(data, list)
    return reshape(data, shape)


def outputs_by_name(body: Any, *, model: str, request_id: str | None) -> dict[str, dict[str, Any]]:
    """The `outputs` of a V2 infer answer keyed by name, after checking model name and id echo."""
    expect(isinstance(body, dict), "answer is not a JSON object")
    expect(body.get("model_name") == model, f"model_name {body.get('model_name')!r}, expected {model!r}")
    if request_id is not None:
        expect(body.get("id") == request_id, f"id {body.get('id')!r} does not echo {request_id!r}")
    outputs = body.get("outputs")
    expect(isinstance(outputs, list) and len(outputs) > 0, "answer has no outputs")
    return {str(o.get("name")): o for o in outputs if isinstance(o, dict)}


def check_classification_strings(
    data: Sequence[Any], *, rows: int, labels: Sequence[str], top_k: int
) -> None:
    """V2 classification extension: per row up to top_k BYTES "score:index:label", best first."""
    expect(len(data) % rows == 0 and len(data) // rows <= top_k, f"{len(data)} classes for {rows} rows")
    per_row = len(data) // rows
    expect(per_row >= 1, "no classes in the answer")
    for r in range(rows):
        scores: list[float] = []
        for item in data[r * per_row : (r + 1) * per_row]:
            expect(isinstance(item, str), f"class entry {item!r} is not a string")
            parts = str(item).split(":", 2)
            expect(len(parts) == 3, f"class entry {item!r} is not score:index:label")
            score, index, label = float(parts[0]), int(parts[1]), parts[2]
            expect(0 <= index < len(labels), f"class index {index} outside the {len(labels)} labels")
            expect(label == labels[index], f"label {label!r} for index {index}, expected {labels[index]!r}")
            expect(0.0 <= score <= 1.0, f"score {score} outside [0, 1]")
            scores.append(score)
        expect(scores == sorted(scores, reverse=True), f"row {r}: classes not best first: {scores}")


def check_ranked_labels(instance: Any, *, labels: Sequence[str]) -> None:
    """V1 classify: one instance's labels with probabilities, best first, labels known."""
    pairs: list[tuple[str, float]] = []
    if isinstance(instance, dict) and "labels" in instance:
        # {"labels": [...], "probabilities"|"scores": [...]}
        probs = instance.get("probabilities", instance.get("scores"))
        expect(isinstance(probs, list), f"classification {instance!r} has no probabilities")
        expect(len(probs) == len(instance["labels"]), "as many probabilities as labels")  # type: ignore[arg-type]
        pairs = list(zip(instance["labels"], probs or [], strict=True))
    elif isinstance(instance, list):
        for item in instance:
            if isinstance(item, list | tuple):  # [label, probability], the server's shape
                expect(len(item) == 2, f"class entry {item!r} is not [label, probability]")
                pairs.append((item[0], item[1]))
            else:
                expect(isinstance(item, dict), f"class entry {item!r} is neither a pair nor an object")
                pairs.append((item.get("label"), item.get("probability", item.get("score"))))
    else:
        raise CheckError(f"classification {instance!r} is neither a list nor an object with labels")
    expect(len(pairs) > 0, "empty classification")
    for label, _ in pairs:
        expect(label in labels, f"unknown label {label!r}")
    probs = _numbers((p for _, p in pairs), "classify")
    for p in probs:
        expect(0.0 <= p <= 1.0, f"classify: probability {p} outside [0, 1]")
    expect(probs == sorted(probs, reverse=True), f"classify: labels not best first: {probs}")


FINISH_REASONS = ("length", "stop", "eos")
OPENAI_FINISH_REASONS = ("stop", "length")  # the server's eos is OpenAI's "stop"


def check_generated_text(
    text: Any,
    finish_reason: Any,
    tokens: Any,
    *,
    scenario: TextScenario,
    prompt: str,
    reasons: tuple[str, ...] = FINISH_REASONS,
    ended: str = "eos",
) -> str:
    """One generation's outcome: a text the model could write, of a length its token count allows.

    A greedy scenario knows the one right answer. A sampled text may legitimately be empty, but only
    when the model chose its end token first (finish_reason `ended`: "eos", OpenAI's "stop").
    """
    expect(isinstance(text, str), f"text {text!r} is not a string")
    expect(finish_reason in reasons, f"finish_reason {finish_reason!r}, expected one of {reasons}")
    expect(
        isinstance(tokens, int) and 1 <= tokens <= scenario.max_tokens,
        f"tokens {tokens!r}, expected 1..{scenario.max_tokens}",
    )
    assert isinstance(text, str) and isinstance(tokens, int)
    expect(len(text) <= tokens, f"{len(text)} characters from {tokens} one-character tokens")
    if scenario.expected:
        wanted = scenario.expected[prompt]
        expect(text == wanted, f"{prompt!r} -> {text!r}, expected {wanted!r} (greedy)")
        return text
    unknown = sorted(set(text) - scenario.characters)
    expect(not unknown, f"characters the model cannot write: {unknown[:5]}")
    expect(text != "" or finish_reason == ended, f"empty text with finish_reason {finish_reason!r}")
    return text


def check_generated(body: Any, *, scenario: TextScenario, prompt: str) -> str:
    """Generate answer: the model's name, then `check_generated_text`; returns the text."""
    expect(isinstance(body, dict), "answer is not a JSON object")
    model = scenario.model
    expect(body.get("model_name") == model, f"model_name {body.get('model_name')!r}, expected {model!r}")
    return check_generated_text(
        body.get("text_output"),
        body.get("finish_reason"),
        body.get("tokens"),
        scenario=scenario,
        prompt=prompt,
    )


def parse_sse(payload: str) -> list[dict[str, Any]]:
    """The JSON events of a server-sent-events body (`data: {json}` lines, blank-line separated)."""
    events: list[dict[str, Any]] = []
    for line in payload.splitlines():
        if not line.startswith("data:"):
            continue  # comments (": ping"), event:/id: fields, blank separators
        raw = line[len("data:") :].strip()
        try:
            event = json.loads(raw)
        except ValueError as exc:
            raise CheckError(f"event {raw[:80]!r} is not JSON") from exc
        expect(isinstance(event, dict), f"event {raw[:80]!r} is not a JSON object")
        events.append(event)
    return events


def check_stream(payload: str, *, scenario: TextScenario, prompt: str) -> str:
    """generate_stream: token events with text_output, a final one with finish_reason; the whole text
    passes the same checks as a non-streamed answer."""
    events = parse_sse(payload)
    expect(len(events) >= 1, "no event, expected tokens and a final event")
    for event in events:
        expect("error" not in event, f"error event: {str(event.get('error'))[:120]}")
        model = event.get("model_name", scenario.model)
        expect(model == scenario.model, f"event for model {model!r}")
    last = events[-1]
    expect(bool(last.get("finish_reason")), "last event has no finish_reason")
    for event in events[:-1]:
        expect(event.get("finish_reason") in (None, ""), "finish_reason before the last event")
    text = "".join(str(e.get("text_output") or "") for e in events)
    return check_generated_text(
        text, last.get("finish_reason"), last.get("tokens"), scenario=scenario, prompt=prompt
    )


def _openai_object(body: Any, model: str) -> dict[str, Any]:
    """A completion or a stream chunk: a text_completion of the model, with an OpenAI id."""
    expect(isinstance(body, dict), "answer is not a JSON object")
    expect("error" not in body, f"error: {str(body.get('error'))[:120]}")
    expect(body.get("object") == "text_completion", f"object {body.get('object')!r}, not text_completion")
    expect(body.get("model") == model, f"model {body.get('model')!r}, expected {model!r}")
    expect(str(body.get("id")).startswith("cmpl-"), f"id {body.get('id')!r} is not cmpl-...")
    return dict(body)


def _only_choice(body: dict[str, Any]) -> dict[str, Any]:
    choices = body.get("choices")
    expect(isinstance(choices, list) and len(choices) == 1, f"choices {str(choices)[:80]}, expected one")
    assert isinstance(choices, list)
    choice = choices[0]
    expect(isinstance(choice, dict) and choice.get("index") == 0, f"choice {str(choice)[:80]} is not index 0")
    expect(choice.get("logprobs") is None, "logprobs sent, none asked for")
    return dict(choice)


def _completion_tokens(usage: Any, prompt: str) -> Any:
    """usage's completion_tokens, once prompt_tokens (one token per character) and the total add up."""
    expect(isinstance(usage, dict), f"usage {usage!r} is not an object")
    prompt_tokens, tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
    expect(prompt_tokens == len(prompt), f"prompt_tokens {prompt_tokens!r} for {len(prompt)} characters")
    expect(
        isinstance(tokens, int) and usage.get("total_tokens") == len(prompt) + tokens,
        f"usage {usage} does not add up",
    )
    return tokens


def check_completion(body: Any, *, scenario: TextScenario, prompt: str) -> str:
    """OpenAI completion: one choice whose text passes `check_generated_text` with usage's count."""
    body = _openai_object(body, scenario.model)
    choice = _only_choice(body)
    tokens = _completion_tokens(body.get("usage"), prompt)
    return _openai_text(choice.get("text"), choice.get("finish_reason"), tokens, scenario, prompt)


def check_completion_stream(payload: str, *, scenario: TextScenario, prompt: str) -> str:
    """OpenAI stream with include_usage: text chunks (finish_reason on the last only), a usage chunk
    with no choices, then `data: [DONE]`; the text passes the same checks as a completion."""
    data = [line for line in payload.splitlines() if line.startswith("data:")]
    expect(bool(data) and data[-1][len("data:") :].strip() == "[DONE]", "the stream does not end with [DONE]")
    events = [_openai_object(event, scenario.model) for event in parse_sse("\n".join(data[:-1]))]
    expect(len(events) >= 2, f"{len(events)} chunks, expected text chunks and a usage chunk")
    *parts, last = events
    expect(last.get("choices") == [], "the usage chunk carries choices")
    choices = [_only_choice(part) for part in parts]
    expect(all(part.get("usage", None) is None for part in parts), "usage before the last chunk")
    reasons = [choice.get("finish_reason") for choice in choices]
    expect(
        reasons[-1] is not None and not any(reasons[:-1]),
        f"finish_reason not on the last chunk only: {reasons}",
    )
    text = "".join(str(choice.get("text") or "") for choice in choices)
    tokens = _completion_tokens(last.get("usage"), prompt)
    return _openai_text(text, reasons[-1], tokens, scenario, prompt)


def _openai_text(text: Any, reason: Any, tokens: Any, scenario: TextScenario, prompt: str) -> str:
    return check_generated_text(
        text, reason, tokens, scenario=scenario, prompt=prompt, reasons=OPENAI_FINISH_REASONS, ended="stop"
    )


def png_size(payload: bytes) -> tuple[int, int]:
    """(width, height) of a PNG from its IHDR chunk; CheckError when it is not a PNG."""
    expect(payload[:8] == PNG_SIGNATURE, "answer is not a PNG")
    expect(len(payload) >= 24 and payload[12:16] == b"IHDR", "PNG without an IHDR chunk")
    width, height = struct.unpack(">II", payload[16:24])
    expect(width > 0 and height > 0, f"PNG of size {width}x{height}")
    return int(width), int(height)
