"""The real stack: images built with podman, docker-compose.yml run through podman's Docker API.

Session-scoped and in order: the engine, the images (the base image is cached in podman's store between
runs), then the compose project with the `service` up and healthy. Skips, with the reason, only where
podman and its tools are missing or the process cannot run rootful containers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.helpers.compose import make_secrets
from tests.helpers.servers import REPO, free_port
from tests.helpers.stack import (
    BASE_IMAGE,
    LOCUST_IMAGE,
    NGINX_IMAGE,
    PROMETHEUS_IMAGE,
    SERVICE_IMAGE,
    Engine,
    missing_tools,
)

FIGURES = REPO / "reports" / "stack" / "figures.json"


@dataclass
class Stack:
    engine: Engine
    env: dict[str, str]  # what every compose call of the session sees (published ports, images, secrets)
    url: str
    service: str  # the service's container name
    key: str  # the operator key (every scope) of the stack's secrets

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def compose(self, *argv: str, timeout: float = 300, check: bool = True) -> str:
        done = self.engine.compose(*argv, env=self.env, timeout=timeout, check=check)
        return done.stdout + done.stderr


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"the real-stack tests need {', '.join(missing)}: `make system-deps` installs them")
    if os.geteuid() != 0:
        pytest.skip("the real-stack tests run rootful podman (the README's recipe): run them as root")
    engine = Engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def images(engine: Engine) -> Engine:
    started = time.monotonic()
    built_base = engine.ensure_base_image()
    base = [f"PYTHON_IMAGE={BASE_IMAGE}"]
    engine.build("docker/service.Dockerfile", SERVICE_IMAGE, base)
    engine.build("docker/locust.Dockerfile", LOCUST_IMAGE, base)
    engine.build("docker/prometheus.Dockerfile", PROMETHEUS_IMAGE, [f"BASE_IMAGE={BASE_IMAGE}"])
    engine.build("docker/nginx.Dockerfile", NGINX_IMAGE, [f"BASE_IMAGE={BASE_IMAGE}"])
    engine.timed("all images", started)
    sizes = {image: engine.image_size(image) for image in (BASE_IMAGE, SERVICE_IMAGE, LOCUST_IMAGE)}
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(
        json.dumps({"base_image_built": built_base, "seconds": engine.timings, "bytes": sizes}, indent=2)
    )
    return engine


@pytest.fixture(scope="session")
def stack(images: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    secrets = tmp_path_factory.mktemp("stack") / "secrets"
    key = make_secrets(secrets)  # what `make api-keys` writes
    env = {
        "RECAP_PUBLISH_PORT": str(free_port()),
        "RECAP_GRPC_PUBLISH_PORT": str(free_port()),
        "LOCUST_PUBLISH_PORT": str(free_port()),
        "PROMETHEUS_PUBLISH_PORT": str(free_port()),
        "PROMETHEUS_IMAGE": PROMETHEUS_IMAGE,
        "NGINX_IMAGE": NGINX_IMAGE,
        "NGINX_PUBLISH_PORT": str(free_port()),
        "RECAP_API_KEYS_SECRET": str(secrets / "api-keys"),
        "RECAP_LOAD_KEY_SECRET": str(secrets / "load-key"),
    }
    running = Stack(images, env, f"http://127.0.0.1:{env['RECAP_PUBLISH_PORT']}", "", key)
    every_profile = ["--profile", "load", "--profile", "monitoring", "--profile", "scale"]
    running.compose(*every_profile, "down", "-v", check=False)  # what a crashed earlier run left
    running.compose("up", "-d", "--no-build", "service")
    (running.service,) = images.containers()
    try:
        yield running
    finally:
        running.compose(*every_profile, "down", "-v", check=False)
