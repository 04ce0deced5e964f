"""Fixtures: a model repository of small ONNX models, and in-process clients of apps built on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.service.onnx_models import build_repository


@pytest.fixture(scope="session")
def repo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("models"))


def make_client(repo: Path, **settings: Any) -> TestClient:
    return TestClient(create_app(Settings(model_repository=repo, **settings)), raise_server_exceptions=False)


@pytest.fixture(scope="session")
def client(repo_dir: Path) -> Iterator[TestClient]:
    with make_client(repo_dir) as test_client:
        yield test_client
