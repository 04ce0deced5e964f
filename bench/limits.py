"""The measurements behind the admission defaults (README "Security": --max-concurrency,
--model-max-concurrency, --max-inflight-bytes). Not a test: it prints figures.

1. Memory per body in flight: a fresh server with the limits off takes N concurrent JSON bodies of
   100,000 x 30 FP32 rows (about 24 MB each) for breast-cancer-mlp; its peak RSS (VmHWM) per N.
2. Concurrency: N concurrent non-streamed generates (pydoc-gpt, 64 tokens): tokens/s in all and the
   median latency per N. Past the knee more requests in progress add only latency.

    python -m bench.limits [--model-repository models]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from bench.bench import ROOT, free_port

MODEL = "breast-cancer-mlp"
ROWS, FEATURES = 100_000, 30
OFF = {"RECAP_MAX_CONCURRENCY": "0", "RECAP_MODEL_MAX_CONCURRENCY": "0", "RECAP_MAX_INFLIGHT_BYTES": "0"}


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(repository: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, "-m", "service", "--port", str(port), "--model-repository", str(repository)]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(log.read_text()[-2000:])


def concurrently(count: int, call: Callable[[], None]) -> list[float]:
    """`call()` from `count` threads at once; each one's seconds."""
    times: list[float] = [0.0] * count
    barrier = threading.Barrier(count)

    def one(i: int) -> None:
        barrier.wait()
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times


def memory(repository: Path, work: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(ROWS, FEATURES)).round(4)  # ~8 characters a value
    body = json.dumps({"inputs": [{"name": "input", "shape": [ROWS, FEATURES], "datatype": "FP32",
                                   "data": rows.ravel().tolist()}]}).encode()  # fmt: skip
    print(f"1. memory: bodies of {len(body) / 1e6:.1f} MB ({ROWS} x {FEATURES} FP32 as JSON), limits off")
    env = OFF | {"RECAP_MAX_BODY_BYTES": str(64 * 1024 * 1024)}
    for count in (1, 2, 4):
        process, url = serve(repository, env, work / f"memory-{count}.log")
        try:
            base = vm_hwm_mib(process.pid)
            with httpx.Client(base_url=url, timeout=120) as client:
                statuses: list[int] = []

                def post(c: httpx.Client = client, seen: list[int] = statuses) -> None:
                    seen.append(c.post(f"/v2/models/{MODEL}/infer", content=body).status_code)

                concurrently(count, post)
            peak = vm_hwm_mib(process.pid)
        finally:
            process.kill()
            process.wait()
        print(f"   {count} concurrent: peak RSS {peak:.0f} MiB (idle {base:.0f}), statuses "
              f"{sorted(set(statuses))}: {(peak - base) / count:.0f} MiB per body in flight")  # fmt: skip


def concurrency(repository: Path, work: Path) -> None:
    print("2. concurrency: non-streamed pydoc-gpt generates of 64 tokens, limits off")
    process, url = serve(repository, OFF, work / "concurrency.log")
    body = {"text_input": "The ", "parameters": {"max_tokens": 64, "temperature": 0.8, "seed": 1}}
    try:
        with httpx.Client(base_url=url, timeout=300, limits=httpx.Limits(max_connections=128)) as client:
            for count in (1, 2, 4, 8, 16, 32, 64):
                start = time.perf_counter()
                tokens: list[int] = []

                def gen(c: httpx.Client = client, made: list[int] = tokens) -> None:
                    made.append(c.post("/v2/models/pydoc-gpt/generate", json=body).json()["tokens"])

                times = concurrently(count, gen)
                wall = time.perf_counter() - start
                print(f"   {count:>2} in progress: {sum(tokens) / wall:6.0f} tokens/s in all, "
                      f"median latency {statistics.median(times) * 1000:6.0f} ms")  # fmt: skip
    finally:
        process.kill()
        process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recap-limits-") as folder:
        memory(args.model_repository.resolve(), Path(folder))
        concurrency(args.model_repository.resolve(), Path(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
