"""Rows/s over gRPC and over REST (binary tensor extension) against onnxruntime in process (`make bench`,
or `python -m bench.protocols`).

One server on core 0 (`taskset -c 0`, like bench.bench); the clients (tritonclient.grpc, and
tritonclient.http with binary inputs and outputs, 4 threads each) on core 1; the in-process baseline
runs the same model's onnxruntime session with the server's settings (one intra-op thread) on core 0.
For 1, 64 and 8,192-row requests it prints rows/s of each and the ratio to in-process.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.bench import FEATURES, MODEL, ROOT, free_port, stand_in_repository, wait_for

BATCHES = (1, 64, 8192)
CLIENT_THREADS = 4


def rate(make_work: Callable[[], Callable[[], None]], rows: int, seconds: float, threads: int) -> float:
    """Rows per second of `threads` threads, each with its own `make_work()` (one request of `rows`
    rows: a client per thread, its request built once), for `seconds`."""
    done = [0] * threads
    warmed = threading.Barrier(threads + 1)
    go = threading.Event()
    deadline: list[float] = []

    def loop(index: int) -> None:
        work = make_work()  # in its thread: tritonclient.http's client must stay in one thread
        work()  # warm-up: the connection is open
        warmed.wait()
        go.wait()
        while time.monotonic() < deadline[0]:
            work()
            done[index] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    warmed.wait()
    started = time.monotonic()
    deadline.append(started + seconds)
    go.set()
    for worker in workers:
        worker.join()
    return sum(done) * rows / (time.monotonic() - started)


def in_process(model_path: Path, batch: np.ndarray, seconds: float) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    os.sched_setaffinity(0, {0})
    try:
        return rate(lambda: lambda: session.run(None, {"input": batch}), len(batch), seconds, 1)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def server_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def measure(repository: Path, seconds: float) -> dict[tuple[str, int], float]:
    import tritonclient.grpc as triton_grpc  # noqa: PLC0415  (dev dependencies)
    import tritonclient.http as triton_http  # noqa: PLC0415

    port, grpc_port = free_port(), free_port()
    argv = ["taskset", "-c", "0", sys.executable, "-m", "service", "--port", str(port)]
    argv += ["--grpc-port", str(grpc_port), "--model-repository", str(repository), "--log-level", "warning"]
    argv += ["--offload-min-rows", "100000"]  # as in process: no thread hop for these batches
    server = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[tuple[str, int], float] = {}
    try:
        wait_for(f"http://127.0.0.1:{port}/v2/models/{MODEL}/ready", server)
        os.sched_setaffinity(0, {1})
        for rows in BATCHES:
            batch = np.random.default_rng(rows).normal(size=(rows, FEATURES)).astype(np.float32)

            def rest_client(batch: np.ndarray = batch) -> Callable[[], None]:
                client = triton_http.InferenceServerClient(f"127.0.0.1:{port}")
                tensor = triton_http.InferInput("input", list(batch.shape), "FP32")
                tensor.set_data_from_numpy(batch, binary_data=True)
                output = triton_http.InferRequestedOutput("probabilities", binary_data=True)
                return lambda: client.infer(MODEL, [tensor], outputs=[output]).as_numpy("probabilities")

            def grpc_client(batch: np.ndarray = batch) -> Callable[[], None]:
                client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
                tensor = triton_grpc.InferInput("input", list(batch.shape), "FP32")
                tensor.set_data_from_numpy(batch)
                output = triton_grpc.InferRequestedOutput("probabilities")
                return lambda: client.infer(MODEL, [tensor], outputs=[output]).as_numpy("probabilities")

            for name, make in (("rest", rest_client), ("grpc", grpc_client)):
                before = server_cpu_seconds(server.pid)
                results[(name, rows)] = rate(make, rows, seconds, CLIENT_THREADS)
                results[(f"{name} server cpu", rows)] = server_cpu_seconds(server.pid) - before
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        for rows in BATCHES:
            batch = np.random.default_rng(rows).normal(size=(rows, FEATURES)).astype(np.float32)
            results[("in process", rows)] = in_process(
                repository / MODEL / "1" / "model.onnx", batch, seconds
            )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    return results


def report(results: dict[tuple[str, int], float], seconds: float) -> float:
    """Prints the table; returns the best protocol's share of in-process rows/s at the largest batch."""
    header = (
        f"{'rows/request':>12}{'in process':>13}{'gRPC':>12}{'REST binary':>13}{'gRPC/in':>9}{'REST/in':>9}"
    )
    print(f"\n{header}{'server CPU gRPC':>17}{'server CPU REST':>17}")
    for rows in BATCHES:
        base = results[("in process", rows)]
        grpc, rest = results[("grpc", rows)], results[("rest", rows)]
        cpu = [results[(f"{name} server cpu", rows)] / seconds for name in ("grpc", "rest")]
        print(
            f"{rows:>12}{base:>13.0f}{grpc:>12.0f}{rest:>13.0f}{grpc / base:>9.2f}{rest / base:>9.2f}"
            f"{cpu[0]:>16.0%}{cpu[1]:>17.0%}"
        )
    largest = BATCHES[-1]
    best = max(results[("grpc", largest)], results[("rest", largest)]) / results[("in process", largest)]
    print(
        f"\nat {largest} rows the best protocol reaches {best:.0%} of onnxruntime in process "
        f"(server on core 0, {CLIENT_THREADS} client threads on core 1; rows/s; "
        "server CPU: the share of its core it used)"
    )
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per protocol and batch size")
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="recap-protocols-") as work:
        repository = args.model_repository.resolve()
        if not (repository / MODEL).is_dir():
            repository = stand_in_repository(Path(work) / "models")
        report(measure(repository, args.seconds), args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
