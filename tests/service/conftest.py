"""Fixtures: a model repository of small ONNX models, and in-process clients of apps built on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers.apps import make_client
from tests.helpers.onnx_models import build_repository


@pytest.fixture(autouse=True)
def _no_grpc_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process apps start no gRPC listener (port 8001 for every app of the run would collide)."""
    monkeypatch.setenv("RECAP_GRPC_PORT", "0")


@pytest.fixture(scope="session")
def repo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def client(repo_dir: Path) -> Iterator[TestClient]:
    with make_client(repo_dir) as test_client:
        yield test_client
