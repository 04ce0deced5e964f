"""The generation rows of the bad-input table, over real HTTP against the real zoo; afterwards good
requests still answer right and the server still serves (a companion of the server's own table)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.helpers.servers import RunningServer
from tests.helpers.zoo import (
    DATES,
    GAN,
    GPT,
    SEQUENCE_MODELS,
    generate,
    manifest,
    reference_lm_greedy,
    require_models,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
HUGE = "x" * 100_000


def gen(text: Any = "The ", **parameters: Any) -> dict[str, Any]:
    return {"text_input": text, "parameters": parameters}


# (case id, model, body, status, message fragment); every row runs on generate and generate_stream.
GENERATE_CASES: list[tuple[str, str, Any, int, str]] = [
    ("unknown-characters", GPT, gen("naïve → π"), 400, "'ï' at position 2"),
    ("unknown-characters-dates", DATES, gen("March 3rd, 2021 ☃"), 400, "'☃' at position 16"),
    ("empty-prompt", GPT, gen(""), 400, "text_input is empty"),
    ("prompt-over-cap", GPT, gen("a" * 2001), 400, "accepts at most 2000"),
    ("source-over-encoder", DATES, gen("1 January 2000 " * 10), 400, "encoder takes at most"),
    ("max-tokens-over-cap", GPT, gen(max_tokens=4001), 400, "over this server's cap of 4000"),
    ("max-tokens-zero", GPT, gen(max_tokens=0), 400, "max_tokens must be >= 1"),
    ("max-tokens-string", GPT, gen(max_tokens="10"), 400, "'max_tokens' must be an integer, got a string"),
    ("max-tokens-bool", GPT, gen(max_tokens=True), 400, "'max_tokens' must be an integer, got a boolean"),
    ("max-tokens-fraction", GPT, gen(max_tokens=2.5), 400, "'max_tokens' must be an integer"),
    ("temperature-string", GPT, gen(temperature="hot"), 400, "'temperature' must be a number"),
    ("temperature-negative", GPT, gen(temperature=-1), 400, "temperature must be a finite number >= 0"),
    ("top-k-negative", GPT, gen(top_k=-3), 400, "top_k must be >= 0"),
    ("top-p-zero", GPT, gen(top_p=0), 400, "top_p must be in (0, 1]"),
    ("top-p-list", GPT, gen(top_p=[0.5]), 400, "'top_p' must be a number, got an array"),
    ("seed-negative", GPT, gen(seed=-1), 400, "seed must be in [0, 2**63)"),
    ("seed-2**63", GPT, gen(seed=2**63), 400, "seed must be in [0, 2**63)"),
    (
        "seed-huge",
        GPT,
        b'{"text_input": "a", "parameters": {"seed": 1180591620717411303424}}',
        400,
        "seed must be in",
    ),
    ("stop-number", GPT, gen(stop=3), 400, "'stop' must be a string or an array of strings"),
    ("stop-empty", GPT, gen(stop=[""]), 400, "each stop string must have 1 to 64 characters"),
    ("unknown-parameter", GPT, gen(temprature=0.5), 400, "unknown parameter 'temprature'"),
    (
        "parameters-not-object",
        GPT,
        {"text_input": "a", "parameters": [1]},
        400,
        "'parameters' must be a JSON",
    ),
    ("text-not-string", GPT, {"text_input": ["The"]}, 400, "'text_input' must be a string, got an array"),
    ("no-text", GPT, {"parameters": {}}, 400, "'text_input' must be a string, got null"),
    ("huge-unknown-field", GPT, {"text_input": "a", HUGE: 1}, 400, "unknown field 'xxxx"),
    ("body-not-object", GPT, [1, 2], 400, "the body must be a JSON object"),
    ("invalid-json", GPT, b'{"text_input": ', 400, "not valid JSON"),
    ("not-a-text-model", "digits-rnn", gen(), 400, "does not generate text"),
    ("unknown-model", "no-such-model", gen(), 404, "unknown model 'no-such-model'"),
]

SAMPLE_CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("count-zero", GAN, {"count": 0}, 400, "count"),
    ("count-over-limit", GAN, {"count": 100_000}, 400, "over this server's limit"),
    ("count-not-integer", GAN, {"count": "many"}, 400, "count"),
    ("seed-negative", GAN, {"seed": -5}, 400, "seed"),
    ("scale-huge", GAN, {"scale": 1000}, 400, "scale"),
    ("not-a-generator", GPT, {}, 400, "not an image generator"),
]


def sequence_body(length: int) -> bytes:
    data = [1.0] * (2 * length * 8)
    return orjson.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, length, 8], "data": data}]}
    )


@pytest.mark.parametrize("route", ["generate", "generate_stream"])
@pytest.mark.parametrize("case", GENERATE_CASES, ids=[c[0] for c in GENERATE_CASES])
def test_bad_generate_request(client: httpx.Client, route: str, case: tuple[str, str, Any, int, str]) -> None:
    _, model, body, status, message = case
    if model in (GPT, DATES, GAN, "digits-rnn"):
        require_models(model)
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = client.post(f"/v2/models/{model}/{route}", content=content)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert message in error
    assert len(error) < 600  # never echoes the payload


@pytest.mark.parametrize("case", SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES])
def test_bad_samples_request(client: httpx.Client, case: tuple[str, str, dict[str, Any], int, str]) -> None:
    _, model, params, status, message = case
    require_models(model)
    response = client.get(f"/v1/models/{model}/samples.png", params=params)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_sequences_the_classifiers_cannot_take(client: httpx.Client, name: str) -> None:
    require_models(name)
    limit = manifest(name)["max_sequence_length"]
    empty = client.post(f"/v2/models/{name}/infer", content=sequence_body(0))
    assert empty.status_code == 400
    assert "sequence is empty" in empty.json()["error"]
    long = client.post(f"/v2/models/{name}/infer", content=sequence_body(limit + 1))
    assert long.status_code == 400
    assert f"over the model's maximum of {limit}" in long.json()["error"]


def test_good_requests_still_answer_right_after_the_table(
    client: httpx.Client, zoo_server: RunningServer
) -> None:
    require_models(GPT)
    assert zoo_server.process.poll() is None
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    expected = "".join(reference_lm_greedy("The ", max_tokens=20))
    assert generate(client, GPT, "The ", max_tokens=20)["text_output"] == expected
    with client.stream("POST", f"/v2/models/{GPT}/generate_stream", json=gen(max_tokens=5)) as response:
        assert response.status_code == 200
        assert len([line for line in response.iter_lines() if line]) == 6
    bad_log = zoo_server.log()
    assert "Traceback" not in bad_log, bad_log[-2000:]
