"""Real processes on free ports for the e2e tests: `python -m service` (or a compose command), locust."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / "models"
# The zoo by default; RECAP_TEST_MODEL_REPOSITORY points the tests at another repository (development).
MODELS = Path(os.environ.get("RECAP_TEST_MODEL_REPOSITORY", ZOO))
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGINT (uvicorn's graceful stop), then SIGKILL if it does not go."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    log_path: Path
    grpc_port: int = 0  # 0: the server has no gRPC listener

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    def stop(self) -> None:
        stop(self.process)


@dataclass
class E2E:
    """A server on a repository of test models (tests.helpers.onnx_models) plus some zoo models."""

    server: RunningServer
    repository: Path
    zoo: list[str]


def start_server(
    repository: Path,
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    wait_path: str = "/v2/health/ready",
    timeout: float = START_TIMEOUT,
    command: Sequence[str] | None = None,
    port: int | None = None,
) -> RunningServer:
    """The real server on a free port, answering 200 on `wait_path`.

    By default `python -m service --host 127.0.0.1 --port P --model-repository <repository>`; with
    `command`, that command with RECAP_HOST/RECAP_PORT set (the compose way: settings as env vars).
    `port`: that port instead of a free one (a replica behind a balancer's fixed upstream).
    """
    port = port or free_port()
    # Every server gets its own free gRPC port unless the test says otherwise (RECAP_GRPC_PORT).
    full_env = {**os.environ, "RECAP_GRPC_PORT": str(free_port()), **(env or {})}
    grpc_port = int(full_env["RECAP_GRPC_PORT"])
    if command is None:
        argv = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--model-repository", str(repository)]
    else:
        argv = [sys.executable if command[0] in ("python", "python3") else command[0], *command[1:]]
        full_env |= {"RECAP_HOST": "127.0.0.1", "RECAP_PORT": str(port)}
    with log_path.open("wb") as sink:
        process = subprocess.Popen(argv, cwd=REPO, env=full_env, stdout=sink, stderr=subprocess.STDOUT)
    server = RunningServer(process, f"http://127.0.0.1:{port}", port, log_path, grpc_port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if http_get(server.url + wait_path, timeout=2)[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not answer {wait_path} within {timeout:.0f} s:\n{server.log_tail()}")


@contextmanager
def running_server(
    log_dir: Path, command: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> Iterator[RunningServer]:
    """start_server on the zoo, stopped on exit; its log lands in `log_dir`."""
    log_path = log_dir / f"server-{time.monotonic_ns()}.log"
    server = start_server(MODELS, log_path, env=env, command=command)
    try:
        yield server
    finally:
        server.stop()


def service_available() -> str | None:
    """None when the real server and a zoo exist in this checkout, else why not."""
    if not (REPO / "service" / "main.py").is_file() or not (REPO / "service" / "__main__.py").is_file():
        return "the server (service/main.py, service/__main__.py) is not in this checkout yet"
    if not any(MODELS.glob("*/*/model.onnx")):
        return "models/ holds no model.onnx yet"
    return None


def copy_zoo_models(target: Path, names: tuple[str, ...]) -> list[str]:
    """Copy those zoo models that exist (the zoo lands over time); returns the names copied."""
    copied = []
    for name in names:
        if (ZOO / name).is_dir():
            shutil.copytree(ZOO / name, target / name, ignore=shutil.ignore_patterns("*.png"))
            copied.append(name)
    return copied


def locust_command(*args: str) -> list[str]:
    """The venv's locust (a subprocess: locust monkey-patches with gevent, never import it here)."""
    return [str(VENV_BIN / "locust"), *args]
