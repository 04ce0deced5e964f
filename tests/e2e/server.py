"""Start `python -m service` as a real process on a free port, wait until it answers, stop it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "models"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    repository: Path,
    log_path: Path,
    env: dict[str, str] | None = None,
    wait_path: str = "/v2/health/live",
    timeout: float = 60.0,
) -> RunningServer:
    port = free_port()
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--model-repository", str(repository)]
    handle = log_path.open("wb")
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=handle, stderr=subprocess.STDOUT
    )
    handle.close()
    server = RunningServer(process, f"http://127.0.0.1:{port}", port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()[-3000:]}")
        try:
            if httpx.get(server.url + wait_path, timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not answer {wait_path} within {timeout:.0f} s:\n{server.log()[-3000:]}")


def copy_zoo_models(target: Path, names: tuple[str, ...]) -> list[str]:
    """Copy those zoo models that exist (the zoo lands over time); returns the names copied."""
    copied = []
    for name in names:
        if (ZOO / name).is_dir():
            shutil.copytree(ZOO / name, target / name, ignore=shutil.ignore_patterns("*.png"))
            copied.append(name)
    return copied
