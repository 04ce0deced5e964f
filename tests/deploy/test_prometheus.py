"""The monitoring profile, run natively: the compose `service` command and environment serve the zoo, a
real Prometheus with the project's scrape config scrapes it, and every Grafana query is answered."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.compose import REPO, command_of, make_secrets, native_environment, raw_services
from tests.helpers.servers import (
    MODELS,
    RunningServer,
    free_port,
    http_get,
    running_server,
    service_available,
    stop,
)

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "recap-serve.json"
SCRAPE_CONFIG = REPO / "monitoring" / "prometheus.yml"
RATE_QUERY = "sum(rate(recap_requests_total[15s]))"
WAIT_FOR_DATA_S = 45.0
GENERATION_METRICS = (
    "recap_generated_tokens",
    "recap_active_streams",
    "recap_streams_cancelled",
    "recap_generate_",
)


def _post(url: str, body: dict[str, Any], key: str) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _traffic(url: str, key: str, stop_event: threading.Event) -> None:
    """Good V2/V1 requests plus some wrong ones (a failure rate for the error panels)."""
    good = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
    bad = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [5.1, 3.5, 1.4]}]}
    i = 0
    while not stop_event.is_set():
        _post(f"{url}/v2/models/iris-mlp/infer", bad if i % 10 == 0 else good, key)
        _post(f"{url}/v1/models/iris-mlp:predict", {"instances": [[5.1, 3.5, 1.4, 0.2]]}, key)
        if i % 10 == 5:
            _post(f"{url}/v2/models/iris-mlp/infer", good, "not-a-key")  # a refusal for that panel
        i += 1
        time.sleep(0.02)


@dataclass
class ComposeService:
    """The compose `service` run natively, with its API keys and its metrics listener."""

    server: RunningServer
    metrics_port: int
    load_key: str

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeService]:
    """The compose `service`: its command and RECAP_* environment (host, port, paths local)."""
    reason = service_available()
    if reason:
        pytest.skip(reason)
    secrets = tmp_path_factory.mktemp("compose") / "secrets"
    make_secrets(secrets)
    metrics_port = free_port()
    env = native_environment("service", secrets, MODELS, metrics_port)
    command = raw_services()["service"]["command"]
    with running_server(tmp_path_factory.mktemp("server"), command=command, env=env) as running:
        key = (secrets / "load-key").read_text().strip()
        stop_event = threading.Event()
        thread = threading.Thread(target=_traffic, args=(running.url, key, stop_event), daemon=True)
        thread.start()
        try:
            yield ComposeService(running, metrics_port, key)
        finally:
            stop_event.set()
            thread.join(timeout=10)


def _query(prometheus: str, expr: str) -> dict[str, Any]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, body = http_get(url)
    answer: dict[str, Any] = json.loads(body)
    assert status == 200 and answer["status"] == "success", f"{expr}: {answer}"
    return answer


@pytest.fixture(scope="module")
def prometheus(server: ComposeService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(PROMETHEUS).is_file():
        pytest.skip("prometheus is not installed (`make system-deps` installs Debian's package; CI does)")
    work = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    # The scrape config reads the metrics listener (open), so Prometheus needs no key.
    swap = {"service:8002": f"127.0.0.1:{server.metrics_port}", "localhost:9090": f"127.0.0.1:{port}"}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [swap.get(t, t) for t in static["targets"]]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    # The compose service's own flags, with its container paths swapped for temp ones.
    paths = {
        "/etc/prometheus/prometheus.yml": str(work / "prometheus.yml"),
        "/prometheus": str(work / "data"),
    }
    flags = []
    for flag in command_of("prometheus"):
        name, _, value = flag.partition("=")
        flags.append(f"{name}={paths.get(value, value)}")
    assert any(f.startswith("--config.file=") for f in flags) and "/etc/" not in " ".join(flags)
    argv = [PROMETHEUS, *flags, f"--web.listen-address=127.0.0.1:{port}"]
    log = work / "prometheus.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if http_get(f"{url}/-/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus not ready:\n" + log.read_text()[-3000:]
            time.sleep(0.25)
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def scraped(prometheus: str) -> str:
    """Waits (bounded) until the request-rate query over the models returns a positive rate."""
    deadline = time.monotonic() + WAIT_FOR_DATA_S
    while True:
        result = _query(prometheus, RATE_QUERY)["data"]["result"]
        if result and float(result[0]["value"][1]) > 0:
            return prometheus
        assert time.monotonic() < deadline, f"no data for {RATE_QUERY} in {WAIT_FOR_DATA_S} s"
        time.sleep(1)


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def _grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "15s").replace("$model", ".*")


def test_promtool_accepts_the_scrape_config() -> None:
    if not Path(PROMTOOL).is_file():
        pytest.skip("promtool is not installed (`make system-deps` installs Debian's prometheus; CI does)")
    done = subprocess.run(
        [PROMTOOL, "check", "config", str(SCRAPE_CONFIG)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_request_rate_over_the_models(scraped: str) -> None:
    per_model = _query(scraped, "sum by (model) (rate(recap_requests_total[15s]))")["data"]["result"]
    rates = {r["metric"].get("model"): float(r["value"][1]) for r in per_model}
    assert rates.get("iris-mlp", 0) > 0, rates
    up = _query(scraped, 'up{job="recap-serve"}')["data"]["result"]
    assert [r["value"][1] for r in up] == ["1"]


@pytest.mark.e2e
@pytest.mark.slow
def test_every_dashboard_query_runs(scraped: str) -> None:
    """Valid PromQL once Grafana's variables are filled in; data for each one the tabular traffic (with its
    failures) feeds, that is all but the generation panels."""
    empty = [e for e in _dashboard_exprs() if not _query(scraped, _grafana_to_promql(e))["data"]["result"]]
    fed = [e for e in empty if not any(name in e for name in GENERATION_METRICS)]
    assert not fed, f"dashboard queries without data: {fed}"
    assert len(empty) < len(_dashboard_exprs()) / 2


@pytest.mark.e2e
def test_dashboard_metrics_are_exported(server: ComposeService) -> None:
    time.sleep(0.5)  # some traffic, so labelled series exist
    assert http_get(f"{server.server.url}/metrics")[0] == 401  # the main port asks for a metrics key
    status, body = http_get(server.metrics_url)
    assert status == 200
    exported: set[str] = set()
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            exported |= (
                {name, *(f"{name}{s}" for s in ("_bucket", "_sum", "_count"))}
                if kind == "histogram"
                else {name}
            )
        elif line and not line.startswith("#"):
            exported.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    used = {name for expr in _dashboard_exprs() for name in re.findall(r"\brecap_[a-z0-9_]+\b", expr)}
    assert used, "the dashboard queries no recap_ metric"
    assert used <= exported, f"dashboard metrics the server does not export: {sorted(used - exported)}"
    template = json.loads(DASHBOARD.read_text())["templating"]["list"][0]["definition"]
    assert re.findall(r"\brecap_[a-z0-9_]+\b", template)[0] in exported


@pytest.mark.e2e
def test_compose_healthcheck_passes_natively(server: ComposeService) -> None:
    """The compose healthcheck's argv, run as an engine runs an exec-form check: passes against a ready
    server, fails against a port nobody listens on."""
    test = raw_services()["service"]["healthcheck"]["test"]
    assert test[0] == "CMD" and not any(" " in part for part in test[1:]), test
    argv = [sys.executable if test[1] == "python" else test[1], *test[2:]]

    def run(port: int) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "RECAP_PORT": str(port)}
        return subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=30, check=False
        )

    assert run(server.server.port).returncode == 0  # the probe needs no key
    refused = run(free_port())
    assert refused.returncode == 1 and "not healthy" in refused.stderr
