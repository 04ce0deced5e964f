"""Throughput benchmark: recap-serve V2 JSON infer (one breast-cancer row) vs a bare FastAPI endpoint.

The server under test is pinned to core 0 (`taskset -c 0`), wrk to core 1, 64 connections. Prints
req/s, errors and the ratio to the bare endpoint measured in the same run, then the resident memory
of the server with the whole repository loaded. Not a test: it prints figures (see README
"## Performance"). Usage: python -m bench.bench [--duration 10] [--model-repository models]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx  # the dev install has it (the benchmark is a dev tool)
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
MODEL = "breast-cancer-mlp"
FEATURES = 30
# The same uvicorn settings as `python -m service` uses.
UVICORN_FLAGS = ["--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
UVICORN_FLAGS += ["--no-server-header", "--no-date-header"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
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


def measure(url: str, body_file: Path, duration: int, connections: int, pid: int) -> dict[str, float]:
    """wrk figures plus the server's CPU time per request (less sensitive to other load than req/s)."""
    before = cpu_seconds(pid)
    result = run_wrk(url, body_file, duration, connections)
    spent = cpu_seconds(pid) - before
    result["cpu_us"] = spent / max(result["rps"] * duration, 1) * 1e6
    return result


def run_wrk(url: str, body_file: Path, duration: int, connections: int) -> dict[str, float]:
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    command += ["-s", str(ROOT / "bench" / "infer.lua"), url]
    env = {**os.environ, "BODY_FILE": str(body_file)}
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


def start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", "0", *command],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: `make system-deps` (or apt-get install -y wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="recap-bench-"))
    repository = args.model_repository.resolve()
    if not (repository / MODEL).is_dir():
        print(f"{MODEL} is not in {repository}: benchmarking a stand-in MLP of the same shape")
        repository = stand_in_repository(work / "models")
    row = np.random.default_rng(0).normal(size=FEATURES).round(4).tolist()
    body = {"inputs": [{"name": "input", "shape": [1, FEATURES], "datatype": "FP32", "data": row}]}
    body_file = work / "body.json"
    body_file.write_text(json.dumps(body))
    python = sys.executable
    results: dict[str, dict[str, float]] = {}
    try:
        port = free_port()
        bare = start([python, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port), *UVICORN_FLAGS])
        try:
            wait_for(f"http://127.0.0.1:{port}/docs")
            run_wrk(f"http://127.0.0.1:{port}/v2/models/bare/infer", body_file, 2, args.connections)
            results["bare FastAPI constant"] = measure(
                f"http://127.0.0.1:{port}/v2/models/bare/infer",
                body_file,
                args.duration,
                args.connections,
                bare.pid,
            )
        finally:
            stop(bare)
        port = free_port()
        server = start(
            [python, "-m", "service", "--port", str(port), "--model-repository", str(repository)],
            env={"RECAP_LOG_LEVEL": "warning"},
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/v2/models/{MODEL}/ready")
            resident = rss_mib(server.pid)
            url = f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer"
            run_wrk(url, body_file, 2, args.connections)
            results["recap-serve V2 infer"] = measure(
                url, body_file, args.duration, args.connections, server.pid
            )
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/repository/index", data=b"") as response:
                index = json.load(response)
        finally:
            stop(server)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bare_rps = results["bare FastAPI constant"]["rps"]
    bare_cpu = results["bare FastAPI constant"]["cpu_us"]
    print(
        f"\n{'endpoint':<26}{'req/s':>9}{'errors':>7}{'p50 ms':>8}{'p99 ms':>8}{'ratio':>7}{'CPU us/req':>11}"
    )
    for name, result in results.items():
        print(
            f"{name:<26}{result['rps']:>9.0f}{result['errors']:>7.0f}{result['p50_ms']:>8.2f}"
            f"{result['p99_ms']:>8.2f}{result['rps'] / bare_rps:>7.2f}{result['cpu_us']:>11.1f}"
        )
    served_cpu = results["recap-serve V2 infer"]["cpu_us"]
    print(
        f"\nserver CPU time per request: {1e6 / served_cpu:.0f} req/s per fully used core "
        f"for recap-serve, {1e6 / bare_cpu:.0f} for the bare endpoint (ratio {bare_cpu / served_cpu:.2f})"
    )
    ready = sum(1 for m in index if m["state"] == "READY")
    print(f"\nserver resident memory with {ready}/{len(index)} model versions loaded: {resident:.0f} MiB")
    print(f"(server on core 0, wrk -t1 -c{args.connections} -d{args.duration}s on core 1)")
    served = results["recap-serve V2 infer"]
    return 0 if served["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
