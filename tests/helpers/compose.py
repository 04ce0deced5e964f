"""Read docker-compose.yml as Compose resolves it: `docker-compose config` when the binary is there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
PROFILES = ("gpu", "load", "monitoring")
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def compose_binary() -> str | None:
    return shutil.which("docker-compose")


def compose_config() -> dict[str, Any]:
    """The resolved file with every profile enabled (anchors merged, ${VAR:-default} substituted)."""
    binary = compose_binary()
    if binary is None:
        raise RuntimeError("docker-compose is not installed (make system-deps installs it)")
    argv = [binary, "--file", str(COMPOSE_FILE)]
    for profile in PROFILES:
        argv += ["--profile", profile]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECAP_", "LOAD_", "GRAFANA_"))}
    done = subprocess.run(
        [*argv, "config"], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise AssertionError(f"docker-compose config failed:\n{done.stderr}")
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def substitute(value: str) -> str:
    """Compose's ${VAR:-default} with the defaults (for reading the raw file without the binary)."""
    return _VARIABLE.sub(lambda m: m.group(2) or "", value)


def raw_services() -> dict[str, Any]:
    """The services of the file as written (merge keys resolved by the YAML loader)."""
    services: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return services


def command_of(service: str) -> list[str]:
    """A service's command with compose's variable defaults applied."""
    command = raw_services()[service]["command"]
    assert isinstance(command, list), f"{service}: give the command as a list"
    return [substitute(str(part)) for part in command]


def native_environment(service: str, secrets: Path, models: Path, metrics_port: int) -> dict[str, str]:
    """A compose service's RECAP_* environment for a native run: its container paths (the repository,
    the keys secret) swapped for local ones, its metrics listener on a free port."""
    env = {key: substitute(str(value)) for key, value in raw_services()[service]["environment"].items()}
    assert env["RECAP_API_KEYS_FILE"] == "/run/secrets/recap_api_keys"
    env["RECAP_API_KEYS_FILE"] = str(secrets / "api-keys")
    env["RECAP_MODEL_REPOSITORY"] = str(models)  # /models in the container (mounted read-only)
    env["RECAP_METRICS_PORT"] = str(metrics_port)
    return env


def make_secrets(folder: Path) -> str:
    """The compose secrets, written by the project's own tool; returns the operator key it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "service.keys", "compose-secrets", str(folder)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip().rsplit(" ", 1)[-1]
