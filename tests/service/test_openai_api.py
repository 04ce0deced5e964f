"""The OpenAI routes in process, on tiny ONNX text models: completions (plain, n, prompt lists, streamed),
the model list, the chat refusal, OpenAI's error object for every failure, and the pipeline's counting."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.main import create_app
from service.settings import Settings
from tests.helpers.apps import make_client
from tests.helpers.text_models import SPECIALS, VOCAB, bigram_lm_model, copy_seq2seq_model, cycle_table

KEY = "openai-inference-key-0123456789ab"
METRICS_ONLY = "openai-metrics-key-0123456789abc"


def samples(client: TestClient, family: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of one counter family in /metrics."""
    return [
        (dict(sample.labels), sample.value)
        for metric in text_string_to_metric_families(client.get("/metrics").text)
        if metric.name == family
        for sample in metric.samples
        if sample.name == family + "_total"
    ]


def save(root: Path, name: str, model: onnx.ModelProto, manifest: dict[str, Any]) -> None:
    folder = root / name / "1"
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    (folder / "model.json").write_bytes(orjson.dumps({"name": name, "version": 1, **manifest}))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, repo_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("openai-models")
    tokenizer = {"type": "char", "vocab": VOCAB, "special_tokens": SPECIALS}
    random_table = np.random.default_rng(0).normal(size=(len(VOCAB), len(VOCAB))).astype(np.float32)
    text = {"max_sequence_length": 8, "tokenizer": tokenizer}
    save(root, "cycle-lm", bigram_lm_model(cycle_table()), {"task": "language_model", **text})
    save(root, "random-lm", bigram_lm_model(random_table), {"task": "language_model", **text})
    save(root, "copy", copy_seq2seq_model(), {"task": "seq2seq", **text})
    shutil.copytree(repo_dir / "iris-like", root / "iris-like")  # a model that does not generate text
    return root


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[TestClient]:
    settings = Settings(
        model_repository=repo,
        generate_max_tokens=40,
        generate_default_max_tokens=10,
        generate_max_prompt_length=20,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def complete(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/openai/v1/completions", json=body)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def generate(client: TestClient, model: str, text: str, **parameters: Any) -> dict[str, Any]:
    response = client.post(
        f"/v2/models/{model}/generate", json={"text_input": text, "parameters": parameters}
    )
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def chunks(client: TestClient, **body: Any) -> list[Any]:
    """The stream's events, decoded, with "[DONE]" as the string it is."""
    with client.stream("POST", "/openai/v1/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines), lines
    payloads = [line.removeprefix("data: ") for line in lines]
    return [payload if payload == "[DONE]" else orjson.loads(payload) for payload in payloads]


def test_a_greedy_completion_is_the_generate_text_in_openai_form(client: TestClient) -> None:
    answer = complete(client, model="cycle-lm", prompt="ab", max_tokens=6, temperature=0)
    assert answer.pop("id").startswith("cmpl-") and isinstance(answer.pop("created"), int)
    assert answer == {
        "object": "text_completion",
        "model": "cycle-lm",
        "choices": [{"text": "cd abc", "index": 0, "finish_reason": "length", "logprobs": None}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 6, "total_tokens": 8},
    }
    assert answer["choices"][0]["text"] == generate(client, "cycle-lm", "ab", max_tokens=6)["text_output"]


def test_openais_defaults_16_tokens_at_temperature_1(client: TestClient) -> None:
    answer = complete(client, model="random-lm", prompt="a", seed=5)
    assert answer["usage"]["completion_tokens"] == 16 or answer["choices"][0]["finish_reason"] == "stop"
    sampled = generate(client, "random-lm", "a", max_tokens=16, temperature=1.0, seed=5)
    assert answer["choices"][0]["text"] == sampled["text_output"]


def test_eos_and_stop_strings_are_stop(client: TestClient) -> None:
    copied = complete(client, model="copy", prompt="dab c", temperature=0)
    assert copied["choices"][0] | {"index": 0} == {
        "text": "dab c",
        "index": 0,
        "finish_reason": "stop",  # the model chose eos
        "logprobs": None,
    }
    assert copied["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    stopped = complete(client, model="cycle-lm", prompt="a", temperature=0, stop=[" a"], max_tokens=20)
    assert stopped["choices"][0]["text"] == "bcd" and stopped["choices"][0]["finish_reason"] == "stop"


def test_n_choices_each_get_their_seed(client: TestClient) -> None:
    body = {"model": "random-lm", "prompt": "ab", "max_tokens": 20, "n": 3, "seed": 40}
    answer = complete(client, **body)
    texts = [c["text"] for c in answer["choices"]]
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2]
    assert texts == [c["text"] for c in complete(client, **body)["choices"]]  # reproducible
    assert len(set(texts)) > 1
    for j, text in enumerate(texts):  # choice j samples with seed + j, as /generate would
        assert (
            text
            == generate(client, "random-lm", "ab", max_tokens=20, temperature=1.0, seed=40 + j)["text_output"]
        )
    assert answer["usage"]["prompt_tokens"] == 2  # the prompt counts once


def test_a_list_of_prompts_numbers_choices_prompt_by_prompt(client: TestClient) -> None:
    answer = complete(client, model="copy", prompt=["ab", "dcb", "a"], n=2, temperature=0)
    assert [(c["index"], c["text"]) for c in answer["choices"]] == [
        (0, "ab"), (1, "ab"), (2, "dcb"), (3, "dcb"), (4, "a"), (5, "a"),
    ]  # fmt: skip
    assert answer["usage"]["prompt_tokens"] == 6


def test_a_stream_is_text_completion_chunks_then_done(client: TestClient) -> None:
    events = chunks(client, model="cycle-lm", prompt="a", max_tokens=5, temperature=0)
    assert events[-1] == "[DONE]"
    body = events[:-1]
    assert {e["object"] for e in body} == {"text_completion"} and len({e["id"] for e in body}) == 1
    assert all("usage" not in e for e in body)
    assert "".join(e["choices"][0]["text"] for e in body) == "bcd a"
    assert [e["choices"][0]["finish_reason"] for e in body] == [None] * (len(body) - 1) + ["length"]
    assert all(e["choices"][0]["logprobs"] is None for e in body)


def test_a_stream_of_several_choices_equals_the_plain_answer(client: TestClient) -> None:
    body = {"model": "random-lm", "prompt": ["ab", "c"], "max_tokens": 12, "n": 2, "seed": 3, "stop": "dd"}
    plain = complete(client, **body)["choices"]
    events = chunks(client, **body, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    *parts, last = events[:-1]
    assert last["choices"] == [] and last["usage"]["prompt_tokens"] == 3
    assert all(e["usage"] is None for e in parts)
    assert all(len(e["choices"]) == 1 for e in parts)
    for expected in plain:
        mine = [e["choices"][0] for e in parts if e["choices"][0]["index"] == expected["index"]]
        assert "".join(c["text"] for c in mine) == expected["text"]
        assert [c["finish_reason"] for c in mine][-1] == expected["finish_reason"]
    assert last["usage"]["completion_tokens"] == complete(client, **body)["usage"]["completion_tokens"]


def test_the_model_list_is_the_text_models(client: TestClient) -> None:
    listing = client.get("/openai/v1/models").json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["copy", "cycle-lm", "random-lm"]
    assert {(m["object"], m["owned_by"]) for m in listing["data"]} == {("model", "recap-serve")}
    assert client.get("/openai/v1/models/copy").json()["id"] == "copy"
    not_text = client.get("/openai/v1/models/iris-like")
    assert not_text.status_code == 404 and "not a text model" in not_text.json()["error"]["message"]


def test_chat_completions_say_there_is_no_chat_template(client: TestClient) -> None:
    body = {"model": "cycle-lm", "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/openai/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "no chat template" in error["message"] and "/openai/v1/completions" in error["message"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "unsupported")


# (body, status, param, message fragment)
BAD: list[tuple[dict[str, Any], int, str | None, str]] = [
    ({"model": "cycle-lm", "prompt": "abz"}, 400, "prompt", "prompt has 1 character(s)"),
    ({"model": "cycle-lm", "prompt": ["a", ""]}, 400, "prompt", "prompt[1] is empty"),
    ({"model": "cycle-lm", "prompt": "a" * 21}, 400, "prompt", "accepts at most 20"),
    ({"model": "cycle-lm", "prompt": [1, 2]}, 400, "prompt", "token ids is not supported"),
    ({"model": "cycle-lm"}, 400, "prompt", "'prompt' must be a string"),
    ({"model": "cycle-lm", "prompt": "a", "max_tokens": 41}, 400, "max_tokens", "cap of 40"),
    ({"model": "cycle-lm", "prompt": "a", "max_tokens": 0}, 400, "max_tokens", "max_tokens must be >= 1"),
    ({"model": "cycle-lm", "prompt": "a", "temperature": "hot"}, 400, "temperature", "must be a number"),
    ({"model": "cycle-lm", "prompt": "a", "temperature": -1}, 400, "temperature", "finite number >= 0"),
    ({"model": "cycle-lm", "prompt": "a", "top_p": 0}, 400, "top_p", "top_p must be in (0, 1]"),
    ({"model": "cycle-lm", "prompt": "a", "seed": -1}, 400, "seed", "seed must be in"),
    ({"model": "cycle-lm", "prompt": "a", "stop": [1]}, 400, "stop", "array of strings"),
    ({"model": "cycle-lm", "prompt": "a", "n": 0}, 400, "n", "n must be >= 1"),
    ({"model": "cycle-lm", "prompt": ["a"] * 4, "n": 5}, 400, "n", "20 choices"),
    ({"model": "cycle-lm", "prompt": "a", "stream": "yes"}, 400, "stream", "must be a boolean"),
    ({"model": "cycle-lm", "prompt": "a", "stream_options": {}}, 400, "stream_options", "stream: true"),
    ({"model": "cycle-lm", "prompt": "a", "echo": True}, 400, "echo", "not supported"),
    ({"model": "cycle-lm", "prompt": "a", "temprature": 1}, 400, "temprature", "unknown field"),
    ({"prompt": "a"}, 400, "model", "'model' must be the name of a model"),
    ({"model": "iris-like", "prompt": "a"}, 400, "model", "does not generate text"),
    ({"model": "nope", "prompt": "a"}, 404, None, "unknown model 'nope'"),
]


@pytest.mark.parametrize("case", BAD, ids=[f"{c[2]}-{c[3][:24]}" for c in BAD])
@pytest.mark.parametrize("stream", [False, True])
def test_bad_requests_get_openais_error_object(
    client: TestClient, stream: bool, case: tuple[dict[str, Any], int, str | None, str]
) -> None:
    body, status, param, message = case
    if stream and "stream" not in body and "stream_options" not in body:
        body = {**body, "stream": True}
    response = client.post("/openai/v1/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"]
    assert error["param"] == param
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert error["code"] == ("model_not_found" if status == 404 else error["code"]) and error["code"]


def test_the_neutral_values_of_unsupported_fields_pass(client: TestClient) -> None:
    neutral = {"echo": False, "logprobs": None, "best_of": 1, "frequency_penalty": 0.0, "user": "u-1"}
    answer = complete(client, model="cycle-lm", prompt="a", max_tokens=2, temperature=0, **neutral)
    assert answer["choices"][0]["text"] == "bc"


def test_framework_errors_under_the_prefix_are_error_objects_too(client: TestClient) -> None:
    for response, status in (
        (client.post("/openai/v1/embeddings", json={}), 404),
        (client.get("/openai/v1/completions"), 405),
        (client.post("/openai/v1/completions", content=b"{nope"), 400),
    ):
        assert response.status_code == status
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert client.get("/v2/nope").json() == {"error": "no route GET /v2/nope"}  # REST keeps its own


def test_the_pipeline_counts_openai_requests(repo: Path) -> None:
    with make_client(repo) as fresh:
        complete(fresh, model="cycle-lm", prompt="a", max_tokens=2)
        chunks(fresh, model="cycle-lm", prompt="a", max_tokens=2)
        assert (
            fresh.post("/openai/v1/completions", json={"model": "cycle-lm", "prompt": "z"}).status_code == 400
        )
        assert fresh.post("/openai/v1/completions", json={"model": "nope", "prompt": "a"}).status_code == 404
        requests = samples(fresh, "recap_requests")
        failures = samples(fresh, "recap_request_failures")
    lm = {"model": "cycle-lm", "version": "1", "protocol": "openai", "endpoint": "completions"}
    unknown = lm | {"model": "", "version": ""}
    assert sorted(requests, key=str) == sorted([(lm, 3.0), (unknown, 1.0)], key=str)
    assert sorted(failures, key=str) == sorted(
        [(lm | {"reason": "invalid_input"}, 1.0), (unknown | {"reason": "model_not_found"}, 1.0)], key=str
    )


def test_keys_are_the_pipelines_bearer_keys(repo: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"inference {KEY}\nmetrics {METRICS_ONLY}\n")
    body = {"model": "cycle-lm", "prompt": "a", "max_tokens": 2}
    with make_client(repo, api_keys_file=keys) as keyed:
        for path, method in (("/openai/v1/completions", "POST"), ("/openai/v1/models", "GET")):
            json = body if method == "POST" else None
            wrong = keyed.request(method, path, json=json, headers={"Authorization": "Bearer wrong"})
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
            assert wrong.json()["error"]["type"] == "authentication_error"
            assert wrong.json()["error"]["code"] == "unauthenticated"
            scoped = keyed.request(
                method, path, json=json, headers={"Authorization": f"Bearer {METRICS_ONLY}"}
            )
            assert scoped.status_code == 403 and scoped.json()["error"]["type"] == "permission_error"
            right = keyed.request(method, path, json=json, headers={"Authorization": f"Bearer {KEY}"})
            assert right.status_code == 200, right.text


def test_the_stream_cap_is_a_rate_limit_error(repo: Path) -> None:
    with make_client(repo, generate_max_streams=1) as capped:
        body = {"model": "cycle-lm", "prompt": "a", "max_tokens": 3, "stream": True}
        with capped.stream("POST", "/openai/v1/completions", json=body) as first:
            assert first.status_code == 200
            second = capped.post("/openai/v1/completions", json=body)
            assert second.status_code == 429 and second.headers["retry-after"] == "1"
            assert second.json()["error"]["type"] == "rate_limit_error"
            first.read()


def test_past_the_deadline_a_stream_ends_with_length_and_an_answer_is_a_timeout_error(repo: Path) -> None:
    with make_client(repo, request_timeout_seconds=0.3, generate_max_tokens=100_000) as slow:
        body = {"model": "cycle-lm", "prompt": "a", "max_tokens": 100_000, "n": 2, "temperature": 0}
        events = chunks(slow, **body)
        finals = [e["choices"][0] for e in events[:-1] if e["choices"][0]["finish_reason"] is not None]
        assert sorted((c["index"], c["finish_reason"]) for c in finals) == [(0, "length"), (1, "length")]
        answer = slow.post("/openai/v1/completions", json=body)
        assert answer.status_code == 504
        assert answer.json()["error"]["type"] == "timeout_error"
        assert answer.json()["error"]["code"] == "deadline_exceeded"
