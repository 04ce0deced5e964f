"""The completions body parser: OpenAI's defaults, per-choice seeds, the fields it refuses, and `param`."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.api.openai_request import (
    DEFAULT_MAX_TOKENS,
    MAX_CHOICES,
    FieldError,
    model_of,
    parse_completion_request,
    prepare,
)
from service.errors import InvalidInputError
from service.runtime.generation import TextModel
from service.runtime.tokenizer import CharTokenizer
from service.settings import Settings
from tests.helpers.text_models import SPECIALS, VOCAB, bigram_lm, cycle_table

SETTINGS = Settings(generate_max_tokens=40, generate_default_max_tokens=10, generate_max_prompt_length=20)


def parse(**document: Any) -> Any:
    return parse_completion_request({"model": "m", "prompt": "a", **document}, SETTINGS)


def refused(param: str | None, **document: Any) -> FieldError:
    with pytest.raises(FieldError) as caught:
        parse(**document)
    assert caught.value.param == param
    return caught.value


def text_model() -> TextModel:
    tokenizer = CharTokenizer(tuple(VOCAB), SPECIALS)
    return TextModel(bigram_lm(cycle_table()), tokenizer, "language_model", 8)


def test_omitted_fields_take_openais_defaults_not_generates() -> None:
    request = parse()
    (params,) = request.params
    assert params.max_tokens == DEFAULT_MAX_TOKENS == 16  # generate's default here is 10
    assert (params.sampling.temperature, params.sampling.top_p, params.sampling.seed) == (1.0, 1.0, None)
    assert (request.prompts, request.n, request.stream, request.include_usage) == (("a",), 1, False, False)
    assert parse(max_tokens=None, temperature=None, n=None).params == request.params  # null is omitted


def test_the_default_max_tokens_never_passes_the_cap() -> None:
    small = Settings(generate_max_tokens=8, generate_default_max_tokens=8)
    request = parse_completion_request({"model": "m", "prompt": "a"}, small)
    assert request.params[0].max_tokens == 8


def test_each_choice_of_a_prompt_gets_seed_plus_its_index() -> None:
    request = parse(n=3, seed=2**63 - 2, stop=["x", "yz"], temperature=0.5, top_p=0.9)
    assert [p.sampling.seed for p in request.params] == [2**63 - 2, 2**63 - 1, 0]  # wraps in range
    assert {(p.stop, p.sampling.temperature, p.sampling.top_p) for p in request.params} == {
        (("x", "yz"), 0.5, 0.9)
    }
    assert [p.sampling.seed for p in parse(n=2).params] == [None, None]  # no seed: fresh randomness


def test_stream_options() -> None:
    assert parse(stream=True, stream_options={"include_usage": True}).include_usage
    assert not parse(stream=True, stream_options={"include_obfuscation": False}).include_usage
    assert "stream: true" in refused("stream_options", stream_options={"include_usage": True}).message
    assert "boolean" in refused("stream_options", stream=True, stream_options={"include_usage": 1}).message
    assert "unknown stream option" in refused("stream_options", stream=True, stream_options={"x": 1}).message


@pytest.mark.parametrize(
    ("field", "value", "passes"),
    [
        ("echo", False, True),
        ("echo", 0, False),
        ("frequency_penalty", 0.0, True),
        ("presence_penalty", 0, True),
        ("presence_penalty", 0.5, False),
        ("frequency_penalty", False, False),
        ("logit_bias", {}, True),
        ("logit_bias", {"3": 1}, False),
        ("logprobs", None, True),
        ("logprobs", 0, False),
        ("suffix", "", True),
        ("user", "anyone", True),
        ("best_of", 1, True),
        ("best_of", 3, False),
    ],
)
def test_unsupported_fields_pass_only_at_their_neutral_value(field: str, value: object, passes: bool) -> None:
    if passes:
        parse(**{field: value})
    else:
        assert refused(field, **{field: value}).code == "unsupported"


def test_checks_shared_with_generate_name_their_field() -> None:
    assert refused("max_tokens", max_tokens=41).message == "max_tokens 41 is over this server's cap of 40"
    assert refused("temperature", temperature=float("inf")).code == "invalid_input"
    assert "must be an integer" in refused("seed", seed="7").message
    assert "at most 16 stop strings" in refused("stop", stop=["s"] * 17).message
    assert refused("top_p", top_p=1.5).message == "top_p must be in (0, 1], got 1.5"


def test_choices_are_capped_over_prompts_times_n() -> None:
    parse(prompt=["a"] * 4, n=MAX_CHOICES // 4)
    assert f"at most {MAX_CHOICES}" in refused("n", prompt=["a"] * 4, n=MAX_CHOICES // 4 + 1).message


@pytest.mark.parametrize("prompt", [None, [], "", 3, ["a", 3], [[1, 2]]])
def test_a_prompt_is_text(prompt: object) -> None:
    if prompt == "":
        parse(prompt=prompt)  # the runtime refuses it when it prepares the generation
        return
    refused("prompt", prompt=prompt)


def test_model_of_reads_the_model_before_the_rest() -> None:
    assert model_of(orjson.dumps({"model": "pydoc-gpt", "prompt": 3})) == (
        "pydoc-gpt",
        {"model": "pydoc-gpt", "prompt": 3},
    )
    for body in (b"[]", b'{"model": ""}', b'{"model": 3}', b"{}"):
        with pytest.raises(InvalidInputError):
            model_of(body)
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        model_of(b"{nope")


def test_prepare_counts_each_prompt_once_and_names_the_prompt_at_fault() -> None:
    prepared = prepare(text_model(), parse(prompt=["ab", "dcba"], n=2), SETTINGS)
    assert [g.prompt_ids for g in prepared.generations] == [[3, 4], [3, 4], [6, 5, 4, 3], [6, 5, 4, 3]]
    assert prepared.prompt_tokens == 6
    with pytest.raises(FieldError, match=r"^prompt\[1\] has 1 character\(s\)") as caught:
        prepare(text_model(), parse(prompt=["ab", "az"]), SETTINGS)
    assert caught.value.param == "prompt"
    with pytest.raises(FieldError, match=r"^prompt is empty"):
        prepare(text_model(), parse(prompt=""), SETTINGS)
