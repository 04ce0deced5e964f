"""The OpenAI completions API with the official `openai` client, against a real server process on the zoo's
text models (with API keys): the issue's acceptance, plus the error object's shape over plain HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.helpers.servers import RunningServer, copy_zoo_models, start_server
from tests.helpers.zoo import DATES, GPT, generate, metric, reference_seq2seq_greedy, require_models

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KEY = "openai-e2e-inference-key-0123456789"
METRICS_KEY = "openai-e2e-metrics-key-0123456789ab"
CLASSIFIER = "iris-mlp"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require_models(GPT, DATES, CLASSIFIER)
    root = tmp_path_factory.mktemp("openai")
    repository = root / "models"
    repository.mkdir()
    copy_zoo_models(repository, (GPT, DATES, CLASSIFIER))
    keys = root / "api-keys"
    keys.write_text(f"inference {KEY}\nmetrics {METRICS_KEY}\n")
    env = {"RECAP_API_KEYS_FILE": str(keys), "RECAP_GENERATE_MAX_TOKENS": "4000"}
    running = start_server(repository, root / "server.log", env=env)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    # No retries: a 429 or 5xx must fail the test, not be tried again.
    with openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=KEY, max_retries=0, timeout=60) as oai:
        yield oai


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as plain:
        yield plain


def streamed(client: openai.OpenAI, **request: Any) -> tuple[dict[int, str], dict[int, str], Any]:
    """(text per choice, finish_reason per choice, the usage of the last chunk) of a stream."""
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    usage = None
    for chunk in client.completions.create(stream=True, **request):
        assert chunk.object == "text_completion"
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason is not None:
                assert choice.index not in reasons, "two finish reasons for one choice"
                reasons[choice.index] = choice.finish_reason
        usage = chunk.usage or usage
    return texts, reasons, usage


def test_models_list_lists_the_text_models(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert sorted(model.id for model in models) == sorted([GPT, DATES])
    assert {model.owned_by for model in models} == {"recap-serve"}
    assert client.models.retrieve(GPT).id == GPT
    with pytest.raises(openai.NotFoundError, match="not a text model"):
        client.models.retrieve(CLASSIFIER)


@pytest.mark.parametrize(
    ("model", "prompt"), [(GPT, "The "), (GPT, "def f(x):\n    return"), (DATES, "3 March 2021")]
)
def test_greedy_completion_equals_generate(
    client: openai.OpenAI, http: httpx.Client, model: str, prompt: str
) -> None:
    completion = client.completions.create(model=model, prompt=prompt, max_tokens=40, temperature=0)
    assert completion.object == "text_completion" and completion.model == model
    assert completion.id.startswith("cmpl-")
    (choice,) = completion.choices
    greedy = generate(http, model, prompt, max_tokens=40)
    assert choice.text == greedy["text_output"]
    expected_reason = {"length": "length", "eos": "stop", "stop": "stop"}[greedy["finish_reason"]]
    assert choice.finish_reason == expected_reason and choice.logprobs is None
    assert completion.usage is not None
    assert completion.usage.completion_tokens == greedy["tokens"]
    assert completion.usage.prompt_tokens == len(prompt)  # one token per character
    assert completion.usage.total_tokens == len(prompt) + greedy["tokens"]
    if model == DATES:
        assert choice.text == reference_seq2seq_greedy(prompt) == "2021-03-03"
        assert choice.finish_reason == "stop"  # the model's end token


def test_a_stream_concatenates_to_the_same_text(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {"model": GPT, "prompt": "Return the ", "max_tokens": 60, "temperature": 0}
    completion = client.completions.create(**request)
    texts, reasons, usage = streamed(client, **request, stream_options={"include_usage": True})
    assert texts == {0: completion.choices[0].text}
    assert reasons == {0: completion.choices[0].finish_reason}
    assert usage == completion.usage
    texts, _, usage = streamed(client, **request)
    assert texts == {0: completion.choices[0].text} and usage is None  # usage only when asked


def test_n_2_with_a_seed_gives_two_reproducible_choices(client: openai.OpenAI, http: httpx.Client) -> None:
    request: dict[str, Any] = {
        "model": GPT,
        "prompt": "The ",
        "max_tokens": 40,
        "temperature": 0.9,
        "n": 2,
        "seed": 7,
    }
    first = client.completions.create(**request)
    assert [choice.index for choice in first.choices] == [0, 1]
    texts = [choice.text for choice in first.choices]
    assert texts[0] != texts[1]  # each choice samples with its own seed
    assert [choice.text for choice in client.completions.create(**request).choices] == texts
    # Choice j samples with seed + j: choice 0 is /generate with the same seed.
    for j, text in enumerate(texts):
        assert text == generate(http, GPT, "The ", max_tokens=40, temperature=0.9, seed=7 + j)["text_output"]
    streamed_texts, _, _ = streamed(client, **request)
    assert streamed_texts == dict(enumerate(texts))


def test_a_list_of_prompts(client: openai.OpenAI) -> None:
    prompts = ["3 March 2021", "the 4th of July 1976"]
    completion = client.completions.create(model=DATES, prompt=prompts, temperature=0)
    assert [(c.index, c.text) for c in completion.choices] == [(0, "2021-03-03"), (1, "1976-07-04")]
    texts, reasons, _ = streamed(client, model=DATES, prompt=prompts, temperature=0)
    assert texts == {0: "2021-03-03", 1: "1976-07-04"} and reasons == {0: "stop", 1: "stop"}


@pytest.mark.parametrize(
    ("request_fields", "param", "message"),
    [
        (
            {"model": GPT, "prompt": "The ", "max_tokens": 4001},
            "max_tokens",
            "over this server's cap of 4000",
        ),
        ({"model": GPT, "prompt": "The \u00e9"}, "prompt", "'\u00e9' at position 4"),
        ({"model": GPT, "prompt": "The ", "top_p": 0}, "top_p", "top_p must be in (0, 1]"),
        ({"model": GPT, "prompt": "The ", "echo": True}, "echo", "echo is not supported"),
        ({"model": CLASSIFIER, "prompt": "The "}, "model", "does not generate text"),
    ],
)
def test_a_bad_request_raises_bad_request_error_with_our_message(
    client: openai.OpenAI, request_fields: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(**request_fields)
    body = caught.value.body
    assert isinstance(body, dict) and message in body["message"]  # our message, as the client read it
    assert caught.value.param == param and caught.value.type == "invalid_request_error"


def test_an_unknown_model_raises_not_found_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="unknown model 'gpt-4'") as caught:
        client.completions.create(model="gpt-4", prompt="The ")
    assert caught.value.code == "model_not_found"


def test_chat_completions_say_the_models_have_no_chat_template(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="no chat template"):
        client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "hello"}])


def test_a_wrong_key_raises_authentication_error(server: RunningServer) -> None:
    base = f"{server.url}/openai/v1"
    with openai.OpenAI(base_url=base, api_key="not-a-key-0123456789abcdef", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError, match="missing or unknown API key"):
            wrong.completions.create(model=GPT, prompt="The ", max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
    unscoped = openai.OpenAI(base_url=base, api_key=METRICS_KEY, max_retries=0)
    with unscoped, pytest.raises(openai.PermissionDeniedError, match="lacks the 'inference' scope"):
        unscoped.completions.create(model=GPT, prompt="The ", max_tokens=2)


def test_errors_are_openais_error_object_over_plain_http(http: httpx.Client) -> None:
    cases = [
        (
            "POST",
            "/openai/v1/completions",
            {"model": GPT, "prompt": 3},
            400,
            "invalid_request_error",
            "prompt",
        ),
        ("POST", "/openai/v1/completions", {"model": "nope", "prompt": "a"}, 404, "not_found_error", None),
        ("POST", "/openai/v1/completions", {"model": GPT}, 400, "invalid_request_error", "prompt"),
        ("POST", "/openai/v1/embeddings", {"model": GPT}, 404, "not_found_error", None),
        ("GET", "/openai/v1/completions", None, 405, "invalid_request_error", None),
    ]
    for method, path, body, status, kind, param in cases:
        response = http.request(method, path, json=body)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["param"]) == (kind, param), error
    keyless = http.post(
        "/openai/v1/completions", json={"model": GPT, "prompt": "a"}, headers={"Authorization": ""}
    )
    assert keyless.status_code == 401 and keyless.json()["error"]["type"] == "authentication_error"


def test_the_pipeline_counts_protocol_openai(client: openai.OpenAI, http: httpx.Client) -> None:
    metrics = {"Authorization": f"Bearer {METRICS_KEY}"}
    # /metrics writes the labels in name order
    labels = {"endpoint": "completions", "model": DATES, "protocol": "openai", "version": "1"}
    failures = dict(sorted({**labels, "reason": "invalid_input"}.items()))
    with httpx.Client(base_url=str(http.base_url), headers=metrics, timeout=30) as scraper:
        before = metric(scraper, "recap_requests_total", **labels)
        failed = metric(scraper, "recap_request_failures_total", **failures)
        client.completions.create(model=DATES, prompt="12.06.1999", temperature=0)
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model=DATES, prompt="12.06.1999", max_tokens=0)
        assert metric(scraper, "recap_requests_total", **labels) == before + 2
        assert metric(scraper, "recap_request_failures_total", **failures) == failed + 1


def test_a_client_that_leaves_a_stream_stops_every_choice(server: RunningServer, http: httpx.Client) -> None:
    metrics = {"Authorization": f"Bearer {METRICS_KEY}"}
    body = {"model": GPT, "prompt": "The ", "max_tokens": 4000, "n": 2, "seed": 1, "stream": True}
    with httpx.Client(base_url=server.url, headers=metrics, timeout=30) as scraper:
        cancelled = metric(scraper, "recap_streams_cancelled_total", model=GPT)
        tokens = metric(scraper, "recap_generated_tokens_total", model=GPT, version="1")
        with http.stream("POST", "/openai/v1/completions", json=body) as response:
            assert response.status_code == 200
            assert [line for _, line in zip(range(6), response.iter_lines(), strict=False) if line]
        deadline = time.monotonic() + 10
        while metric(scraper, "recap_streams_cancelled_total", model=GPT) < cancelled + 2:
            stopped = metric(scraper, "recap_streams_cancelled_total", model=GPT) - cancelled
            assert time.monotonic() < deadline, f"the server stopped {stopped:.0f} of the 2 choices"
            time.sleep(0.05)
        assert metric(scraper, "recap_active_streams", model=GPT) == 0
        spent = metric(scraper, "recap_generated_tokens_total", model=GPT, version="1") - tokens
        time.sleep(0.5)
        assert spent < 2000  # far fewer than the 2 x 4000 asked for, and none after the cancel
        assert metric(scraper, "recap_generated_tokens_total", model=GPT, version="1") - tokens == spent
