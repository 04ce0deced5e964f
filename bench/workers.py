"""`python -m bench.bench --workers` (`make bench-workers`): what `--workers 2` buys on this machine.

Three servers on the same repository, nothing pinned, wrk (one thread, 64 connections) sharing the cores
with them, alternating `--rounds` times: one process, two workers on one shared socket, two workers with
SO_REUSEPORT. Printed: req/s and its ratio to one process, server CPU us/request (supervisor and workers
summed), how evenly the two workers shared the requests, RSS and PSS per worker. Then the figures of a
capacity plan: req/s per fully used core at one row per request and rows/s per core at 1024-row batches
(one worker on core 0, wrk on core 1).
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.bench import FEATURES, MODEL, ROOT, free_port, run_wrk, wait_for

BIG_BATCH = 1024


def tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    found = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return found
    for child in children:
        found += tree(int(child))
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / 100  # SC_CLK_TCK is 100 on Linux
    return total


def memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process: PSS shares each shared page among the processes mapping it."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0]) / 1024
    return values["Rss"], values["Pss"]


def workers_of(pid: int) -> list[int]:
    pids = []
    for child in tree(pid)[1:]:
        try:
            if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes():
                pids.append(child)
        except FileNotFoundError:
            continue
    return pids


@dataclass
class Server:
    label: str
    workers: int
    reuse_port: bool = False
    runs: list[dict[str, float]] = field(default_factory=list)

    def measure(self, repository: Path, body_file: Path, duration: int, connections: int) -> dict[str, float]:
        port = free_port()
        argv = [sys.executable, "-m", "service", "--port", str(port), "--model-repository", str(repository)]
        argv += ["--workers", str(self.workers), "--log-level", "warning"]
        if self.reuse_port:
            argv.append("--reuse-port")
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(f"{base}/v2/models/{MODEL}/ready", process)
            deadline = time.monotonic() + 60
            while self.workers > 1 and len(workers_of(process.pid)) < self.workers:
                assert time.monotonic() < deadline, "the workers did not start"
                time.sleep(0.1)
            url = f"{base}/v2/models/{MODEL}/infer"
            run_wrk(url, body_file, 3, connections, cores="")  # warm-up: every worker loaded and serving
            pids = tree(process.pid)
            workers = workers_of(process.pid) if self.workers > 1 else [process.pid]
            per_worker_before = [cpu_seconds([p]) for p in workers]
            before = cpu_seconds(pids)
            result = run_wrk(url, body_file, duration, connections, cores="")
            spent = cpu_seconds(pids) - before
            shares = [cpu_seconds([p]) - b for p, b in zip(workers, per_worker_before, strict=True)]
            memory = [memory_mib(p) for p in workers]
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        result["cpu_us"] = spent / max(result["rps"] * duration, 1) * 1e6
        result["balance"] = min(shares) / max(*shares, 1e-9)  # 1.0: both workers equally busy
        result["rss_mib"] = statistics.mean(m[0] for m in memory)
        result["pss_mib"] = statistics.mean(m[1] for m in memory)
        self.runs.append(result)
        return result

    def median(self, key: str) -> float:
        return statistics.median(run[key] for run in self.runs)


def big_batch_rows_per_core(repository: Path, work: Path, duration: int) -> tuple[float, float]:
    """One worker on core 0, wrk on core 1, 1024-row bodies: (rows/s, rows per CPU second)."""
    rows = np.random.default_rng(1).normal(size=(BIG_BATCH, FEATURES)).round(4)
    body = {
        "inputs": [
            {"name": "input", "shape": [BIG_BATCH, FEATURES], "datatype": "FP32", "data": rows.tolist()}
        ]
    }
    body_file = work / "batch.json"
    body_file.write_text(json.dumps(body))
    port = free_port()
    argv = ["taskset", "-c", "0", sys.executable, "-m", "service", "--port", str(port)]
    argv += ["--model-repository", str(repository), "--log-level", "warning"]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/v2/models/{MODEL}/ready", process)
        url = f"{base}/v2/models/{MODEL}/infer"
        run_wrk(url, body_file, 2, 4)
        before = cpu_seconds([process.pid])
        result = run_wrk(url, body_file, duration, 4)
        spent = cpu_seconds([process.pid]) - before
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    rows_per_s = result["rps"] * BIG_BATCH
    return rows_per_s, rows_per_s * duration / max(spent, 1e-9)


def workers_test(repository: Path, work: Path, measure: tuple[Path, int, int], rounds: int) -> int:
    body_file, duration, connections = measure
    servers = [
        Server("1 process", 1),
        Server("2 workers, shared socket", 2),
        Server("2 workers, SO_REUSEPORT", 2, True),
    ]
    for round_number in range(1, rounds + 1):
        for server in servers if round_number % 2 else servers[::-1]:
            result = server.measure(repository, body_file, duration, connections)
            print(
                f"round {round_number} {server.label:<26} {result['rps']:>7.0f} req/s "
                f"{result['cpu_us']:>6.1f} CPU us/req  balance {result['balance']:.2f}  "
                f"errors {result['errors']:.0f}",
                flush=True,
            )
    one = servers[0]
    print(
        f"\n{'server':<27}{'req/s':>8}{'ratio':>7}{'CPU us/req':>11}{'balance':>8}"
        f"{'RSS MiB':>9}{'PSS MiB':>9}"
    )
    for server in servers:
        print(
            f"{server.label:<27}{server.median('rps'):>8.0f}{server.median('rps') / one.median('rps'):>7.2f}"
            f"{server.median('cpu_us'):>11.1f}{server.median('balance'):>8.2f}"
            f"{server.median('rss_mib'):>9.0f}{server.median('pss_mib'):>9.0f}"
        )
    rows_per_s, rows_per_core = big_batch_rows_per_core(repository, work, duration)
    per_core = 1e6 / one.median("cpu_us")
    print(
        f"\ncapacity plan: {per_core:.0f} req/s per fully used core at one row per request (1 process, "
        f"its CPU us/request); {rows_per_core:.0f} rows/s per core at {BIG_BATCH}-row batches "
        f"({rows_per_s:.0f} rows/s measured); RSS {servers[1].median('rss_mib'):.0f} MiB, "
        f"PSS {servers[1].median('pss_mib'):.0f} MiB per worker"
    )
    print(
        "(nothing pinned: wrk -t1 shares the 2 cores with the servers; balance: the less busy "
        "worker's CPU / the busier's)"
    )
    errors = sum(run["errors"] for server in servers for run in server.runs)
    return 0 if errors == 0 else 1
