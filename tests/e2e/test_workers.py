"""`--workers 2` for real: fresh connections spread over both workers, metrics and statistics summed
exactly, a SIGKILLed worker replaced without losing counts, the drain on SIGTERM, per-server limits."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.onnx_models import classifier, write_model
from tests.helpers.servers import RunningServer, copy_zoo_models, start_server, stop
from tests.helpers.zoo import GPT, require_models

MANIFEST = {"task": "multiclass_classification", "labels": ["a", "b", "c"]}
ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.5, -1.0, 2.0, 0.1]}]}
INFER_LABELS = {"model": "m", "version": "1", "protocol": "v2", "endpoint": "infer"}


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def workers_of(server: RunningServer) -> list[int]:
    """The worker processes (spawn also starts multiprocessing's resource tracker: not a worker)."""
    found = []
    for pid in children(server.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"resource_tracker" not in command:
            found.append(pid)
    return found


def fresh_requests(url: str, count: int) -> list[httpx.Response]:
    """Each request on a new connection, so the kernel hands them to either worker."""
    answers = []
    for _ in range(count):
        with httpx.Client(base_url=url, timeout=10) as client:
            answers.append(client.post("/v2/models/m/infer", json=ROW))
    return answers


def requests_counted(url: str) -> float:
    with httpx.Client(base_url=url, timeout=10) as client:
        text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "recap_requests":
            for sample in family.samples:
                if sample.name == "recap_requests_total" and sample.labels == INFER_LABELS:
                    return sample.value
    return 0.0


def stats_counted(url: str) -> tuple[int, int]:
    with httpx.Client(base_url=url, timeout=10) as client:
        (entry,) = client.get("/v2/models/m/versions/1/stats").json()["model_stats"]
    return entry["inference_stats"]["success"]["count"], entry["inference_count"]


def wait_for_new_worker(server: RunningServer, known: set[str], timeout: float = 30.0) -> int:
    """Fresh requests until one is answered by a worker none of `known` (request-id prefixes) names;
    returns how many were sent (all must succeed)."""
    deadline = time.monotonic() + timeout
    sent = 0
    while time.monotonic() < deadline:
        (answer,) = fresh_requests(server.url, 1)
        sent += 1
        assert answer.status_code == 200, answer.text
        if answer.headers["x-request-id"].rsplit("-", 1)[0] not in known:
            return sent
        time.sleep(0.05)
    raise AssertionError(f"no new worker answered within {timeout} s:\n{server.log_tail()}")


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[RunningServer]:
    repository = tmp_path / "models"
    write_model(repository, "m", classifier(4, 3, seed=1), manifest=MANIFEST)
    server = start_server(repository, tmp_path / "server.log", env={"RECAP_WORKERS": "2"})
    try:
        yield server
    finally:
        stop(server.process)


@pytest.mark.e2e
def test_two_workers_count_exactly_survive_a_kill_and_drain(two_workers: RunningServer) -> None:
    server = two_workers
    # Both workers may still be loading: the first one up answers readiness.
    deadline = time.monotonic() + 30
    while len(workers_of(server)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)
    answers = fresh_requests(server.url, 300)
    assert [a.status_code for a in answers] == [200] * 300
    prefixes = {a.headers["x-request-id"].rsplit("-", 1)[0] for a in answers}
    assert len(prefixes) == 2, f"one worker answered everything: {prefixes}"  # ids: per-process prefix
    for _ in range(10):  # each scrape on a new connection, answered by either worker
        assert requests_counted(server.url) == 300
        assert stats_counted(server.url) == (300, 300)

    killed = workers_of(server)[0]
    os.kill(killed, signal.SIGKILL)
    started = time.monotonic()
    sent = wait_for_new_worker(server, prefixes)
    print(f"workers e2e: a SIGKILLed worker replaced, serving after {time.monotonic() - started:.1f} s")
    assert killed not in workers_of(server) and len(workers_of(server)) == 2
    answers = fresh_requests(server.url, 100)
    assert [a.status_code for a in answers] == [200] * 100
    for _ in range(6):
        assert requests_counted(server.url) == 400 + sent  # the dead worker's counts are kept
        assert stats_counted(server.url) == (400 + sent, 400 + sent)

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=40) == 0, server.log_tail()
    assert server.log().count("SIGTERM: readiness is 503") == 2  # both workers drained


@pytest.mark.e2e
def test_max_concurrency_is_per_server_with_two_workers(tmp_path: Path) -> None:
    require_models(GPT)
    repository = tmp_path / "models"
    copy_zoo_models(repository, (GPT,))
    env = {"RECAP_WORKERS": "2", "RECAP_MAX_CONCURRENCY": "4", "RECAP_GENERATE_MAX_TOKENS": "4000"}
    server = start_server(repository, tmp_path / "server.log", env=env)
    statuses: list[int] = []
    retry_after: list[str | None] = []
    body = {"text_input": "The ", "parameters": {"max_tokens": 600, "temperature": 1.0, "seed": 1}}

    def one() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            response = client.post(f"/v2/models/{GPT}/generate", json=body)
            statuses.append(response.status_code)
            retry_after.append(response.headers.get("retry-after"))

    try:
        time.sleep(3)  # both workers up
        threads = [threading.Thread(target=one) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
    finally:
        stop(server.process)
    answered = statuses.count(200)
    assert len(statuses) == 16 and set(statuses) <= {200, 503}, statuses
    # Each worker takes 4 // 2 = 2: never more than 4 in progress in the server.
    assert 1 <= answered <= 4, statuses
    assert all(r == "1" for s, r in zip(statuses, retry_after, strict=True) if s == 503)


@pytest.mark.e2e
def test_every_worker_polls_and_rereads_the_keys(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    write_model(repository, "m", classifier(4, 3, seed=1), manifest=MANIFEST)
    keys = tmp_path / "api-keys"
    keys.write_text("inference old-key-0123456789abcdef\n")
    env = {
        "RECAP_WORKERS": "2",
        "RECAP_MODEL_CONTROL_MODE": "poll",
        "RECAP_REPOSITORY_POLL_SECONDS": "0.5",
        "RECAP_API_KEYS_FILE": str(keys),
    }
    server = start_server(repository, tmp_path / "server.log", env=env)

    def answers(key: str, count: int = 30) -> list[httpx.Response]:
        got = []
        for _ in range(count):
            with httpx.Client(base_url=server.url, timeout=10) as client:
                headers = {"Authorization": f"Bearer {key}"}
                got.append(client.post("/v2/models/m/infer", json=ROW, headers=headers))
        return got

    try:
        time.sleep(3)  # both workers up
        write_model(tmp_path / "staged", "m", classifier(4, 3, seed=2), manifest=MANIFEST)
        (tmp_path / "staged" / "m" / "1").rename(repository / "m" / "2")
        staged = tmp_path / "keys.new"
        staged.write_text("inference new-key-0123456789abcdef\n")
        staged.rename(keys)
        time.sleep(3)
        fresh = answers("new-key-0123456789abcdef")
        assert len({a.headers["x-request-id"].rsplit("-", 1)[0] for a in fresh}) == 2  # both workers
        assert [(a.status_code, a.json()["model_version"]) for a in fresh] == [(200, "2")] * 30
        assert {a.status_code for a in answers("old-key-0123456789abcdef", 10)} == {401}
    finally:
        stop(server.process)
