"""Start the real server (`python -m service`) and other real processes on free ports, for e2e tests."""

from __future__ import annotations

import os
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
MODELS = Path(os.environ.get("RECAP_TEST_MODEL_REPOSITORY", REPO / "models"))  # dev override
VENV_BIN = Path(sys.executable).parent
SERVER_START_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def service_available() -> str | None:
    """None when the real server and a zoo exist in this checkout, else why not."""
    if not (REPO / "service" / "main.py").is_file() or not (REPO / "service" / "__main__.py").is_file():
        return "the server (service/main.py, service/__main__.py) is not in this checkout yet"
    if not any(MODELS.glob("*/*/model.onnx")):
        return "models/ holds no model.onnx yet"
    return None


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


@contextmanager
def running_server(
    log_dir: Path,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """The real server on a free port, ready (GET /v2/health/ready == 200) before it is yielded.

    By default `python -m service --host 127.0.0.1 --port P --model-repository models`; with `command`
    and `env`, that command with RECAP_HOST/RECAP_PORT set (the compose way: settings as env vars).
    """
    port = free_port()
    full_env = {**os.environ, **(env or {})}
    if command is None:
        argv = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--model-repository", str(MODELS)]
    else:
        argv = [sys.executable if command[0] in ("python", "python3") else command[0], *command[1:]]
        full_env |= {"RECAP_HOST": "127.0.0.1", "RECAP_PORT": str(port)}
    log = log_dir / f"server-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, cwd=REPO, env=full_env, stdout=sink, stderr=subprocess.STDOUT)
    server = Server(url=f"http://127.0.0.1:{port}", port=port, process=process, log=log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{server.log_tail()}")
            try:
                if http_get(f"{server.url}/v2/health/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in {SERVER_START_TIMEOUT} s:\n{server.log_tail()}")
            time.sleep(0.25)
        yield server
    finally:
        stop(process)


def locust_command(*args: str) -> list[str]:
    """The venv's locust (a subprocess: locust monkey-patches with gevent, never import it here)."""
    return [str(VENV_BIN / "locust"), *args]
