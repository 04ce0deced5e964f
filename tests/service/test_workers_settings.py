"""--workers: the settings it refuses, and each worker's share of the per-server limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.main import limits, share
from service.settings import Settings


def test_explicit_mode_with_several_workers_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="explicit needs --workers 1"):
        Settings(model_repository=tmp_path, workers=2, model_control_mode="explicit")
    Settings(model_repository=tmp_path, workers=2, model_control_mode="poll")
    Settings(model_repository=tmp_path, workers=1, model_control_mode="explicit")


@pytest.mark.parametrize("workers", [0, -1, 257])
def test_worker_counts_out_of_range(tmp_path: Path, workers: int) -> None:
    with pytest.raises(ValidationError, match="--workers"):
        Settings(model_repository=tmp_path, workers=workers)


def test_auto_is_the_cpus_this_process_may_use(tmp_path: Path) -> None:
    import os  # noqa: PLC0415

    assert Settings(model_repository=tmp_path, workers="auto").worker_count == len(os.sched_getaffinity(0))


def test_each_worker_takes_its_share_of_the_server_limits(tmp_path: Path) -> None:
    assert share(64, 2) == 32 and share(0, 4) == 0 and share(3, 4) == 1
    settings = Settings(model_repository=tmp_path, workers=2, max_concurrency=10)
    mine = limits(settings)
    assert mine.max_concurrency == 5
    assert mine.max_inflight_bytes == 32 * 1024 * 1024  # 64 MiB / 2
    four = limits(Settings(model_repository=tmp_path, workers=4))
    assert four.max_inflight_bytes == four.max_body_bytes  # room for one whole body, never less
    assert limits(Settings(model_repository=tmp_path)).max_concurrency == 64


def test_a_server_limit_below_the_worker_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"--max-concurrency \(1\) is below --workers \(2\)"):
        Settings(model_repository=tmp_path, workers=2, max_concurrency=1)
