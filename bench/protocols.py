"""Rows/s over gRPC and over REST (binary tensor extension) against onnxruntime in process (`make bench`,
or `python -m bench.protocols`).

One server on core 0 (`taskset -c 0`, like bench.bench); the clients (tritonclient.grpc, and
tritonclient.http with binary inputs and outputs, 4 threads each) on core 1; the in-process baseline
runs the same model's onnxruntime session with the server's settings (one intra-op thread) on core 0.
For 1, 64 and 8,192-row requests it prints rows/s of each and the ratio to in-process.

The machine is shared and its speed drifts by tens of percent within seconds, so for each batch size
the three are measured in 5 rounds of in-process, REST, in-process, gRPC, in-process (the in-process
runs half as long): each protocol's run is compared with the mean of the in-process runs just before
and after it, which cancels a steady drift, and each ratio is the median over rounds; rows/s are
medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
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
BAR = 0.5  # issue 15: at 8,192 rows the best protocol reaches half of in-process rows/s


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


def in_process(session: ort.InferenceSession, batch: np.ndarray, seconds: float) -> float:
    """Rows/s of the session on core 0 (the server's core, idle meanwhile); back on core 1 after."""
    os.sched_setaffinity(0, {0})
    try:
        return rate(lambda: lambda: session.run(None, {"input": batch}), len(batch), seconds, 1)
    finally:
        os.sched_setaffinity(0, {1})


def baseline_session(model_path: Path) -> ort.InferenceSession:
    """The model's session with the server's settings: one intra-op and one inter-op thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def server_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


Results = dict[tuple[str, int], list[float]]


def measure(repository: Path, seconds: float, rounds: int = 5) -> Results:
    """Per (what, rows), one figure per round: rows/s of "rest" and "grpc", the server's CPU seconds
    of "rest server cpu" and "grpc server cpu", and the in-process rows/s each is compared with, "rest
    baseline" and "grpc baseline"; "in process" holds every in-process run (three per round)."""
    import tritonclient.grpc as triton_grpc  # noqa: PLC0415  (dev dependencies)
    import tritonclient.http as triton_http  # noqa: PLC0415

    port, grpc_port = free_port(), free_port()
    argv = ["taskset", "-c", "0", sys.executable, "-m", "service", "--port", str(port)]
    argv += ["--grpc-port", str(grpc_port), "--model-repository", str(repository), "--log-level", "warning"]
    argv += ["--offload-min-rows", "100000"]  # as in process: no thread hop for these batches
    server = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    session = baseline_session(repository / MODEL / "1" / "model.onnx")
    results: Results = {}
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

            for _ in range(rounds):
                # Each protocol's run is bracketed by in-process runs, and compared with their mean: the
                # machine's drift over those seconds cancels to first order.
                base_before = in_process(session, batch, seconds / 2)
                results.setdefault(("in process", rows), []).append(base_before)
                for name, make in (("rest", rest_client), ("grpc", grpc_client)):
                    before = server_cpu_seconds(server.pid)
                    results.setdefault((name, rows), []).append(rate(make, rows, seconds, CLIENT_THREADS))
                    used = server_cpu_seconds(server.pid) - before
                    results.setdefault((f"{name} server cpu", rows), []).append(used)
                    base_after = in_process(session, batch, seconds / 2)
                    results[("in process", rows)].append(base_after)
                    results.setdefault((f"{name} baseline", rows), []).append((base_before + base_after) / 2)
                    base_before = base_after
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    return results


def share(results: Results, name: str, rows: int) -> float:
    """The median over rounds of `name`'s rows/s over the mean in-process rows/s just before and after."""
    pairs = zip(results[(name, rows)], results[(f"{name} baseline", rows)], strict=True)
    return statistics.median(ours / base for ours, base in pairs)


def report(results: Results, seconds: float) -> float:
    """Prints the table; returns the best protocol's share of in-process rows/s at the largest batch."""
    rounds = len(results[("rest", BATCHES[0])])
    header = (
        f"{'rows/request':>12}{'in process':>13}{'gRPC':>12}{'REST binary':>13}{'gRPC/in':>9}{'REST/in':>9}"
    )
    print(f"\n{header}{'server CPU gRPC':>17}{'server CPU REST':>17}")
    for rows in BATCHES:
        base, grpc, rest = (
            statistics.median(results[(name, rows)]) for name in ("in process", "grpc", "rest")
        )
        cpu = [
            statistics.median(results[(f"{name} server cpu", rows)]) / seconds for name in ("grpc", "rest")
        ]
        print(
            f"{rows:>12}{base:>13.0f}{grpc:>12.0f}{rest:>13.0f}{share(results, 'grpc', rows):>9.2f}"
            f"{share(results, 'rest', rows):>9.2f}{cpu[0]:>16.0%}{cpu[1]:>17.0%}"
        )
    largest = BATCHES[-1]
    best = max(share(results, "grpc", largest), share(results, "rest", largest))
    print(
        f"\nat {largest} rows the best protocol reaches {best:.0%} of onnxruntime in process (server on "
        f"core 0, {CLIENT_THREADS} client threads on core 1; rows/s: medians of {rounds} rounds; ratios: "
        "medians of the ratios to the in-process runs around each; server CPU: the share of its core it "
        "used); the bar: "
        f"{BAR:.0%}, {'met' if best >= BAR else 'NOT met'}"
    )
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per protocol, batch size and round")
    parser.add_argument(
        "--rounds", type=int, default=5, help="in-process, REST, in-process, gRPC, in-process: this often"
    )
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="recap-protocols-") as work:
        repository = args.model_repository.resolve()
        if not (repository / MODEL).is_dir():
            repository = stand_in_repository(Path(work) / "models")
        report(measure(repository, args.seconds, args.rounds), args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
