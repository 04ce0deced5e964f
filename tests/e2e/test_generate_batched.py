"""The decode loop over real HTTP: greedy text equal to an independent full-recompute loop for both text
models, seeded streams unchanged by batching, a client leaving one of 8 streams, V2 infer as before, and
the generation latency histograms on /metrics."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.servers import MODELS, RunningServer, start_server
from tests.helpers.zoo import (
    DATES,
    GPT,
    Vocabulary,
    generate,
    manifest,
    metric,
    model_dir,
    reference_lm_greedy,
    reference_seq2seq_greedy,
    require_models,
    session,
    stream_events,
)

STREAMS = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require_models(GPT, DATES)
    if "kv_cache" not in manifest(GPT):
        pytest.skip("pydoc-gpt's model.json lists no KV-cache graphs")
    log = tmp_path_factory.mktemp("batched") / "server.log"
    running = start_server(
        MODELS, log, env={"RECAP_GENERATE_MAX_STREAMS": "16", "RECAP_GENERATE_MAX_TOKENS": "2000"}
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def streamed_text(events: list[dict[str, Any]]) -> str:
    assert "finish_reason" in events[-1], events[-1]
    return "".join(event["text_output"] for event in events)


def test_greedy_http_text_equals_an_independent_full_recompute_loop(client: httpx.Client) -> None:
    expected = "".join(reference_lm_greedy("The ", 120))
    assert generate(client, GPT, "The ", max_tokens=120)["text_output"] == expected
    assert streamed_text(stream_events(client, GPT, "The ", max_tokens=120)) == expected


@pytest.mark.parametrize("source", ["March 3, 2021", "3/4/1999", "Sunday 12 October 1975", "29.02.2004"])
def test_seq2seq_greedy_http_text_equals_an_independent_loop(client: httpx.Client, source: str) -> None:
    expected = reference_seq2seq_greedy(source)
    assert generate(client, DATES, source, max_tokens=64)["text_output"] == expected
    assert streamed_text(stream_events(client, DATES, source, max_tokens=64)) == expected


def run_streams(url: str, bodies: list[dict[str, Any]], leave: int | None = None) -> list[str | None]:
    """`bodies` as concurrent generate_stream requests, each on its own connection, started together;
    the client of `leave` reads three events and hangs up (None in the result)."""
    results: list[str | None] = [None] * len(bodies)
    errors: list[BaseException] = []
    start = threading.Barrier(len(bodies))

    def one(index: int) -> None:
        try:
            with httpx.Client(base_url=url, timeout=120) as http:
                start.wait()
                with http.stream("POST", f"/v2/models/{GPT}/generate_stream", json=bodies[index]) as response:
                    assert response.status_code == 200, response.read()
                    lines = (line for line in response.iter_lines() if line)
                    if index == leave:
                        for _ in range(3):
                            next(lines)
                        return  # the connection closes with the client
                    events = [
                        httpx.Response(200, content=line.removeprefix("data: ")).json() for line in lines
                    ]
                    results[index] = streamed_text(events)
        except BaseException as error:  # re-raised in the test thread
            errors.append(error)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    return results


def seeded(seed: int, max_tokens: int = 80) -> dict[str, Any]:
    return {"text_input": "def ", "parameters": {"max_tokens": max_tokens, "temperature": 0.9, "seed": seed}}


def decode_steps_over(client: httpx.Client, streams: int) -> float:
    """Decode steps of pydoc-gpt that ran more than `streams` streams together (a bucket bound)."""
    buckets = {
        sample.labels["le"]: sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        if family.name == "recap_generate_decode_batch_size"
        for sample in family.samples
        if sample.name.endswith("_bucket") and sample.labels["model"] == GPT
    }
    return buckets.get("+Inf", 0.0) - buckets.get(f"{float(streams)}", 0.0)


def test_a_seeded_stream_is_identical_alone_and_in_a_batch_of_8(
    server: RunningServer, client: httpx.Client
) -> None:
    (alone,) = run_streams(server.url, [seeded(42)])
    before = decode_steps_over(client, 4)
    together = run_streams(server.url, [seeded(seed) for seed in (1, 2, 3, 42, 5, 6, 7, 8)])
    assert together[3] == alone
    assert len(set(together)) == STREAMS  # the others really sampled their own texts
    assert decode_steps_over(client, 4) > before  # and they ran batched


def test_one_of_8_clients_leaving_leaves_the_other_7_complete_and_correct(
    server: RunningServer, client: httpx.Client
) -> None:
    bodies = [seeded(100 + i, max_tokens=60) for i in range(STREAMS)]
    bodies[5] = seeded(105, max_tokens=2000)  # the one that leaves would run long
    expected = run_streams(server.url, [b for i, b in enumerate(bodies) if i != 5])
    cancelled = metric(client, "recap_streams_cancelled_total", model=GPT)
    together = run_streams(server.url, bodies, leave=5)
    assert together[5] is None
    assert [t for i, t in enumerate(together) if i != 5] == expected
    assert metric(client, "recap_streams_cancelled_total", model=GPT) == cancelled + 1


def test_v2_infer_and_next_token_top_k_on_pydoc_gpt_work_as_before(client: httpx.Client) -> None:
    """The plain graph still answers V2 infer with input_ids alone (the cache graphs are extra files)."""
    vocab = Vocabulary(GPT)
    ids = np.asarray([vocab.encode("import os")], dtype=np.int64)
    tensor = {
        "name": "input_ids",
        "datatype": "INT64",
        "shape": list(ids.shape),
        "data": ids.ravel().tolist(),
    }
    response = client.post(f"/v2/models/{GPT}/infer", json={"inputs": [tensor]})
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    (expected,) = session(GPT).run(["logits"], {"input_ids": ids})
    np.testing.assert_allclose(np.asarray(output["data"]).reshape(output["shape"]), expected, atol=1e-5)
    ranked = {"inputs": [tensor], "outputs": [{"name": "logits", "parameters": {"classification": 3}}]}
    response = client.post(f"/v2/models/{GPT}/infer", json=ranked)
    assert response.status_code == 200, response.text
    (top,) = response.json()["outputs"]
    assert top["shape"] == [1, 3]
    assert int(top["data"][0].split(":")[1]) == int(np.argmax(expected[0, -1]))


def test_time_to_first_token_and_inter_token_latency_are_histograms(client: httpx.Client) -> None:
    stream_events(client, GPT, "The ", max_tokens=10)
    labels = {"model": GPT, "version": "1"}
    assert metric(client, "recap_generate_time_to_first_token_seconds_count", **labels) >= 1
    assert metric(client, "recap_generate_inter_token_seconds_count", **labels) >= 9
    assert metric(client, "recap_generate_decode_batch_size_count", **labels) >= 10


def test_a_language_model_without_cache_graphs_generates_with_the_full_recompute_loop(
    tmp_path: Path,
) -> None:
    """model.json without a kv_cache record: the server crops the window at every step, as before."""
    folder = tmp_path / "models" / GPT / "1"
    folder.mkdir(parents=True)
    shutil.copy(model_dir(GPT) / "model.onnx", folder / "model.onnx")
    document = manifest(GPT)
    del document["kv_cache"]
    (folder / "model.json").write_bytes(orjson.dumps(document))
    window = document["max_sequence_length"]
    prompt = ("Return the value of the named attribute of object. " * 20)[: window + 5]
    expected = "".join(reference_lm_greedy(prompt, 40, past_the_window="crop"))
    bare = start_server(tmp_path / "models", tmp_path / "server.log")
    try:
        with httpx.Client(base_url=bare.url, timeout=60) as http:
            assert generate(http, GPT, prompt, max_tokens=40)["text_output"] == expected
            assert streamed_text(stream_events(http, GPT, prompt, max_tokens=40)) == expected
            assert metric(http, "recap_generate_decode_batch_size_count", model=GPT, version="1") == 0
    finally:
        bare.stop()
