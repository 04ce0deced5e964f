"""Generation benchmark (`make bench-generate`): pydoc-gpt greedy tokens/s through the server's decode
loop (KV cache, continuous batching) against an in-process full-recompute onnxruntime loop, in one run.

The server runs on core 0 (`taskset -c 0`, the in-process loop's one core too, with the server's one
intra-op thread); the HTTP clients run on core 1. It prints:
 - in process: the full-recompute loop over model.onnx (the context re-run at every step), tokens/s
   (median of 5 runs);
 - the server as shipped, and the same server on a copy of the repository whose model.json lists no
   KV-cache graphs (its full-recompute loop, the server before the decode loop), each with
   - one stream: time to first token (median of 10), tokens/s of a 120-token generate_stream (median
     of 5);
   - N concurrent streams: tokens/s in all (median of 3 rounds after a warm-up round), time to first
     token, and /v2/health/live latency meanwhile;
 - the ratios the generation issue asks for: one stream / in process (>= 3), N streams / one (>= 2).
Not a test: it prints figures. Usage:
    python -m bench.generate_bench [--model-repository models] [--streams 8] [--tokens 120]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from bench.bench import free_port

MODEL = "pydoc-gpt"
PROMPT = "The "
ROUNDS = 3  # the N-stream figure is the median of this many rounds (after one warm-up round)
REPEATS = 5  # each one-stream figure is the median of this many runs: one run takes a fraction of a second


@dataclass(frozen=True)
class StreamRun:
    first_token_s: float
    tokens: int
    seconds: float
    text: str


@contextlib.contextmanager
def server(repository: Path, cores: str) -> Iterator[str]:
    port = free_port()
    command = ["taskset", "-c", cores, sys.executable, "-m", "service", "--port", str(port)]
    command += ["--model-repository", str(repository), "--generate-max-streams", "64", "--grpc-port", "0"]
    command += ["--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
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
        process.wait(timeout=30)


def without_cache(repository: Path, work: Path) -> Path:
    """A copy of the model whose model.json names no KV-cache graphs: the full-recompute loop."""
    folder = work / MODEL / "1"
    folder.mkdir(parents=True)
    shutil.copy(repository / MODEL / "1" / "model.onnx", folder / "model.onnx")
    manifest = json.loads((repository / MODEL / "1" / "model.json").read_text())
    manifest.pop("kv_cache", None)
    (folder / "model.json").write_text(json.dumps(manifest))
    return work


class InProcess:
    """The baseline: a greedy full-recompute loop on model.onnx, one onnxruntime thread, on core 0."""

    def __init__(self, repository: Path, tokens: int) -> None:
        manifest = json.loads((repository / MODEL / "1" / "model.json").read_text())
        self.vocab, self.window = manifest["tokenizer"]["vocab"], manifest["max_sequence_length"]
        self.tokens = tokens
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        path = str(repository / MODEL / "1" / "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.text = ""

    def run(self) -> float:
        """Tokens/s of one loop (its text is kept in `text`)."""
        clients = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {0})
        try:
            context = [self.vocab.index(c) for c in PROMPT]
            start = time.perf_counter()
            for _ in range(self.tokens):
                feed = {"input_ids": np.asarray([context[-self.window :]], dtype=np.int64)}
                (logits,) = self.session.run(["logits"], feed)
                context.append(int(np.argmax(logits[0, -1])))
            rate = self.tokens / (time.perf_counter() - start)
        finally:
            os.sched_setaffinity(0, clients)
        self.text = "".join(self.vocab[t] for t in context[len(PROMPT) :])
        return rate


def one_stream(client: httpx.Client, tokens: int) -> StreamRun:
    """One greedy generate_stream from PROMPT (eos is never chosen before `tokens` here: see `text`)."""
    body = {"text_input": PROMPT, "parameters": {"max_tokens": tokens, "temperature": 0}}
    start = time.perf_counter()
    first, count, parts = 0.0, 0, []
    with client.stream("POST", f"/v2/models/{MODEL}/generate_stream", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if count == 0:
                    first = time.perf_counter() - start
                parts.append(event.get("text_output", ""))
                count += "finish_reason" not in event
    return StreamRun(first, count, time.perf_counter() - start, "".join(parts))


def concurrent(url: str, streams: int, tokens: int) -> tuple[float, list[StreamRun], list[float]]:
    """Tokens/s in all of `streams` parallel streams, the runs, and health-check latencies meanwhile."""
    runs: list[StreamRun] = []
    clients = [httpx.Client(base_url=url, timeout=300) for _ in range(streams)]
    started = threading.Barrier(streams + 1)

    def stream(client: httpx.Client) -> None:
        started.wait()
        runs.append(one_stream(client, tokens))

    workers = [threading.Thread(target=stream, args=(c,)) for c in clients]
    for worker in workers:
        worker.start()
    started.wait()
    start = time.perf_counter()
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
    for c in clients:
        c.close()
    return sum(r.tokens for r in runs) / elapsed, runs, latencies


def measure(url: str, streams: int, baseline: InProcess) -> tuple[dict[str, float], str]:
    """The server's figures; each lone stream run is paired with an in-process run just before it
    (the machine's speed drifts between seconds: a ratio is only fair within a pair)."""
    tokens = baseline.tokens
    with httpx.Client(base_url=url, timeout=300) as client:
        one_stream(client, 20)  # warm-up: connection, first decode thread
        first = statistics.median(one_stream(client, 2).first_token_s for _ in range(10))
        pairs = [(baseline.run(), one_stream(client, tokens)) for _ in range(REPEATS)]
        alone = pairs[0][1]
        one = statistics.median(run.tokens / run.seconds for _, run in pairs)
    concurrent(url, streams, tokens)  # warm-up: the batch's shapes met once
    rounds = [concurrent(url, streams, tokens) for _ in range(ROUNDS)]
    rate = statistics.median(r[0] for r in rounds)
    runs = [run for r in rounds for run in r[1]]
    latencies = [latency for r in rounds for latency in r[2]]
    ms = sorted(1000 * x for x in latencies)
    return {
        "first_ms": 1000 * first,
        "one": one,
        "in_process": statistics.median(rate for rate, _ in pairs),
        "one_ratio": statistics.median(run.tokens / run.seconds / rate for rate, run in pairs),
        "many": rate,
        "many_first_ms": 1000 * statistics.median(r.first_token_s for r in runs),
        "live_p50_ms": statistics.median(ms),
        "live_p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "live_max_ms": ms[-1],
        "probes": len(ms),
        "same_text": float(all(r.text == alone.text for r in runs)),
    }, alone.text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-repository", type=Path, default=Path("models"))
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=120)
    parser.add_argument("--server-cores", default="0", help="taskset core list of the server (default 0)")
    args = parser.parse_args()
    repository = args.model_repository.resolve()
    if not (repository / MODEL).is_dir():
        sys.exit(f"{repository / MODEL} is missing: train the zoo first (make models)")
    print(f"{MODEL}: {args.tokens} greedy tokens from {PROMPT!r}; server on core 0, clients on core 1")
    baseline = InProcess(repository, args.tokens)
    os.sched_setaffinity(0, {1} if (os.cpu_count() or 1) > 1 else {0})
    results, texts = {}, {}
    with tempfile.TemporaryDirectory(prefix="recap-generate-") as work:
        for name, repo in (
            ("decode loop", repository),
            ("full recompute", without_cache(repository, Path(work))),
        ):
            with server(repo, args.server_cores) as url:
                results[name], texts[name] = measure(url, args.streams, baseline)
    for name, r in results.items():
        print(f"\nserver, {name}:")
        print(
            f"  1 stream: {r['one']:.0f} tokens/s against {r['in_process']:.0f} in process, full recompute "
            f"(onnxruntime, 1 thread, runs paired): {r['one_ratio']:.2f}x; first token {r['first_ms']:.1f} ms"
        )
        print(
            f"  {args.streams} streams: {r['many']:.0f} tokens/s in all "
            f"({r['many'] / r['one']:.2f}x one stream), "
            f"first token {r['many_first_ms']:.1f} ms (median); every text equal to the lone stream's: "
            f"{bool(r['same_text'])}; the lone stream's text equals in process: "
            f"{texts[name] == baseline.text}"
        )
        print(
            f"  /v2/health/live meanwhile: p50 {r['live_p50_ms']:.1f} ms, p99 {r['live_p99_ms']:.1f} ms, "
            f"max {r['live_max_ms']:.1f} ms ({r['probes']:.0f} probes)"
        )
    shipped = results["decode loop"]
    print(
        f"\nacceptance: one stream / in process = {shipped['one_ratio']:.2f} (>= 3), "
        f"{args.streams} streams / one stream = {shipped['many'] / shipped['one']:.2f} (>= 2)"
    )


if __name__ == "__main__":
    main()
