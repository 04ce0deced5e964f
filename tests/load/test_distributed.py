"""Distributed Locust as compose runs it: the master's and workers' commands from docker-compose.yml, run
natively as three processes against a real server; requests must come from both workers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.compose import command_of
from tests.helpers.load_plan import plan_for, stats_rows
from tests.helpers.servers import REPO, RunningServer, free_port, locust_command, stop

WORKERS = 2


def _native(command: list[str], replacements: dict[str, str]) -> list[str]:
    """A compose command with container names swapped for local addresses, run with the venv's locust."""
    assert command[0] == "locust", command
    return locust_command(*(replacements.get(part, part) for part in command[1:]))


@pytest.mark.e2e
@pytest.mark.slow
def test_master_and_two_workers(server: RunningServer, tmp_path: Path) -> None:
    plan = plan_for(server.url)
    master_cmd, worker_cmd = command_of("locust-master"), command_of("locust-worker")
    assert master_cmd[master_cmd.index("--host") + 1] == "http://service:8000"
    port = free_port()
    replacements = {"http://service:8000": server.url, "locust-master": "127.0.0.1", "8089": str(free_port())}
    master_argv = [
        *_native(master_cmd, replacements),
        "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
        "--headless", "--expect-workers", str(WORKERS), "-u", "6", "-r", "6", "-t", "12s",
        "--csv", str(tmp_path / "dist"), "--only-summary",
    ]  # fmt: skip
    if plan.excluded_tags:
        master_argv += ["--exclude-tags", *plan.excluded_tags]
    worker_argv = [*_native(worker_cmd, replacements), "--master-port", str(port)]
    env = {**os.environ, "RECAP_LOAD_MODELS": ",".join(plan.models)}

    logs = [tmp_path / f"worker{i}.log" for i in range(WORKERS)]
    workers = []
    for log in logs:
        with log.open("wb") as sink:
            workers.append(
                subprocess.Popen(worker_argv, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
            )
    try:
        master = subprocess.run(
            master_argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=90, check=False
        )
        for worker in workers:
            worker.wait(timeout=30)  # the master tells its workers to quit when it stops
    finally:
        for worker in workers:
            stop(worker)
    output = master.stdout[-4000:] + master.stderr[-4000:]
    assert master.returncode == 0, f"master failed:\n{output}\n" + "\n".join(
        p.read_text()[-2000:] for p in logs
    )
    assert [w.returncode for w in workers] == [0] * WORKERS, "\n".join(p.read_text()[-2000:] for p in logs)

    per_worker = json.loads((tmp_path / "dist_workers.json").read_text())["workers"]
    assert len(per_worker) == WORKERS, per_worker
    assert all(w["requests"] > 0 and w["failures"] == 0 for w in per_worker.values()), per_worker
    total = stats_rows(tmp_path / "dist_stats.csv")["Aggregated"]
    assert int(total["Failure Count"]) == 0, (tmp_path / "dist_failures.csv").read_text()
    assert int(total["Request Count"]) == sum(w["requests"] for w in per_worker.values()), (total, per_worker)
