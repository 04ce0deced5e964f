"""The A/B benchmark's moving parts: the old code really is the old code, the no-regression rule is
applied as the README states it, and side by side really loads both servers in every window (`make
bench-ab` prints the figures; only the last test runs wrk, briefly, against two bare endpoints)."""

from __future__ import annotations

import os
import shutil
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


def test_no_regression_means_at_most_five_percent_more_cpu_per_request_in_the_median_window() -> None:
    assert bench.regression_verdict([1.05]) == (1.05, True)
    assert bench.regression_verdict([0.93, 1.2, 0.99])[1]  # one noisy window does not decide
    ratio, ok = bench.regression_verdict([1.055, 1.06, 0.98])
    assert ratio == pytest.approx(1.055) and not ok


def test_side_by_side_ratios_pair_the_windows_the_two_servers_shared() -> None:
    old, new = bench.Target("old", ["true"], "/", "/"), bench.Target("new", ["true"], "/", "/")
    old.runs = [{"cpu_us": 100.0}, {"cpu_us": 200.0}, {"cpu_us": 150.0}]  # the machine's speed drifted
    new.runs = [{"cpu_us": 102.0}, {"cpu_us": 204.0}, {"cpu_us": 153.0}]
    assert bench.paired_ratios(old, new, "cpu_us") == pytest.approx([1.02, 1.02, 1.02])
    assert bench.regression_verdict(bench.paired_ratios(old, new, "cpu_us"))[0] == pytest.approx(1.02)
    new.runs.pop()  # a window only one of them ran in pairs with nothing
    with pytest.raises(ValueError):
        bench.paired_ratios(old, new, "cpu_us")


def test_a_target_reports_medians_of_its_runs() -> None:
    target = bench.Target("x", ["true"], "/", "/")
    target.runs = [{"cpu_us": 150.0}, {"cpu_us": 130.0}, {"cpu_us": 170.0}]
    assert target.median("cpu_us") == 150.0


def test_side_by_side_loads_both_servers_in_every_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        pytest.skip("wrk or taskset is missing: `make system-deps` installs wrk")
    body = tmp_path / "body.json"
    body.write_text('{"inputs": []}')
    first, second = bench.bare_target(), bench.bare_target()
    first.label, second.label = "first", "second"
    bench.side_by_side((first, second), (body, 1, 4), rounds=2)
    for target in (first, second):
        assert len(target.runs) == 2
        for run in target.runs:
            assert run["rps"] > 100 and run["errors"] == 0 and run["cpu_us"] > 0
    for one, other in zip(first.runs, second.runs, strict=True):  # the two loads of a window overlap
        assert one["started"] < other["ended"] and other["started"] < one["ended"]
    assert len(bench.paired_ratios(first, second, "cpu_us")) == 2
    printed = capsys.readouterr().out
    assert "window 1: first" in printed and "window 2: first" in printed and "ratio" in printed
