"""One real server per module for the e2e load tests (skipped, with the reason, until it exists)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.servers import RunningServer, running_server, service_available


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    reason = service_available()
    if reason:
        pytest.skip(reason)
    log_dir: Path = tmp_path_factory.mktemp("server")
    with running_server(log_dir) as running:
        yield running
