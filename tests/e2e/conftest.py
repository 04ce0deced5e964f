"""Session-scoped real servers shared by the e2e modules: one on a repository of test models plus the
zoo's classifiers (`e2e`), and one on the whole zoo with small generation caps (`zoo_server`)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.helpers.onnx_models import build_repository
from tests.helpers.servers import E2E, MODELS, RunningServer, copy_zoo_models, start_server
from tests.helpers.zoo import DATES, DISCRIMINATOR, GAN, GPT, SEQUENCE_MODELS, require_models

ZOO_CLASSIFIERS = ("breast-cancer-mlp", "iris-mlp")
# The zoo server's settings: a high max_tokens cap so a disconnected stream has plenty left to skip,
# and a small stream cap so the 429 is cheap to reach.
ZOO_SERVER_ENV = {
    "RECAP_GENERATE_MAX_TOKENS": "4000",
    "RECAP_GENERATE_MAX_STREAMS": "3",
    "RECAP_GENERATE_MAX_PROMPT_LENGTH": "2000",
}


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    repository = build_repository(tmp_path_factory.mktemp("e2e-models"))
    zoo = copy_zoo_models(repository, ZOO_CLASSIFIERS)
    log = tmp_path_factory.mktemp("e2e-logs") / "server.log"
    # Readiness is relaxed through the environment (RECAP_ variables are part of what is tested):
    # the repository holds broken models on purpose.
    server = start_server(repository, log, env={"RECAP_STRICT_READINESS": "false"})
    try:
        yield E2E(server, repository, zoo)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def zoo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The real server (`python -m service`) on a free port, serving the zoo with ZOO_SERVER_ENV."""
    require_models(GPT, DATES, GAN, DISCRIMINATOR, *SEQUENCE_MODELS)
    log = tmp_path_factory.mktemp("zoo-server") / "server.log"
    server = start_server(MODELS, log, env=ZOO_SERVER_ENV)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(zoo_server: RunningServer) -> Iterator[httpx.Client]:
    """An HTTP client of the zoo server."""
    with httpx.Client(base_url=zoo_server.url, timeout=60) as http:
        yield http
