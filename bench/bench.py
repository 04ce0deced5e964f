"""Throughput benchmark: recap-serve V2 JSON infer (one breast-cancer row) vs a bare FastAPI endpoint.

The server under test is pinned to core 0 (`taskset -c 0`), wrk to core 1, 64 connections. Prints
req/s, errors, p50/p99, the ratio to the bare endpoint measured in the same run, the server's CPU time
per request, and its resident memory with the whole repository loaded. Not a test: it prints figures
(README "## Performance").

    python -m bench.bench [--duration 10] [--model-repository models]
    python -m bench.bench --ab [COMMIT]      # this checkout vs COMMIT (default HEAD^), 3 runs each
    make bench-ab BASE=<commit>              # the same through make
    python -m bench.bench --keys             # the same server without and with an API key, 3 runs each
    python -m bench.bench --workers          # --workers 1 vs 2, nothing pinned (bench/workers.py)

`--ab` is the project's no-regression rule: the two servers (the old code extracted with `git archive`,
both on the same model repository and the same venv) run side by side, both on core 0, each loaded by
its own wrk on core 1 at the same time, in `--rounds` windows; each window gives each server's CPU
us/request and their ratio, and the verdict takes the median of those ratios. "No regression" means it
is at most 1.05. Both servers see the same machine in every window: this machine's speed drifts by tens
of percent within seconds, which made two runs taken one after the other disagree by more than the
changes they compared (an A/A of the same code measured 0.84-1.19 per pair of runs, side by side
0.98-1.01 per window). `--keys` measures the same way. Check `vmstat 1 5` before quoting a figure.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx  # the dev install has it (the benchmark is a dev tool)
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
MODEL = "breast-cancer-mlp"
FEATURES = 30
NO_REGRESSION = 1.05  # new CPU us/request at most 5 % above the old one (the median of the windows)
KEYED_RPS_FLOOR = 0.95  # with a key, at least 0.95x the req/s of the same server without keys
# The same uvicorn settings as `python -m service` uses.
UVICORN_FLAGS = ["--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
UVICORN_FLAGS += ["--no-server-header", "--no-date-header"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"the server exited with {process.returncode}:\n{stderr[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


def stand_in_repository(folder: Path) -> Path:
    """A breast-cancer-shaped MLP (30 -> 64 -> 32 -> 1, sigmoid) when the zoo model is absent."""
    rng = np.random.default_rng(0)
    sizes = [FEATURES, 64, 32, 1]
    nodes, weights, last = [], [], "input"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        weights += [
            numpy_helper.from_array(rng.normal(size=(n_in, n_out)).astype(np.float32) / 5, f"W{i}"),
            numpy_helper.from_array(np.zeros(n_out, np.float32), f"B{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [last, f"W{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"B{i}"], [f"a{i}" if i < 2 else "logits"]),
        ]
        if i < 2:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"h{i}"]))
            last = f"h{i}"
    nodes.append(helper.make_node("Sigmoid", ["logits"], ["probabilities"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", FEATURES])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 1]),
        ],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    target = folder / MODEL / "1"
    target.mkdir(parents=True)
    onnx.save(model, target / "model.onnx")
    (target / "model.json").write_text(
        json.dumps({"name": MODEL, "task": "binary_classification", "labels": ["malignant", "benign"]})
    )
    return folder


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_wrk(
    url: str, body_file: Path, duration: int, connections: int, authorization: str = "", *, cores: str = "1"
) -> dict[str, float]:
    """wrk on `cores` ("": wherever the scheduler puts it, sharing the server's cores)."""
    command = ["taskset", "-c", cores] if cores else []
    command += ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    command += ["-s", str(ROOT / "bench" / "infer.lua"), url]
    env = {**os.environ, "BODY_FILE": str(body_file), "AUTHORIZATION": authorization}
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {
        "rps": rate,
        "errors": errors,
        "p50_ms": float(p50.group(1)) * scale[p50.group(2)] if p50 else float("nan"),
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
    }


@dataclass
class Running:
    """A started server."""

    process: subprocess.Popen[bytes]
    base: str  # http://127.0.0.1:<port>

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


@dataclass
class Target:
    """One server to measure: how to start it, where it answers, and what it measured."""

    label: str
    argv: list[str]  # {port} is replaced by a free port
    ready_path: str
    infer_path: str
    cwd: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)
    authorization: str = ""  # the header wrk sends, for a keyed server
    runs: list[dict[str, float]] = field(default_factory=list)

    def start(self) -> Running:
        """Start the server on core 0 and wait until it is ready."""
        port = free_port()
        argv = ["taskset", "-c", "0", *(part.replace("{port}", str(port)) for part in self.argv)]
        process = subprocess.Popen(
            argv,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        running = Running(process, f"http://127.0.0.1:{port}")
        try:
            wait_for(running.base + self.ready_path, process)
        except BaseException:
            running.stop()
            raise
        return running

    def load(self, running: Running, body_file: Path, duration: int, connections: int) -> dict[str, float]:
        """wrk on core 1 against the running server; its figures and the server's CPU us/request."""
        before, started = cpu_seconds(running.process.pid), time.monotonic()
        result = run_wrk(running.base + self.infer_path, body_file, duration, connections, self.authorization)
        spent = cpu_seconds(running.process.pid) - before
        result["started"], result["ended"] = started, time.monotonic()
        result["cpu_us"] = spent / max(result["rps"] * duration, 1) * 1e6
        return result

    def measure(self, body_file: Path, duration: int, connections: int) -> dict[str, float]:
        """Start the server alone on core 0, warm it up, run wrk on core 1, stop it; one run's figures."""
        running = self.start()
        try:
            resident = rss_mib(running.process.pid)
            self.load(running, body_file, 2, connections)  # warm-up
            result = self.load(running, body_file, duration, connections)
        finally:
            running.stop()
        result["rss_mib"] = resident  # before any request: the repository loaded
        self.runs.append(result)
        return result

    def median(self, key: str) -> float:
        return statistics.median(run[key] for run in self.runs)


def recap_target(label: str, repository: Path, code: Path = ROOT) -> Target:
    """`python -m service` from the code in `code` (its own `service` package comes first on the path)."""
    return Target(
        label,
        [sys.executable, "-m", "service", "--port", "{port}", "--model-repository", str(repository)],
        ready_path=f"/v2/models/{MODEL}/ready",
        infer_path=f"/v2/models/{MODEL}/infer",
        cwd=code,
        # No gRPC listener: two servers side by side would both want its default port (an env var, which
        # a commit from before --grpc-port ignores).
        env={"RECAP_LOG_LEVEL": "warning", "RECAP_GRPC_PORT": "0", "PYTHONPATH": str(code)},
    )


def bare_target() -> Target:
    return Target(
        "bare FastAPI constant",
        [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", "{port}", *UVICORN_FLAGS],
        ready_path="/docs",
        infer_path="/v2/models/bare/infer",
        env={"PYTHONPATH": str(ROOT)},
    )


def extract_commit(commit: str, into: Path) -> str:
    """The tree of `commit` (without models/) under `into`; returns its short hash and subject."""
    described = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", commit],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "service", "bench"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return described


def print_table(targets: list[Target], reference: Target) -> None:
    print(
        f"\n{'endpoint':<34}{'runs':>5}{'req/s':>9}{'errors':>7}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'ratio':>7}{'CPU us/req':>11}"
    )
    for target in targets:
        errors = sum(run["errors"] for run in target.runs)
        print(
            f"{target.label:<34}{len(target.runs):>5}{target.median('rps'):>9.0f}{errors:>7.0f}"
            f"{target.median('p50_ms'):>8.2f}{target.median('p99_ms'):>8.2f}"
            f"{target.median('rps') / reference.median('rps'):>7.2f}{target.median('cpu_us'):>11.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument(
        "--ab", nargs="?", const="HEAD^", metavar="COMMIT", help="A/B: this checkout vs COMMIT (HEAD^)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="A/B, keys: windows side by side; workers: alternating runs"
    )
    parser.add_argument("--keys", action="store_true", help="the server without and with an API key")
    parser.add_argument(
        "--workers", action="store_true", help="1 vs 2 worker processes sharing the cores with wrk"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("wrk or taskset is missing: `make system-deps` (apt-get install -y wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="recap-bench-"))
    try:
        repository = args.model_repository.resolve()
        if not (repository / MODEL).is_dir():
            print(f"{MODEL} is not in {repository}: benchmarking a stand-in MLP of the same shape")
            repository = stand_in_repository(work / "models")
        row = np.random.default_rng(0).normal(size=FEATURES).round(4).tolist()
        body = {"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32", "data": row}]}
        body_file = work / "body.json"
        body_file.write_text(json.dumps(body))
        measure = (body_file, args.duration, args.connections)
        if args.ab:
            return ab_test(args.ab, repository, work, measure, args.rounds)
        if args.keys:
            return keys_test(repository, work, measure, args.rounds)
        if args.workers:
            from bench.workers import workers_test  # noqa: PLC0415  (imports this module)

            return workers_test(repository, work, measure, args.rounds)
        bare, served = bare_target(), recap_target("recap-serve V2 infer", repository)
        bare.measure(*measure)
        served.measure(*measure)
        print_table([bare, served], bare)
        bare_cpu, served_cpu = bare.median("cpu_us"), served.median("cpu_us")
        print(
            f"\nserver CPU time per request: {1e6 / served_cpu:.0f} req/s per fully used core "
            f"for recap-serve, {1e6 / bare_cpu:.0f} for the bare endpoint (ratio {bare_cpu / served_cpu:.2f})"
        )
        versions = sum(1 for _ in repository.glob("*/*/model.onnx"))
        print(f"\nserver resident memory with {versions} model versions: {served.median('rss_mib'):.0f} MiB")
        print(f"(server on core 0, wrk -t1 -c{args.connections} -d{args.duration}s on core 1)")
        from bench.protocols import measure as measure_protocols  # noqa: PLC0415  (imports this module)
        from bench.protocols import report as report_protocols  # noqa: PLC0415

        print("\nrows/s over gRPC and REST (binary tensors) vs onnxruntime in process (bench/protocols.py):")
        report_protocols(measure_protocols(repository, 2.0), 2.0)
        return 0 if sum(run["errors"] for run in served.runs) == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def side_by_side(targets: tuple[Target, Target], measure: tuple[Path, int, int], rounds: int) -> None:
    """Both servers at once on core 0, each loaded by its own wrk on core 1 in the same windows (one
    warm-up window, then `rounds`): each window's figures join each target's runs, so run i of one and
    run i of the other saw the same machine."""
    body_file, duration, connections = measure
    running: list[Running] = []
    try:
        for target in targets:
            running.append(target.start())
        window(targets, running, body_file, 2, connections)  # warm-up
        for round_number in range(1, rounds + 1):
            results = window(targets, running, body_file, duration, connections)
            for target, result in zip(targets, results, strict=True):
                target.runs.append(result)
            first, second = results
            print(
                f"window {round_number}: "
                + "  ".join(
                    f"{target.label} {result['rps']:.0f} req/s {result['cpu_us']:.1f} CPU us/req"
                    for target, result in zip(targets, results, strict=True)
                )
                + f"  ratio {second['cpu_us'] / first['cpu_us']:.3f}",
                flush=True,
            )
    finally:
        for server in running:
            server.stop()


def window(
    targets: tuple[Target, Target], running: list[Running], body_file: Path, duration: int, connections: int
) -> list[dict[str, float]]:
    """Both targets under their own wrk for the same `duration` seconds; their figures, in order."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        loads = [
            pool.submit(target.load, server, body_file, duration, connections)
            for target, server in zip(targets, running, strict=True)
        ]
        return [load.result() for load in loads]


def paired_ratios(first: Target, second: Target, key: str) -> list[float]:
    """`second`'s figure over `first`'s in each window they shared."""
    return [b[key] / a[key] for a, b in zip(first.runs, second.runs, strict=True)]


def keys_test(repository: Path, work: Path, measure: tuple[Path, int, int], rounds: int) -> int:
    """The price of the key check: one server without keys, one with a keys file, wrk sending the key."""
    key = "bench-key-" + os.urandom(16).hex()
    keys_file = work / "api-keys"
    keys_file.write_text(f"inference,admin,metrics {key}\n")
    open_server = recap_target("recap-serve, no keys", repository)
    keyed = recap_target("recap-serve, API key", repository)
    keyed.env["RECAP_API_KEYS_FILE"] = str(keys_file)
    keyed.authorization = f"Bearer {key}"
    keyed.ready_path = "/v2/health/ready"
    side_by_side((open_server, keyed), measure, rounds)
    print_table([open_server, keyed], open_server)
    rps_ratio = statistics.median(paired_ratios(open_server, keyed, "rps"))
    cpu_ratio = statistics.median(paired_ratios(open_server, keyed, "cpu_us"))
    verdict = "within" if rps_ratio >= KEYED_RPS_FLOOR else "BELOW"
    print(
        f"\nwith a key: req/s {rps_ratio:.3f} x the same server without keys ({verdict} the "
        f"{KEYED_RPS_FLOOR:.2f} floor); CPU us/request {cpu_ratio:.3f} x (medians of the windows' ratios)"
    )
    errors = sum(run["errors"] for run in [*open_server.runs, *keyed.runs])
    return 0 if rps_ratio >= KEYED_RPS_FLOOR and errors == 0 else 1


def ab_test(commit: str, repository: Path, work: Path, measure: tuple[Path, int, int], rounds: int) -> int:
    described = extract_commit(commit, work / "old")
    old = recap_target(f"old {described[:26]}", repository, code=work / "old")
    imported = subprocess.run(
        [sys.executable, "-c", "import service; print(service.__file__)"],
        cwd=old.cwd, env={**os.environ, **old.env}, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not Path(imported).is_relative_to(work / "old"):
        raise RuntimeError(f"the old server would import {imported}, not the extracted commit")
    new = recap_target("new (this checkout)", repository)
    side_by_side((old, new), measure, rounds)
    print_table([old, new], old)
    ratios = paired_ratios(old, new, "cpu_us")
    ratio, ok = regression_verdict(ratios)
    verdict = "no regression" if ok else "REGRESSION"
    print(
        f"\nserver CPU us/request, side by side: old {old.median('cpu_us'):.1f} ({described}), "
        f"new {new.median('cpu_us'):.1f} (medians); new/old per window "
        f"{', '.join(f'{r:.3f}' for r in ratios)}, median {ratio:.3f} -> {verdict} "
        f"(the rule: at most {NO_REGRESSION:.2f})"
    )
    errors = sum(run["errors"] for run in [*old.runs, *new.runs])
    return 0 if ok and errors == 0 else 1


def regression_verdict(new_over_old: list[float]) -> tuple[float, bool]:
    """The median of the windows' new/old CPU us/request, and whether it is within the rule (at most
    5 % more)."""
    ratio = statistics.median(new_over_old)
    return ratio, ratio <= NO_REGRESSION


if __name__ == "__main__":
    sys.exit(main())
