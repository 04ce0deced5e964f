"""Generation benchmark: pydoc-gpt tokens/s, time to first token, and how responsive the event loop stays.

Starts the real server twice: as shipped (each model step in a worker thread) and with the steps run
inline on the event loop (anyio.to_thread.run_sync patched to a direct call), and for each prints
 - one stream alone: time to first token (median of 10 short streams), tokens/s;
 - N concurrent streams: total tokens/s, and GET /v2/health/live latency (p50/p99/max) meanwhile.
Not a test: it prints figures (README "## Generation"). Usage:
    python -m bench.generate_bench [--model-repository models] [--streams 4] [--tokens 200]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

MODEL = "pydoc-gpt"
# Runs the server with every generation step inline on the event loop, for the comparison.
INLINE = (
    "import sys, types, service.api.generate as g\n"
    "async def run_sync(f, *args): return f(*args)\n"
    "g.anyio = types.SimpleNamespace(to_thread=types.SimpleNamespace(run_sync=run_sync))\n"
    "from service.__main__ import main\n"
    "main(sys.argv[1:])\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(repository: Path, inline: bool) -> Iterator[str]:
    port = free_port()
    args = ["--port", str(port), "--model-repository", str(repository), "--generate-max-streams", "64"]
    command = [sys.executable, "-c", INLINE, *args] if inline else [sys.executable, "-m", "service", *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("server did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def one_stream(client: httpx.Client, tokens: int, seed: int) -> tuple[float, int, float]:
    """(seconds to the first token event, tokens, total seconds) for one sampled stream."""
    body = {"text_input": "The ", "parameters": {"max_tokens": tokens, "temperature": 1.0, "seed": seed}}
    start = time.perf_counter()
    first, count = 0.0, 0
    with client.stream("POST", f"/v2/models/{MODEL}/generate_stream", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                if count == 0:
                    first = time.perf_counter() - start
                count += 1
    return first, count - 1, time.perf_counter() - start


def concurrent(url: str, streams: int, tokens: int) -> tuple[float, list[float]]:
    """Total tokens/s of `streams` parallel streams, and health-check latencies (s) while they run."""
    results: list[tuple[float, int, float]] = []
    clients = [httpx.Client(base_url=url, timeout=300) for _ in range(streams)]
    workers = [
        threading.Thread(target=lambda c=c, s=s: results.append(one_stream(c, tokens, s)))
        for s, c in enumerate(clients)
    ]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        while any(w.is_alive() for w in workers):
            t = time.perf_counter()
            client.get("/v2/health/live")
            latencies.append(time.perf_counter() - t)
            time.sleep(0.01)
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    for client in clients:
        client.close()
    return sum(r[1] for r in results) / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-repository", type=Path, default=Path("models"))
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()
    if not (args.model_repository / MODEL).is_dir():
        sys.exit(f"{args.model_repository / MODEL} is missing: train the zoo first (make models)")
    print(f"{MODEL}: {args.tokens} sampled tokens per stream, {os.cpu_count()} CPU cores")
    for inline in (False, True):
        mode = "steps inline on the event loop" if inline else "steps in worker threads (shipped)"
        with server(args.model_repository, inline) as url, httpx.Client(base_url=url, timeout=300) as client:
            one_stream(client, 20, 0)  # warm-up
            first = statistics.median(one_stream(client, 2, seed)[0] for seed in range(10))
            _, count, total = one_stream(client, args.tokens, 1)
            rate, latencies = concurrent(url, args.streams, args.tokens)
        ms = sorted(1000 * x for x in latencies)
        p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
        print(f"\n{mode}")
        print(f"  1 stream: first token {1000 * first:.1f} ms (median of 10), {count / total:.0f} tokens/s")
        print(
            f"  {args.streams} streams: {rate:.0f} tokens/s in all; /v2/health/live meanwhile: "
            f"p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms ({len(ms)} probes)"
        )


if __name__ == "__main__":
    main()
