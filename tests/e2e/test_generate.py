"""Generation over real HTTP against a real server process serving the real zoo (issue 4's acceptance)."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import numpy as np
import orjson
import pytest

from tests.helpers.servers import RunningServer
from tests.helpers.zoo import (
    DATES,
    GPT,
    Vocabulary,
    generate,
    manifest,
    metric,
    reference_lm_greedy,
    reference_seq2seq_greedy,
    require_models,
    session,
    stream_events,
)
from training.dates import examples, split_days

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PROMPTS = ("The ", "def f(x):\n    return", "Class instances")


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_generation_equals_an_independent_onnxruntime_loop(client: httpx.Client, prompt: str) -> None:
    require_models(GPT)
    expected = reference_lm_greedy(prompt, max_tokens=48)
    events = stream_events(client, GPT, prompt, max_tokens=48, temperature=0)
    # Token for token: without stop strings every event carries exactly one token's text.
    assert [e["text_output"] for e in events[:-1]] == expected
    answer = generate(client, GPT, prompt, max_tokens=48)
    assert answer["text_output"] == "".join(expected)
    assert answer["tokens"] == events[-1]["tokens"]


def test_past_the_window_the_text_follows_the_documented_policy(client: httpx.Client) -> None:
    """The prompt is cropped to the window; past it the context restarts from its last half window.
    Where the two policies agree (the first step), the text is today's cropping too."""
    require_models(GPT)
    window = manifest(GPT)["max_sequence_length"]
    prompt = ("Return the value of the named attribute of object. " * 20)[: window + 37]
    expected = reference_lm_greedy(prompt, max_tokens=window // 2)
    answer = generate(client, GPT, prompt, max_tokens=window // 2)["text_output"]
    assert answer == "".join(expected)
    cropped = reference_lm_greedy(prompt, max_tokens=window // 2, past_the_window="crop")
    assert answer[0] == cropped[0]


@pytest.mark.parametrize(
    "parameters",
    [
        {"temperature": 0.8, "seed": 5},
        {"temperature": 1.0, "top_k": 10, "seed": 6},
        {"temperature": 1.2, "top_p": 0.9, "seed": 7, "stop": ["\n\n", "the "]},
    ],
)
def test_stream_concatenation_equals_the_non_streamed_text(
    client: httpx.Client, parameters: dict[str, object]
) -> None:
    require_models(GPT)
    events = stream_events(client, GPT, "The ", max_tokens=80, **parameters)
    answer = generate(client, GPT, "The ", max_tokens=80, **parameters)
    assert "".join(e["text_output"] for e in events) == answer["text_output"]
    assert events[-1]["finish_reason"] == answer["finish_reason"]
    assert all("finish_reason" not in e for e in events[:-1])


def test_sampling_is_reproducible_per_seed_and_differs_across_seeds(client: httpx.Client) -> None:
    require_models(GPT)
    texts = {
        seed: generate(client, GPT, "The ", max_tokens=60, temperature=1.0, seed=seed)["text_output"]
        for seed in range(4)
    }
    again = generate(client, GPT, "The ", max_tokens=60, temperature=1.0, seed=2)["text_output"]
    assert again == texts[2]
    assert len(set(texts.values())) == 4


def test_stop_strings_end_the_text_before_them(client: httpx.Client) -> None:
    require_models(GPT)
    full = generate(client, GPT, "The ", max_tokens=200, temperature=0)["text_output"]
    stop = full[20:23]
    cut = generate(client, GPT, "The ", max_tokens=200, temperature=0, stop=[stop])
    assert cut["finish_reason"] == "stop"
    assert cut["text_output"] == full[: full.index(stop)]


def test_next_token_top_k_equals_softmax_of_onnxruntime_logits(client: httpx.Client) -> None:
    require_models(GPT)
    vocab = Vocabulary(GPT)
    prompts = ["The value of ", "import os\n"]
    width = max(len(p) for p in prompts)
    pad = vocab.encode(" ")[0]
    # Two rows of one batch must share a length: left-pad the shorter prompt with spaces.
    rows = [[pad] * (width - len(p)) + vocab.encode(p) for p in prompts]
    body = {
        "inputs": [
            {
                "name": "input_ids",
                "datatype": "INT64",
                "shape": [2, width],
                "data": [t for row in rows for t in row],
            }
        ],
        "outputs": [{"name": "logits", "parameters": {"classification": 5}}],
    }
    response = client.post(f"/v2/models/{GPT}/infer", content=orjson.dumps(body))
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert (output["datatype"], output["shape"]) == ("BYTES", [2, 5])
    (logits,) = session(GPT).run(["logits"], {"input_ids": np.array(rows, dtype=np.int64)})
    last = logits[:, -1, :].astype(np.float64)
    probs = np.exp(last - last.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    for row in range(2):
        entries = output["data"][row * 5 : (row + 1) * 5]
        expected = np.argsort(-probs[row], kind="stable")[:5]
        for entry, token in zip(entries, expected, strict=True):
            score, index, label = entry.split(":", 2)
            assert int(index) == token
            assert label == vocab.tokens[token]
            assert float(score) == pytest.approx(probs[row, token], rel=1e-5, abs=1e-7)


def test_disconnecting_a_stream_stops_its_generation(client: httpx.Client, zoo_server: RunningServer) -> None:
    require_models(GPT)
    labels = {"model": GPT, "version": "1"}
    cancelled_before = metric(client, "recap_streams_cancelled_total", model=GPT)
    tokens_before = metric(client, "recap_generated_tokens_total", **labels)
    body = {"text_input": "The ", "parameters": {"max_tokens": 4000, "temperature": 1.0, "seed": 1}}
    with (
        httpx.Client(base_url=zoo_server.url, timeout=60) as leaving,
        leaving.stream("POST", f"/v2/models/{GPT}/generate_stream", json=body) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        received = [line for _, line in zip(range(6), lines, strict=False) if line]
        assert len(received) == 3  # three token events read, then the client hangs up
    deadline = time.monotonic() + 10
    while metric(client, "recap_streams_cancelled_total", model=GPT) == cancelled_before:
        assert time.monotonic() < deadline, "the server never noticed the client leaving"
        time.sleep(0.05)
    assert metric(client, "recap_active_streams", model=GPT) == 0
    spent = metric(client, "recap_generated_tokens_total", **labels) - tokens_before
    time.sleep(0.5)
    # Generation stopped: far fewer than the 4000 tokens asked for, and no more after the cancel.
    assert spent < 1000
    assert metric(client, "recap_generated_tokens_total", **labels) - tokens_before == spent


def test_stream_cap_answers_429_and_frees_its_slots(client: httpx.Client, zoo_server: RunningServer) -> None:
    require_models(GPT)
    body = {"text_input": "The ", "parameters": {"max_tokens": 4000, "temperature": 1.0, "seed": 3}}
    with httpx.Client(base_url=zoo_server.url, timeout=60) as holder:
        open_streams = [
            holder.stream("POST", f"/v2/models/{GPT}/generate_stream", json=body) for _ in range(3)
        ]
        responses = [s.__enter__() for s in open_streams]
        try:
            assert all(r.status_code == 200 for r in responses)
            refused = client.post(f"/v2/models/{GPT}/generate_stream", json=body)
            assert refused.status_code == 429
            assert "3 generation streams" in refused.json()["error"]
        finally:
            for s in open_streams:
                s.__exit__(None, None, None)
    deadline = time.monotonic() + 10
    while metric(client, "recap_active_streams", model=GPT) > 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len(stream_events(client, GPT, "The ", max_tokens=3)) == 4


def _held_out_dates(n: int) -> list[tuple[str, str]]:
    """The held-out (human, ISO) pairs model.json records, or regenerated from training.dates."""
    spec = manifest(DATES)
    recorded = spec.get("held_out_examples") or spec.get("split", {}).get("test_examples")
    if recorded:
        return [(str(pair[0]), str(pair[1])) for pair in recorded[:n]]
    split = spec.get("split", {})
    days = split_days(int(split.get("seed", 0))).test
    return examples(days, n, seed=int(split.get("examples_seed", 1234)))


def test_dates_seq2seq_gets_at_least_98_of_100_held_out_dates(zoo_server: RunningServer) -> None:
    require_models(DATES)
    pairs = _held_out_dates(100)
    assert len(pairs) == 100
    right, wrong = 0, []
    with httpx.Client(base_url=zoo_server.url, timeout=60) as http:
        for human, iso in pairs:
            answer = generate(http, DATES, human, max_tokens=16)
            if answer["text_output"] == iso:
                right += 1
            else:
                wrong.append((human, iso, answer["text_output"]))
    assert right >= 98, f"{right}/100 right; wrong: {wrong[:5]}"
    # The answers are real dates, and greedy HTTP output equals an independent onnxruntime loop.
    for human, _ in pairs[:10]:
        with httpx.Client(base_url=zoo_server.url, timeout=60) as http:
            text = generate(http, DATES, human)["text_output"]
        assert text == reference_seq2seq_greedy(human)
        dt.date.fromisoformat(text)
