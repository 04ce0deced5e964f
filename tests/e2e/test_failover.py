"""Failover for real: three replicas behind Debian's nginx (deploy/nginx/nginx.conf, its loopback
ports swapped for free ones), traffic for 20 s, one replica SIGKILLed and later restarted."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.onnx_models import classifier, write_model
from tests.helpers.servers import REPO, RunningServer, free_port, start_server, stop

pytestmark = [pytest.mark.failover, pytest.mark.e2e, pytest.mark.slow]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CONF = REPO / "deploy" / "nginx" / "nginx.conf"
MANIFEST = {"task": "multiclass_classification", "labels": ["a", "b", "c"]}
ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.5, -1.0, 2.0, 0.1]}]}
RUN_SECONDS = 20.0
KILL_AT, RESTART_AT = 5.0, 11.0


def prefix_of(response: httpx.Response) -> str:
    return response.headers["x-request-id"].rsplit("-", 1)[0]  # a random prefix per server process


def replica_prefix(server: RunningServer) -> str:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        return prefix_of(client.post("/v2/models/m/infer", json=ROW))


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_model(root, "m", classifier(4, 3, seed=1), manifest=MANIFEST)
    return root


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[tuple[str, list[int]]]:
    """nginx with the committed config, on free ports: (its URL, the three replica ports)."""
    if not Path(NGINX).exists():
        pytest.skip("nginx is missing: `make system-deps` installs it")
    ports = [free_port() for _ in range(3)]
    listen = free_port()
    text = CONF.read_text()
    for number, port in enumerate(ports, start=1):
        text = text.replace(f"127.0.0.1:810{number}", f"127.0.0.1:{port}")
    text = text.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{listen};")
    assert re.findall(r"server 127\.0\.0\.1:(\d+)", text) == [str(p) for p in ports]
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    argv = [NGINX, "-p", str(prefix), "-e", "stderr", "-c", str(conf), "-g", "daemon off;"]
    with (tmp_path / "nginx.log").open("wb") as log:
        process = subprocess.Popen(argv, stderr=log)
    try:
        yield f"http://127.0.0.1:{listen}", ports
    finally:
        process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def start_replica(repository: Path, port: int, log: Path) -> RunningServer:
    return start_server(repository, log, port=port)


def test_a_killed_replica_costs_no_request(
    repository: Path, balancer: tuple[str, list[int]], tmp_path: Path
) -> None:
    url, ports = balancer
    replicas = [
        start_replica(repository, port, tmp_path / f"replica-{i}.log") for i, port in enumerate(ports)
    ]
    statuses: list[int] = []
    seen: set[str] = set()
    stop_event = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=url, timeout=15) as client:
            while not stop_event.is_set():
                response = client.post("/v2/models/m/infer", json=ROW)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    seen.add(prefix_of(response))

    threads = [threading.Thread(target=loop) for _ in range(4)]
    try:
        prefixes = {replica_prefix(r) for r in replicas}
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(KILL_AT)
        replicas[1].process.send_signal(signal.SIGKILL)
        replicas[1].process.wait(timeout=10)
        killed_at = len(statuses)
        time.sleep(RESTART_AT - KILL_AT)
        replicas[1] = start_replica(repository, ports[1], tmp_path / "replica-1-again.log")
        prefixes.add(replica_prefix(replicas[1]))
        time.sleep(max(0.0, RUN_SECONDS - (time.monotonic() - started)))
    finally:
        stop_event.set()
        for thread in threads:
            thread.join(timeout=20)
        for replica in replicas:
            stop(replica.process)
    failed = [s for s in statuses if s != 200]
    assert statuses and not failed, f"{len(failed)} failed of {len(statuses)}: {sorted(set(failed))}"
    assert len(prefixes) == 4 and prefixes <= seen, "a replica (or the restarted one) served nothing"
    assert 0 < killed_at < len(statuses)
    print(f"failover e2e: {len(statuses)} requests through nginx, 0 failed, all 4 replica processes served")
