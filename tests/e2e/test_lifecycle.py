"""Model lifecycle against real servers: poll-mode swaps under traffic (threads, then Locust), explicit
load/unload through tritonclient, statistics, and the graceful drain on SIGTERM."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.helpers.onnx_models import classifier, write_model
from tests.helpers.servers import RunningServer, copy_zoo_models, locust_command, start_server, stop
from tests.helpers.zoo import GPT, require_models

MANIFEST = {"task": "multiclass_classification", "labels": ["a", "b", "c"]}
ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.5, -1.0, 2.0, 0.1]}]}
POLL = 1.0
STEP_SECONDS = 3.0


def publish(source: Path, model_dir: Path, version: int) -> None:
    """README "Publishing a model": copy into a hidden folder beside the versions, then rename; a
    replaced version is renamed away first (two renames: never a half-copied folder)."""
    target, staging, old = (
        model_dir / str(version),
        model_dir / f".{version}.new",
        model_dir / f".{version}.old",
    )
    script = f"cp -r '{source}' '{staging}' && "
    if target.exists():
        script += f"mv '{target}' '{old}' && mv '{staging}' '{target}' && rm -rf '{old}'"
    else:
        script += f"mv '{staging}' '{target}'"
    subprocess.run(["sh", "-c", script], check=True)


def staged_version(tmp_path: Path, label: str, seed: int) -> Path:
    """A complete version folder (model.onnx + model.json) outside the repository."""
    write_model(tmp_path / label, "m", classifier(4, 3, seed=seed), manifest=MANIFEST)
    return tmp_path / label / "m" / "1"


@dataclass
class Answer:
    sent: float
    received: float
    status: int
    version: str | None


def _client_loop(url: str, stop_event: threading.Event, answers: list[Answer]) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop_event.is_set():
            sent = time.time()
            response = client.post("/v2/models/m/infer", json=ROW)
            version = response.json().get("model_version") if response.status_code == 200 else None
            answers.append(Answer(sent, time.time(), response.status_code, version))


def _readiness_loop(url: str, stop_event: threading.Event, statuses: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop_event.is_set():
            statuses.append(client.get("/v2/health/ready").status_code)
            time.sleep(0.05)


def default_timeline(log: str) -> list[tuple[float, str]]:
    """(time, default version) at each change the server logged (JSON lines)."""
    changes = [(0.0, "1")]
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        message = record.get("message", "")
        ours = record.get("logger") == "service.runtime.lifecycle" and message.startswith("m version ")
        if ours and "; default version " in message:
            at = datetime.fromisoformat(record["time"]).timestamp()
            changes.append((at, message.rsplit(" ", 1)[1]))
    return changes


def was_default(timeline: list[tuple[float, str]], version: str, start: float, end: float) -> bool:
    """Was `version` the default at some instant in [start, end]? (5 ms slack: the log's ms stamps)"""
    start, end = start - 0.005, end + 0.005
    current = timeline[0][1]
    for at, default in timeline:
        if at > end:
            break
        if at <= start:
            current = default
        elif default == version:
            return True
    return current == version


@pytest.fixture
def poll_server(tmp_path: Path) -> RunningServer:
    repository = tmp_path / "models"
    write_model(repository, "m", classifier(4, 3, seed=1), manifest=MANIFEST)
    env = {
        "RECAP_MODEL_CONTROL_MODE": "poll",
        "RECAP_REPOSITORY_POLL_SECONDS": str(POLL),
        "RECAP_LOG_FORMAT": "json",
    }
    return start_server(repository, tmp_path / "server.log", env=env)


@pytest.mark.e2e
def test_poll_mode_swaps_versions_under_traffic_without_a_failed_request(
    poll_server: RunningServer, tmp_path: Path
) -> None:
    server = poll_server
    model_dir = tmp_path / "models" / "m"
    answers: list[Answer] = []
    statuses: list[int] = []
    stop_event = threading.Event()
    threads = [
        threading.Thread(target=_client_loop, args=(server.url, stop_event, answers)) for _ in range(4)
    ] + [threading.Thread(target=_readiness_loop, args=(server.url, stop_event, statuses))]
    version_3_reason = None
    try:
        for thread in threads:
            thread.start()
        time.sleep(1)
        added = time.time()
        publish(staged_version(tmp_path, "v2", seed=2), model_dir, 2)  # 1. version 2
        time.sleep(STEP_SECONDS)
        corrupt = staged_version(tmp_path, "v3", seed=3)
        (corrupt / "model.onnx").write_bytes(b"not an onnx file")
        (corrupt / "model.json").unlink()
        publish(corrupt, model_dir, 3)  # 2. version 3, corrupt
        with httpx.Client(base_url=server.url) as client:
            deadline = time.monotonic() + STEP_SECONDS
            while time.monotonic() < deadline and version_3_reason is None:
                index = client.post("/v2/repository/index").json()
                version_3_reason = next(
                    (
                        e.get("reason")
                        for e in index
                        if e.get("version") == "3" and e["state"] == "UNAVAILABLE"
                    ),
                    None,
                )
                time.sleep(0.2)
            time.sleep(max(0.0, deadline - time.monotonic()))
        publish(staged_version(tmp_path, "v2b", seed=4), model_dir, 2)  # 3. version 2 replaced
        time.sleep(STEP_SECONDS)
        subprocess.run(["rm", "-rf", str(model_dir / "2")], check=True)  # 4. version 2 removed
        time.sleep(STEP_SECONDS)
        subprocess.run(["rm", "-rf", str(model_dir / "3")], check=True)  # 5. version 3 removed
        time.sleep(STEP_SECONDS)
    finally:
        stop_event.set()
        for thread in threads:
            thread.join(timeout=20)
        server.stop()
    log = server.log()
    assert answers and all(a.status == 200 for a in answers), (
        [a for a in answers if a.status != 200][:5],
        server.log_tail(),
    )
    assert statuses and set(statuses) == {200}, "readiness left 200"
    assert version_3_reason and "could not load model.onnx" in version_3_reason
    first_v2 = min(a.received for a in answers if a.version == "2")
    assert first_v2 - added <= 2 * POLL + 5
    assert {a.version for a in answers} == {"1", "2"}
    assert "swapped for the previous copy" in log or "m version 2 out of service" in log
    timeline = default_timeline(log)
    assert [v for _, v in timeline][:2] == ["1", "2"] and timeline[-1][1] == "1"
    wrong = [
        a for a in answers if a.version is None or not was_default(timeline, a.version, a.sent, a.received)
    ]
    assert not wrong, (wrong[:5], timeline)
    print(f"lifecycle e2e: {len(answers)} answers, 0 failed, v2 after {first_v2 - added:.2f} s")


@pytest.mark.e2e
@pytest.mark.slow
def test_locust_sees_no_failure_while_versions_come_and_go(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    models = copy_zoo_models(repository, ("iris-mlp",))
    if not models:
        pytest.skip("the zoo's iris-mlp is not built (make models)")
    env = {"RECAP_MODEL_CONTROL_MODE": "poll", "RECAP_REPOSITORY_POLL_SECONDS": "0.5"}
    server = start_server(repository, tmp_path / "server.log", env=env)
    csv_prefix = tmp_path / "locust"
    argv = locust_command(
        "-f", "load/locustfile.py", "--headless", "--host", server.url, "-u", "6", "-r", "6",
        "-t", "30s", "--tags", "infer", "classification", "predict", "--csv", str(csv_prefix),
        "--only-summary",
    )  # fmt: skip
    model_dir = repository / "iris-mlp"
    pairs = 0
    try:
        locust = subprocess.Popen(
            argv, env={**os.environ, "RECAP_LOAD_MODELS": "iris-mlp"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        time.sleep(3)
        for _ in range(20):  # 20 add/remove pairs, one step every 1.5 s
            publish(model_dir / "1", model_dir, 2)
            time.sleep(0.75)
            subprocess.run(["rm", "-rf", str(model_dir / "2")], check=True)
            time.sleep(0.75)
            pairs += 1
        output, _ = locust.communicate(timeout=90)
    finally:
        server.stop()
    with (tmp_path / "locust_stats.csv").open() as stats_file:
        total = next(row for row in csv.DictReader(stats_file) if row["Name"] == "Aggregated")
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])
    assert pairs == 20 and requests > 500, output[-3000:]
    assert failures == 0 and locust.returncode == 0, output[-3000:] + server.log_tail()
    assert server.log().count("iris-mlp version 2 in service") >= 10  # the swaps really happened
    print(f"locust under churn: {requests} requests, 0 failures, {pairs} add/remove pairs")


@pytest.mark.e2e
def test_explicit_mode_through_tritonclient(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    write_model(repository, "m", classifier(4, 3, seed=1), manifest=MANIFEST)
    write_model(tmp_path, "x", classifier(4, 3, seed=1), manifest=MANIFEST)  # beside the repository
    env = {"RECAP_MODEL_CONTROL_MODE": "explicit", "RECAP_LOAD_MODEL": '["m"]'}
    server = start_server(repository, tmp_path / "server.log", env=env)
    try:
        client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
        inputs = [triton_http.InferInput("input", [1, 4], "FP32")]
        inputs[0].set_data_from_numpy(np.array([[0.5, -1.0, 2.0, 0.1]], dtype="float32"))
        assert client.infer("m", inputs).get_response()["model_version"] == "1"
        client.unload_model("m")
        with httpx.Client(base_url=server.url) as http:
            unloaded = http.post("/v2/models/m/infer", json=ROW)
            assert unloaded.status_code in (404, 503) and "error" in unloaded.json()
            assert {
                "name": "m",
                "state": "UNAVAILABLE",
                "reason": "unloaded",
            } in client.get_model_repository_index()
            client.load_model("m")
            assert client.is_model_ready("m")
            assert http.post("/v2/models/m/infer", json=ROW).status_code == 200
            for bad in ("..%2Fx", "nope", "x" * 300):
                answer = http.post(f"/v2/repository/models/{bad}/load")
                assert answer.status_code in (400, 404) and "error" in answer.json()
            with pytest.raises(InferenceServerException):
                client.load_model("x" * 300)
            stats = client.get_inference_statistics("m")["model_stats"][0]
            # Statistics start again with each load (as Triton's): the one infer since the reload.
            assert stats["inference_stats"]["success"]["count"] == 1 and stats["inference_count"] == 1
        assert "x/1" not in server.log() and str(tmp_path / "x") not in server.log()
    finally:
        server.stop()


@pytest.mark.e2e
def test_load_and_unload_in_none_mode_are_400(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    write_model(repository, "m", classifier(4, 3, seed=1), manifest=MANIFEST)
    server = start_server(repository, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=server.url) as http:
            for action in ("load", "unload"):
                answer = http.post(f"/v2/repository/models/m/{action}")
                assert answer.status_code == 400 and "--model-control-mode none" in answer.json()["error"]
    finally:
        server.stop()


@pytest.mark.e2e
def test_sigterm_drains_then_exits_0(tmp_path: Path) -> None:
    require_models(GPT)
    repository = tmp_path / "models"
    copy_zoo_models(repository, (GPT,))
    write_model(repository, "m", classifier(4, 3, seed=1), manifest=MANIFEST)
    env = {
        "RECAP_DRAIN_GRACE_SECONDS": "2",
        "RECAP_SHUTDOWN_TIMEOUT_SECONDS": "1.5",
        "RECAP_GENERATE_MAX_TOKENS": "100000",
    }
    server = start_server(repository, tmp_path / "server.log", env=env)
    events: list[dict[str, object]] = []
    started = threading.Event()

    def stream() -> None:
        body = {"text_input": "The ", "parameters": {"max_tokens": 100000, "temperature": 1.0, "seed": 1}}
        with (
            httpx.Client(base_url=server.url, timeout=30) as client,
            client.stream("POST", f"/v2/models/{GPT}/generate_stream", json=body) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    started.set()

    reader = threading.Thread(target=stream)
    try:
        reader.start()
        assert started.wait(20), server.log_tail()
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.3)
        with httpx.Client(base_url=server.url, timeout=5) as fresh:  # a new connection, in the grace period
            assert fresh.get("/v2/health/ready").status_code == 503
            assert fresh.post("/v2/models/m/infer", json=ROW).status_code == 200
        before_grace_end = len(events)
        code = server.process.wait(timeout=20)
        took = time.monotonic() - signalled
        reader.join(timeout=10)
    finally:
        stop(server.process)
    assert code == 0, server.log_tail()
    assert 2 + 1.5 - 0.5 <= took <= 2 + 1.5 + 4, took
    assert len(events) > before_grace_end  # the stream kept running through the grace period
    assert events[-1].get("finish_reason") == "shutdown", events[-3:]
    assert "SIGTERM" in server.log()
