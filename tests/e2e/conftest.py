"""Session-scoped real servers: one on a repository of test models plus the zoo's classifiers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.server import RunningServer, copy_zoo_models, start_server
from tests.service.onnx_models import build_repository

ZOO_CLASSIFIERS = ("breast-cancer-mlp", "iris-mlp")


@dataclass
class E2E:
    server: RunningServer
    repository: Path
    zoo: list[str]


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    repository = build_repository(tmp_path_factory.mktemp("e2e-models"))
    zoo = copy_zoo_models(repository, ZOO_CLASSIFIERS)
    log = tmp_path_factory.mktemp("e2e-logs") / "server.log"
    # Readiness is relaxed through the environment (RECAP_ variables are part of what is tested):
    # the repository holds broken models on purpose.
    server = start_server(
        repository, log, env={"RECAP_STRICT_READINESS": "false"}, wait_path="/v2/health/ready"
    )
    try:
        yield E2E(server, repository, zoo)
    finally:
        server.stop()
