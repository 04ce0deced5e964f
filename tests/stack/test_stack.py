"""docker-compose.yml for real, through podman: the service image healthy through its own healthcheck,
answering as the native server does; the load profile with two workers on the compose network; the
monitoring profile's Prometheus scraping the service inside the stack; `down -v` leaving nothing.

The tests run in this order on one compose project (tests/stack/conftest.py).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.load_plan import stats_rows
from tests.helpers.servers import RunningServer, http_get, running_server
from tests.helpers.stack import LOCUST_IMAGE, PROJECT, SERVICE_IMAGE, Engine
from tests.stack.conftest import Stack

pytestmark = [pytest.mark.stack, pytest.mark.e2e, pytest.mark.slow]
IRIS = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2] * 2}]}
CANCER_ROW = [17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095, 0.9053,
              8.589, 153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33, 184.6,
              2019.0, 0.1622, 0.6656, 0.7119, 0.2654, 0.4601, 0.1189]  # fmt: skip
TOP_2 = {"name": "probabilities", "parameters": {"classification": 2}}
SAMPLED = {"max_tokens": 24, "temperature": 0.8, "seed": 7}
# (method, path, body): answers that must be the same from the container and from the native server.
SAME_ANSWERS: list[tuple[str, str, Any]] = [
    ("GET", "/v2/models/iris-mlp", None),
    ("POST", "/v2/models/iris-mlp/infer", IRIS),
    ("POST", "/v2/models/iris-mlp/infer", IRIS | {"outputs": [TOP_2]}),
    ("POST", "/v1/models/breast-cancer-mlp:predict", {"instances": [CANCER_ROW]}),
    ("POST", "/v1/models/iris-mlp:classify", {"instances": [[6.3, 2.8, 5.1, 1.5]]}),
    ("POST", "/v2/models/dates-seq2seq/generate", {"text_input": "3 March 2021"}),
    ("POST", "/v2/models/pydoc-gpt/generate", {"text_input": "The ", "parameters": SAMPLED}),
    ("GET", "/v1/models/digits-gan-generator", None),
]  # fmt: skip


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("native")) as server:
        yield server


def close(a: Any, b: Any) -> bool:
    """Equal JSON, floats to 1e-6 (the image's onnxruntime wheel may differ from the venv's)."""
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= 1e-6 * max(1, abs(b))
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_the_service_turns_healthy_through_its_own_healthcheck(stack: Stack) -> None:
    engine = stack.engine
    runs = engine.wait_healthy(stack.service)
    state = engine.inspect("container", stack.service)["State"]
    assert isinstance(state, dict) and state["Health"]["Status"] == "healthy", state
    assert "(healthy)" in stack.compose("ps"), "compose sees the status podman recorded"
    assert runs >= 1


def test_the_healthcheck_is_one_exec_form_command_that_passes_as_the_engine_runs_it(stack: Stack) -> None:
    """Docker and podman run an exec-form HEALTHCHECK as its argv, without a shell. Podman's Docker API
    splits arguments on spaces, so no argument may hold one; run exactly that argv in the container."""
    healthcheck = stack.engine.inspect("image", SERVICE_IMAGE)["Healthcheck"]  # podman's spelling
    assert isinstance(healthcheck, dict)
    test = healthcheck["Test"]
    assert test[0] == "CMD" and not any(" " in part for part in test[1:]), test
    done = stack.engine.podman("exec", stack.service, *test[1:], check=False)
    assert done.returncode == 0, done.stderr
    # And it fails when the server is not ready: against a port nobody listens on.
    down = stack.engine.podman("exec", "-e", "RECAP_PORT=1", stack.service, *test[1:], check=False)
    assert down.returncode == 1 and "not healthy" in down.stderr


def test_the_container_is_unprivileged_read_only_and_has_no_torch(stack: Stack) -> None:
    podman = stack.engine.podman
    assert podman("exec", stack.service, "id", "-u").stdout.strip() == "10001"
    inspected = stack.engine.inspect("container", stack.service)
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True  # type: ignore[index]
    assert podman("exec", stack.service, "touch", "/written", check=False).returncode != 0
    probe = "import importlib.util as u; print(u.find_spec('torch'))"
    assert podman("exec", stack.service, "python", "-c", probe).stdout.strip() == "None"
    assert podman("exec", stack.service, "touch", "/tmp/scratch", check=False).returncode == 0  # tmpfs


def test_the_stack_runs_with_keys_from_its_secret(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        assert client.get("/v2/health/ready").status_code == 200  # the probe: no key
        refused = client.post("/v2/models/iris-mlp/infer", json=IRIS)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert client.post("/v2/models/iris-mlp/infer", json=IRIS, headers=stack.auth).status_code == 200
        assert client.get("/metrics").status_code == 401
    mounted = stack.engine.podman("exec", stack.service, "cat", "/run/secrets/recap_api_keys").stdout
    assert "sha256:" in mounted and stack.key not in mounted  # the server's file holds digests only


def test_answers_on_the_published_port_equal_the_native_server(stack: Stack, native: RunningServer) -> None:
    with (
        httpx.Client(base_url=stack.url, timeout=30) as container,
        httpx.Client(base_url=native.url, timeout=30) as local,
    ):
        for method, path, body in SAME_ANSWERS:
            got = container.request(method, path, json=body, headers=stack.auth)
            want = local.request(method, path, json=body)
            assert got.status_code == want.status_code == 200, (path, got.text[:300])
            assert close(got.json(), want.json()), (path, got.text[:500], want.text[:500])
            assert got.headers["x-request-id"]


def test_the_load_profile_runs_two_workers_headless_with_no_failure(stack: Stack, tmp_path: Path) -> None:
    stack.engine.wait_healthy(stack.service)  # locust-master waits for service_healthy
    headless = {
        "LOCUST_HEADLESS": "true", "LOCUST_USERS": "6", "LOCUST_SPAWN_RATE": "6", "LOCUST_RUN_TIME": "20s",
        "LOCUST_EXPECT_WORKERS": "2", "LOCUST_CSV": "/tmp/stack", "LOCUST_ONLY_SUMMARY": "true",
    }  # fmt: skip
    env = {**stack.env, **headless}
    stack.engine.compose("--profile", "load", "up", "-d", "--no-build", "--scale", "locust-worker=2", env=env)
    master = f"{PROJECT}_locust-master_1"
    deadline = time.monotonic() + 120
    while stack.engine.inspect("container", master)["State"]["Running"]:  # type: ignore[index]
        assert time.monotonic() < deadline, stack.engine.podman("logs", master, check=False).stderr[-3000:]
        time.sleep(1)
    logs = stack.engine.podman("logs", master, check=False)
    exit_code = stack.engine.inspect("container", master)["State"]["ExitCode"]  # type: ignore[index]
    assert exit_code == 0, logs.stdout[-3000:] + logs.stderr[-3000:]
    for name in ("stack_stats.csv", "stack_workers.json"):
        stack.engine.podman("cp", f"{master}:/tmp/{name}", str(tmp_path / name))
    total = stats_rows(tmp_path / "stack_stats.csv")["Aggregated"]
    assert int(total["Request Count"]) > 100 and int(total["Failure Count"]) == 0, total
    workers = json.loads((tmp_path / "stack_workers.json").read_text())["workers"]
    assert len(workers) == 2 and all(w["requests"] > 0 and w["failures"] == 0 for w in workers.values())
    assert sum(w["requests"] for w in workers.values()) == int(total["Request Count"])
    image = stack.engine.inspect("container", master)["ImageName"]
    assert image == LOCUST_IMAGE


def _prometheus(stack: Stack, query: str) -> list[dict[str, Any]]:
    port = stack.env["PROMETHEUS_PUBLISH_PORT"]
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(query)}"
    status, body = http_get(url, timeout=5)
    assert status == 200, body[:300]
    result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
    return result


def test_prometheus_scrapes_the_service_inside_the_stack(stack: Stack) -> None:
    """The monitoring profile with a Prometheus image built from Debian's package (Docker Hub's cannot
    be pulled here), scraping the service's metrics listener, which needs no key; Grafana's image cannot
    be pulled either and stays a static check."""
    stack.compose("--profile", "monitoring", "up", "-d", "--no-build", "prometheus")
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        for _ in range(20):
            assert client.post("/v2/models/iris-mlp/infer", json=IRIS, headers=stack.auth).status_code == 200
    deadline = time.monotonic() + 60
    while True:
        try:
            up = _prometheus(stack, 'up{job="recap-serve"}')
            requests = _prometheus(stack, 'recap_requests_total{model="iris-mlp",endpoint="infer"}')
            if up and up[0]["value"][1] == "1" and requests and float(requests[0]["value"][1]) >= 20:
                break
        except (OSError, KeyError):
            pass
        assert time.monotonic() < deadline, stack.compose("--profile", "monitoring", "logs", "prometheus")[
            -3000:
        ]
        time.sleep(1)
    assert up[0]["metric"]["instance"] == "service:8002"  # found by its compose service name


def test_the_scale_profile_loses_no_request_when_a_replica_is_killed(stack: Stack) -> None:
    """nginx (Debian's package, deploy/nginx/nginx.compose.conf) in front of three replicas; one is
    killed while four clients send requests through nginx: nginx retries on another replica."""
    replicas = ("replica-1", "replica-2", "replica-3")
    stack.compose("--profile", "scale", "up", "-d", "--no-build", *replicas, "nginx")
    containers = {name: next(c for c in stack.engine.containers() if f"_{name}_" in c) for name in replicas}
    for container in containers.values():
        stack.engine.wait_healthy(container)
    url = f"http://127.0.0.1:{stack.env['NGINX_PUBLISH_PORT']}"
    deadline = time.monotonic() + 60
    while True:  # nginx up and every replica reachable through it
        try:
            with httpx.Client(base_url=url, timeout=5) as client:
                if client.post("/v2/models/iris-mlp/infer", json=IRIS, headers=stack.auth).status_code == 200:
                    break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, stack.compose("--profile", "scale", "logs", "nginx")[-3000:]
        time.sleep(0.5)
    statuses: list[int] = []
    stop_event = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=url, timeout=15) as client:
            while not stop_event.is_set():
                answer = client.post("/v2/models/iris-mlp/infer", json=IRIS, headers=stack.auth)
                statuses.append(answer.status_code)

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(4)
        before = len(statuses)
        stack.engine.podman("kill", containers["replica-2"])
        time.sleep(6)
    finally:
        stop_event.set()
        for thread in threads:
            thread.join(timeout=30)
    failed = [s for s in statuses if s != 200]
    assert 0 < before < len(statuses) and not failed, (
        f"{len(failed)} of {len(statuses)} failed: {set(failed)}"
    )


def test_down_leaves_nothing_behind(stack: Stack) -> None:
    engine: Engine = stack.engine
    assert engine.containers(), "the stack was up"
    stack.compose("--profile", "load", "--profile", "monitoring", "--profile", "scale", "down", "-v")
    assert engine.containers() == []
    label = f"label=com.docker.compose.project={PROJECT}"
    assert engine.podman("volume", "ls", "--filter", label, "--format", "{{.Name}}").stdout.strip() == ""
    networks = engine.podman("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert f"{PROJECT}_default" not in networks
