"""In-process apps: a TestClient of `create_app` on a repository, with settings of the test's choosing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings


def make_client(repo: Path, **settings: Any) -> TestClient:
    """In process, without gRPC unless asked (`grpc_port`): many apps start in one test run."""
    settings.setdefault("grpc_port", 0)
    return TestClient(create_app(Settings(model_repository=repo, **settings)), raise_server_exceptions=False)
