"""Safe by default, on real server processes: keys with tritonclient, rotation while clients keep calling
(SIGHUP, an atomic rename, a swapped Secret symlink), no key in a debug log, protected mode, HTTPS with
the test's own certificate (httpx and tritonclient), and the metrics listener."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import trustme

from tests.helpers.onnx_models import build_repository
from tests.helpers.servers import REPO, RunningServer, free_port, start_server

pytestmark = pytest.mark.e2e
OLD = "old-inference-key-0123456789abcdef"
NEW = "new-inference-key-0123456789abcdef"
METRICS_KEY = "metrics-key-0123456789abcdefghij"
ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.1] * 4}]}
RELAXED = {"RECAP_STRICT_READINESS": "false"}  # the test repository holds broken models on purpose


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture
def keyed(repository: Path, tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    keys = tmp_path / "api-keys"
    keys.write_text(f"inference {OLD}\nmetrics {METRICS_KEY}\n")
    env = RELAXED | {"RECAP_API_KEYS_FILE": str(keys), "RECAP_LOG_LEVEL": "debug", "RECAP_ACCESS_LOG": "true"}
    server = start_server(repository, tmp_path / "server.log", env=env)
    try:
        yield server, keys
    finally:
        server.stop()


def test_tritonclient_passes_the_key_in_headers(keyed: tuple[RunningServer, Path]) -> None:
    server, _ = keyed
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    x = triton.InferInput("input", [2, 4], "FP32")
    x.set_data_from_numpy(np.full((2, 4), 0.1, dtype=np.float32))
    with pytest.raises(triton.InferenceServerException, match="missing or unknown API key"):
        client.infer("iris-like", [x])
    result = client.infer("iris-like", [x], headers=bearer(OLD))
    assert result.as_numpy("probabilities").shape == (2, 3)
    assert client.get_model_metadata("iris-like", headers=bearer(OLD))["name"] == "iris-like"
    assert client.is_server_live()  # the probes need no key


def _rotate(server: RunningServer, keys: Path, publish: str, wait_s: float = 10.0) -> None:
    """Add NEW, move clients to it, remove OLD: the old key is revoked while requests go on."""
    failures: list[int] = []
    stop = threading.Event()

    def client_on_new_key() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            while not stop.is_set():
                status = http.post("/v2/models/iris-like/infer", json=ROW, headers=bearer(NEW)).status_code
                if status != 200:
                    failures.append(status)
                time.sleep(0.01)

    def publish_file(text: str) -> None:
        if publish == "rename":  # write beside it, then rename over it (atomic)
            fresh = keys.with_name("api-keys.new")
            fresh.write_text(text)
            os.replace(fresh, keys)
        else:  # rewrite in place, then SIGHUP
            keys.write_text(text)
            server.process.send_signal(signal.SIGHUP)

    def wait_until(key: str, status: int) -> None:
        deadline = time.monotonic() + wait_s
        with httpx.Client(base_url=server.url, timeout=10) as http:
            while (
                http.post("/v2/models/iris-like/infer", json=ROW, headers=bearer(key)).status_code != status
            ):
                assert time.monotonic() < deadline, (
                    f"{key[:3]}... never answered {status}:\n{server.log_tail()}"
                )
                time.sleep(0.05)

    publish_file(f"inference {OLD}\ninference {NEW}\nmetrics {METRICS_KEY}\n")
    wait_until(NEW, 200)
    worker = threading.Thread(target=client_on_new_key)
    worker.start()
    try:
        time.sleep(0.3)
        publish_file(f"inference {NEW}\nmetrics {METRICS_KEY}\n")
        wait_until(OLD, 401)
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join()
    assert failures == [], "the clients on the new key were never refused"
    assert server.process.poll() is None


def test_rotation_with_sighup_revokes_the_old_key(keyed: tuple[RunningServer, Path]) -> None:
    server, keys = keyed
    _rotate(server, keys, publish="sighup", wait_s=3.0)  # a signal acts at once
    assert "API keys reloaded" in server.log()


def test_rotation_by_atomic_rename_needs_no_signal(keyed: tuple[RunningServer, Path]) -> None:
    server, keys = keyed
    _rotate(server, keys, publish="rename")  # noticed by polling, within about a second


def test_no_key_reaches_the_log_even_at_debug(keyed: tuple[RunningServer, Path]) -> None:
    server, _ = keyed
    wrong = "wrong-key-0123456789abcdefghijkl"
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for key in (OLD, wrong, METRICS_KEY):
            http.post("/v2/models/iris-like/infer", json=ROW, headers=bearer(key))
            http.get("/metrics", headers=bearer(key))
            http.get("/v2/models/nope", headers=bearer(key))
    log = server.log()
    assert "uvicorn.access" in log and '/metrics HTTP/1.1" 401' in log  # the lines are there...
    for key in (OLD, wrong, METRICS_KEY):
        assert key not in log and key[:12] not in log  # ...but no key, nor the start of one


def test_protected_mode_refuses_a_public_bind_without_keys(repository: Path, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "service", "--host", "0.0.0.0", "--port", str(free_port())]
    argv += ["--model-repository", str(repository)]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and time.monotonic() - started < 10
    assert "--api-keys-file" in done.stderr and "--allow-unauthenticated" in done.stderr
    server = start_server(
        repository,
        tmp_path / "open.log",
        env=RELAXED | {"RECAP_ALLOW_UNAUTHENTICATED": "true"},
        command=["python", "-m", "service", "--host", "0.0.0.0", "--model-repository", str(repository)],
    )
    try:
        assert httpx.get(f"{server.url}/v2/models/iris-like").status_code == 200
    finally:
        server.stop()
    warnings = [line for line in server.log().splitlines() if "clear text" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A CA of the test's own and a server certificate it signed for 127.0.0.1 and localhost."""
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(folder / "ca.pem")
    leaf.private_key_pem.write_to_path(folder / "server.key")
    leaf.cert_chain_pems[0].write_to_path(folder / "server.pem")
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


