"""Triton's statistics extension: per model version counts and cumulative nanoseconds.

Recorded on the hot path with plain integers in slots, no lock: requests are recorded on the event loop,
and a run in a worker thread adds to other fields. CPython (3.11, with its GIL) switches threads only at
calls and backward jumps, never between the load and the store of `self.field += int`, so no update is
lost; about 0.3 us a request in all.

- `inference_count`: rows inferred (batch sizes summed); `execution_count`: session runs (a generated
  token is one run); `last_inference`: ms since the epoch of the last run;
- `success` / `fail`: whole requests to an endpoint that runs the model, and their duration;
- `queue`: time a run waited for a worker thread (a run on the event loop waits for nothing: the server
  refuses work over its limits instead of queueing it);
- `compute_input`: from the request's start to its first run (reading and decoding the body);
  `compute_infer`: the session runs; `compute_output`: from the last run to the answer (encoding).
"""

from __future__ import annotations

import time
from typing import Any

from service.metrics import Metrics, multiprocess_dir

DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
RUN_COUNTS = ("inference", "execution")  # rows inferred, session runs


class ModelStats:
    __slots__ = (
        "compute_infer_count",
        "compute_infer_ns",
        "compute_input_ns",
        "compute_output_ns",
        "execution_count",
        "fail_count",
        "fail_ns",
        "inference_count",
        "last_inference_ns",
        "measured_count",
        "queue_ns",
        "success_count",
        "success_ns",
    )

    def __init__(self) -> None:
        self.inference_count = self.execution_count = self.last_inference_ns = 0
        self.compute_infer_count = self.compute_infer_ns = 0
        self.success_count = self.success_ns = self.fail_count = self.fail_ns = 0
        # compute_input, queue and compute_output share a count: requests whose phases were measured.
        self.measured_count = self.compute_input_ns = self.queue_ns = self.compute_output_ns = 0

    def record_run(self, rows: int, infer_ns: int, end_ns: int) -> None:
        """One session run of `rows` rows that took `infer_ns` and ended at perf_counter_ns `end_ns` (any
        thread; the wall clock is read when the statistics are, not per run)."""
        self.inference_count += rows
        self.execution_count += 1
        self.compute_infer_count += 1
        self.compute_infer_ns += infer_ns
        self.last_inference_ns = end_ns

    def record_request(self, ok: bool, total_ns: int, phases: tuple[int, int, int] | None) -> None:
        """A finished request to an endpoint that runs the model (event loop); `phases` (input, queue,
        output ns) when it ran the model through `Call.run_model`."""
        if not ok:
            self.fail_count += 1
            self.fail_ns += total_ns
            return
        self.success_count += 1
        self.success_ns += total_ns
        if phases is not None:
            self.measured_count += 1
            self.compute_input_ns += phases[0]
            self.queue_ns += phases[1]
            self.compute_output_ns += phases[2]

    def document(self, name: str, version: str) -> dict[str, Any]:
        """One entry of `{"model_stats": [...]}`, as Triton spells it."""
        measured = self.measured_count
        wall = time.time_ns() - time.perf_counter_ns() + self.last_inference_ns  # 0 until the first run
        pairs = {
            "success": (self.success_count, self.success_ns),
            "fail": (self.fail_count, self.fail_ns),
            "queue": (measured, self.queue_ns),
            "compute_input": (measured, self.compute_input_ns),
            "compute_infer": (self.compute_infer_count, self.compute_infer_ns),
            "compute_output": (measured, self.compute_output_ns),
        }
        return {
            "name": name,
            "version": version,
            "last_inference": wall // 1_000_000 if self.last_inference_ns else 0,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {key: {"count": count, "ns": ns} for key, (count, ns) in pairs.items()},
        }


class SharedStats:
    """The same statistics for a server with several workers: prometheus-client multiprocess counters
    (one file per worker, kept after a worker dies), summed over every worker when read. They run from
    the server's start: a reload does not reset them, as a per-worker count could not be reset everywhere."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._metrics = metrics
        self._labels = {"model": model, "version": version}
        count, ns = metrics.stats_count, metrics.stats_ns
        self._count = {field: count.labels(model, version, field) for field in (*DURATIONS, *RUN_COUNTS)}
        self._ns = {field: ns.labels(model, version, field) for field in DURATIONS}
        self._last = metrics.stats_last_inference.labels(model, version)

    def record_run(self, rows: int, infer_ns: int, end_ns: int) -> None:
        self._count["inference"].inc(rows)
        self._count["execution"].inc()
        self._count["compute_infer"].inc()
        self._ns["compute_infer"].inc(infer_ns)
        self._last.set(time.time_ns() // 1_000_000)

    def record_request(self, ok: bool, total_ns: int, phases: tuple[int, int, int] | None) -> None:
        outcome = "success" if ok else "fail"
        self._count[outcome].inc()
        self._ns[outcome].inc(total_ns)
        if ok and phases is not None:
            for field, ns in zip(("compute_input", "queue", "compute_output"), phases, strict=True):
                self._count[field].inc()
                self._ns[field].inc(ns)

    def document(self, name: str, version: str) -> dict[str, Any]:
        counts: dict[str, float] = {}
        totals: dict[str, float] = {}
        last = 0.0
        for family in self._metrics.merged_families():
            for sample in family.samples:
                labels = sample.labels
                if labels.get("model") != name or labels.get("version") != version:
                    continue
                if sample.name == "recap_internal_stats_count_total":
                    counts[labels["field"]] = sample.value
                elif sample.name == "recap_internal_stats_ns_total":
                    totals[labels["field"]] = sample.value
                elif sample.name == "recap_internal_last_inference_ms":
                    last = max(last, sample.value)
        return {
            "name": name,
            "version": version,
            "last_inference": int(last),
            "inference_count": int(counts.get("inference", 0)),
            "execution_count": int(counts.get("execution", 0)),
            "inference_stats": {
                key: {"count": int(counts.get(key, 0)), "ns": int(totals.get(key, 0))} for key in DURATIONS
            },
        }


def new_stats(metrics: Metrics, model: str, version: str) -> ModelStats | SharedStats:
    """Statistics of a newly loaded version: per process, or shared by every worker."""
    if multiprocess_dir() is None:
        return ModelStats()
    return SharedStats(metrics, model, version)
