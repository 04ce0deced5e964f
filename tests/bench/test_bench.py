"""The A/B benchmark's moving parts, without running wrk: the old code really is the old code, and the
no-regression rule is applied as the README states it (`make bench-ab` prints the figures)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import bench


def test_the_old_server_imports_the_extracted_commit(tmp_path: Path) -> None:
    if not (bench.ROOT / ".git").exists():
        pytest.skip("not a git checkout: --ab extracts the old code with git archive")
    described = bench.extract_commit("HEAD", tmp_path / "old")
    assert described.split()[0]
    target = bench.recap_target("old", bench.ROOT / "models", code=tmp_path / "old")
    imported = subprocess.run(
        [sys.executable, "-c", "import service.main; print(service.main.__file__)"],
        cwd=target.cwd, env={**os.environ, **target.env}, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert Path(imported).is_relative_to(tmp_path / "old")
    assert "{port}" in target.argv and str(bench.ROOT / "models") in target.argv


def test_no_regression_means_at_most_five_percent_more_cpu_per_request() -> None:
    assert bench.regression_verdict(100.0, 105.0) == (1.05, True)
    assert bench.regression_verdict(100.0, 93.0)[1]
    ratio, ok = bench.regression_verdict(100.0, 105.5)
    assert ratio == pytest.approx(1.055) and not ok


def test_a_target_reports_medians_of_its_runs() -> None:
    target = bench.Target("x", ["true"], "/", "/")
    target.runs = [{"cpu_us": 150.0}, {"cpu_us": 130.0}, {"cpu_us": 170.0}]
    assert target.median("cpu_us") == 150.0