def test_https_with_the_tests_own_certificate(
    repository: Path, tmp_path: Path, certificate: tuple[Path, Path, Path]
) -> None:
    ca, cert, key = certificate
    keys = tmp_path / "api-keys"
    keys.write_text(f"inference {OLD}\n")
    env = RELAXED | {
        "RECAP_TLS_CERT_FILE": str(cert),
        "RECAP_TLS_KEY_FILE": str(key),
        "RECAP_API_KEYS_FILE": str(keys),
    }
    port = free_port()
    argv = [sys.executable, "-m", "service", "--port", str(port), "--model-repository", str(repository)]
    log = tmp_path / "tls.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, cwd=REPO, env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"https://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=ca), timeout=10) as https:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if https.get("/v2/health/live").status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and process.poll() is None, log.read_text()
                    time.sleep(0.2)
            answer = https.post("/v2/models/iris-like/infer", json=ROW, headers=bearer(OLD))
            assert answer.status_code == 200 and len(answer.json()["outputs"]) == 2
        with pytest.raises(httpx.ConnectError):  # not trusted without the test's CA
            httpx.get(f"{url}/v2/health/live", timeout=5)
        client = triton.InferenceServerClient(
            f"127.0.0.1:{port}", ssl=True, ssl_options={"ca_certs": str(ca)}
        )
        x = triton.InferInput("input", [1, 4], "FP32")
        x.set_data_from_numpy(np.full((1, 4), 0.1, dtype=np.float32))
        assert client.infer("iris-like", [x], headers=bearer(OLD)).as_numpy("probabilities").shape == (1, 3)
        # A body big enough to be gathered whole (service.http_protocol): over TLS it goes through the
        # transport, never the socket's encrypted bytes.
        rows = np.random.default_rng(5).normal(size=(60_000, 3)).astype(np.float32)
        big = triton.InferInput("input", list(rows.shape), "FP32")
        big.set_data_from_numpy(rows, binary_data=True)
        output = triton.InferRequestedOutput("output", binary_data=True)
        echoed = client.infer("identity-fp32", [big], outputs=[output], headers=bearer(OLD))
        np.testing.assert_array_equal(echoed.as_numpy("output"), rows)
        client.close()  # an open TLS connection would hold the server's shutdown for its TLS timeout
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)


def test_the_metrics_listener_is_open_or_asks_for_the_metrics_scope(repository: Path, tmp_path: Path) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text(f"inference {OLD}\nmetrics {METRICS_KEY}\n")
    for auth in (False, True):
        metrics_port = free_port()
        env = RELAXED | {"RECAP_API_KEYS_FILE": str(keys), "RECAP_METRICS_PORT": str(metrics_port)}
        env |= {"RECAP_METRICS_PORT_AUTH": str(auth).lower()}
        server = start_server(repository, tmp_path / f"metrics-{auth}.log", env=env)
        try:
            listener = f"http://127.0.0.1:{metrics_port}"
            assert httpx.get(f"{server.url}/metrics").status_code == 401  # the main port: always the scope
            open_answer = httpx.get(f"{listener}/metrics")
            assert open_answer.status_code == (401 if auth else 200)
            keyed_answer = httpx.get(f"{listener}/metrics", headers=bearer(METRICS_KEY))
            assert keyed_answer.status_code == 200 and "recap_requests_total" in keyed_answer.text
            assert httpx.get(f"{listener}/metrics", headers=bearer(OLD)).status_code == (403 if auth else 200)
            assert httpx.get(f"{listener}/v2/models/iris-like").status_code == 404  # metrics only
        finally:
            server.stop()
        assert server.process.returncode == 0, server.log_tail()
