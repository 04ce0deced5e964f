"""`make load` against a real server: every scenario for about 20 s, no failed request or check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from load.catalog import PAYLOAD_DIR, load_models
from tests.helpers.load_plan import REQUEST_NAMES, plan_for, stats_rows
from tests.helpers.servers import MODELS, REPO, RunningServer, locust_command, start_server

REPORTS = REPO / "reports" / "load"  # the Makefile's LOAD_REPORTS default: the known folder
VENV = Path(sys.executable).parent.parent


@pytest.mark.e2e
@pytest.mark.slow
def test_every_scenario_for_20_seconds(server: RunningServer) -> None:
    plan = plan_for(server.url)
    for reason in plan.reasons:
        print(f"load test scope: {reason}")  # the CI log says what was left out and why
    started = time.time()
    argv = [
        "make",
        "--no-print-directory",
        f"VENV={VENV}",
        "-o",
        f"{VENV}/.load-installed",  # locust is already in the test venv: no pip run here
        "load",
        f"LOAD_HOST={server.url}",
        "LOAD_USERS=8",
        "LOAD_SPAWN_RATE=8",
        "LOAD_TIME=20s",
        f"LOAD_EXCLUDE_TAGS={' '.join(plan.excluded_tags)}",
    ]
    env = {**os.environ, "RECAP_LOAD_MODELS": ",".join(plan.models)}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout[-6000:] + done.stderr[-6000:]
    assert done.returncode == 0, (
        f"locust failed (rc {done.returncode}):\n{output}\nserver:\n{server.log_tail()}"
    )

    for name in [
        "locust_stats.csv",
        "locust_failures.csv",
        "locust_stats_history.csv",
        "locust.html",
        "locust.json",
    ]:
        path = REPORTS / name
        assert path.is_file() and path.stat().st_mtime >= started, f"{path} was not written by this run"
    assert "locust" in (REPORTS / "locust.html").read_text().lower()

    rows = stats_rows(REPORTS / "locust_stats.csv")
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 100, total
    assert int(total["Failure Count"]) == 0, (REPORTS / "locust_failures.csv").read_text()
    for tag in plan.tags:
        hits = sum(int(r["Request Count"]) for n, r in rows.items() if n.startswith(REQUEST_NAMES[tag]))
        assert hits > 0, f"scenario {tag!r} sent no request"
    inferred = {n.removeprefix(REQUEST_NAMES["infer"]) for n in rows if n.startswith(REQUEST_NAMES["infer"])}
    tabular = set(plan.models) & {m.name for m in load_models()}
    assert tabular and tabular <= inferred, f"models never inferred: {sorted(tabular - inferred)}"


@pytest.mark.e2e
def test_a_wrong_answer_fails_the_run(server: RunningServer, tmp_path: Path) -> None:
    """The checks are wired: with labels that do not match the model, 200 answers count as failures."""
    payloads = tmp_path / "payloads"
    shutil.copytree(PAYLOAD_DIR, payloads)
    iris = json.loads((payloads / "iris-mlp.json").read_text())
    iris["labels"] = iris["labels"][::-1]
    (payloads / "iris-mlp.json").write_text(json.dumps(iris))
    argv = locust_command(
        "-f", str(REPO / "load" / "locustfile.py"), "--headless", "--host", server.url,
        "-u", "2", "-r", "2", "-t", "4s", "--tags", "classification", "--csv", str(tmp_path / "run"),
        "--only-summary",
    )  # fmt: skip
    env = {**os.environ, "RECAP_LOAD_MODELS": "iris-mlp", "RECAP_LOAD_PAYLOADS": str(payloads)}
    done = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    total = stats_rows(tmp_path / "run_stats.csv")["Aggregated"]
    assert int(total["Request Count"]) > 0
    assert total["Failure Count"] == total["Request Count"], total
    failures = (tmp_path / "run_failures.csv").read_text()
    assert "CheckError" in failures and "expected" in failures, failures


@pytest.mark.e2e
def test_the_locust_users_send_the_api_key(tmp_path: Path) -> None:
    """Against a server with keys: the users' RECAP_API_KEY gets every answer; a wrong key gets 401s."""
    key = "locust-key-0123456789abcdefghijkl"
    keys = tmp_path / "api-keys"
    keys.write_text(f"inference {key}\n")
    server = start_server(MODELS, tmp_path / "server.log", env={"RECAP_API_KEYS_FILE": str(keys)})
    try:
        for sent, failing in ((key, False), ("wrong-key-0123456789abcdefghij", True)):
            argv = locust_command(
                "-f", str(REPO / "load" / "locustfile.py"), "--headless", "--host", server.url,
                "-u", "2", "-r", "2", "-t", "3s", "--tags", "v2", "v1", "--csv", str(tmp_path / "run"),
                "--only-summary",
            )  # fmt: skip
            env = {**os.environ, "RECAP_API_KEY": sent, "RECAP_LOAD_MODELS": "iris-mlp"}
            done = subprocess.run(
                argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
            )
            total = stats_rows(tmp_path / "run_stats.csv")["Aggregated"]
            assert int(total["Request Count"]) > 0
            if failing:
                assert done.returncode == 1 and total["Failure Count"] == total["Request Count"]
                assert "HTTP 401" in (tmp_path / "run_failures.csv").read_text()
            else:
                assert done.returncode == 0 and total["Failure Count"] == "0", done.stderr[-2000:]
    finally:
        server.stop()
