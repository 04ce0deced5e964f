"""All Prometheus objects of the server, in one registry per app (tests build several apps).

The names are a contract with the Grafana dashboard and load tests; do not rename them. Labels only
ever carry names of loaded models (an unknown model is counted as model="" version=""), so a client
cannot blow up the cardinality. `ModelMetrics` caches the labelled children of one model version so
the hot path does no label lookups; only the request pipeline (`service.api.pipeline`) counts requests.

With `--workers N` the supervisor sets PROMETHEUS_MULTIPROC_DIR before any worker starts, and
prometheus-client's multiprocess mode keeps every value in a per-process file: `/metrics` answers the sum
over all workers (the dead ones' counters included) whichever worker is asked. Gauges say how they
combine (`multiprocess_mode`); a labelled child cannot be removed in that mode, so it is set to 0.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from functools import cached_property
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

# Seconds; the small models answer in tens of microseconds, text models in tens of milliseconds.
REQUEST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
INFERENCE_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25, 1)
FIRST_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
INTER_TOKEN_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
REQUEST_LABELS = ["model", "version", "protocol", "endpoint"]
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
INTERNAL_PREFIX = "recap_internal_"  # families kept for the statistics extension, not shown on /metrics


def multiprocess_dir() -> str | None:
    """The shared metrics folder of a server with several workers (None: one process)."""
    return os.environ.get(MULTIPROCESS_ENV) or None


class _Shown:
    """The merged families of every worker, without the internal ones."""

    def __init__(self, folder: str) -> None:
        self._merged = MultiProcessCollector(None, folder)

    def collect(self) -> Iterable[Metric]:
        return (family for family in self._merged.collect() if not family.name.startswith(INTERNAL_PREFIX))


class EndpointLabels(Protocol):
    """What the metrics need of an endpoint (service.api.pipeline.Endpoint): its two label values."""

    @property
    def protocol(self) -> str: ...

    @property
    def name(self) -> str: ...


class Metrics:
    """The registry and the metric families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "recap_requests",
            "Requests by model, version, protocol (v2, v1, generate) and endpoint (infer, metadata, ...).",
            REQUEST_LABELS,
            registry=self.registry,
        )
        self.failures = Counter(
            "recap_request_failures",
            "Failed requests by model, version, protocol, endpoint and reason (a domain error code).",
            [*REQUEST_LABELS, "reason"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "recap_request_duration_seconds",
            "Whole request handling time, body parsing and encoding included.",
            REQUEST_LABELS,
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.inference_duration = Histogram(
            "recap_inference_duration_seconds",
            "onnxruntime session.run time only.",
            ["model", "version"],
            buckets=INFERENCE_BUCKETS,
            registry=self.registry,
        )
        self.inference_rows = Counter(
            "recap_inference_rows",
            "Rows inferred (the batch sizes summed; Triton's inference count).",
            ["model", "version"],
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "recap_model_ready",
            "1 when the model version is in service and ready, 0 when it is listed but not ready.",
            ["model", "version"],
            registry=self.registry,
            multiprocess_mode="livemin",  # ready only where every live worker has it ready
        )
        self.model_loads = Counter(
            "recap_model_loads",
            "Loads of a model version by result: success, failure, or pending (a folder caught mid-update).",
            ["model", "version", "result"],
            registry=self.registry,
        )
        self.requests_in_progress = Gauge(
            "recap_requests_in_progress",
            "Requests admitted and not finished (the count --max-concurrency bounds).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        # Generation (service.api.generate): tokens made, streams open and streams the client left.
        self.generated_tokens = Counter(
            "recap_generated_tokens",
            "Tokens generated (one per model step) by the generate endpoints.",
            ["model", "version"],
            registry=self.registry,
        )
        self.active_streams = Gauge(
            "recap_active_streams",
            "generate_stream responses in progress.",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.streams_cancelled = Counter(
            "recap_streams_cancelled",
            "generate_stream responses stopped early because the client disconnected.",
            ["model"],
            registry=self.registry,
        )
        # The decode loop (service.runtime.decode_loop): latency per token and how many streams a step ran.
        self.time_to_first_token = Histogram(
            "recap_generate_time_to_first_token_seconds",
            "From a generation's start (its request checked) to its first token.",
            ["model", "version"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.inter_token_latency = Histogram(
            "recap_generate_inter_token_seconds",
            "Between two consecutive tokens of one generation.",
            ["model", "version"],
            buckets=INTER_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.decode_batch_size = Histogram(
            "recap_generate_decode_batch_size",
            "Streams whose next token one decoder run computed (continuous batching).",
            ["model", "version"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        # Triton's statistics with several workers (service.runtime.stats.SharedStats); with one
        # process the statistics are plain integers and these stay empty.
        self.stats_count = Counter(
            f"{INTERNAL_PREFIX}stats_count", "Statistics extension counts.", ["model", "version", "field"],
            registry=self.registry,
        )  # fmt: skip
        self.stats_ns = Counter(
            f"{INTERNAL_PREFIX}stats_ns", "Statistics extension nanoseconds.", ["model", "version", "field"],
            registry=self.registry,
        )  # fmt: skip
        self.stats_last_inference = Gauge(
            f"{INTERNAL_PREFIX}last_inference_ms", "Last run, ms since the epoch.", ["model", "version"],
            registry=self.registry, multiprocess_mode="max",
        )  # fmt: skip
        self.unknown = ModelMetrics(self, "", "")

    def for_model(self, model: str, version: str) -> ModelMetrics:
        return ModelMetrics(self, model, version)

    def exposition(self) -> tuple[bytes, str]:
        folder = multiprocess_dir()
        if folder is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        merged = CollectorRegistry()
        merged.register(_Shown(folder))
        return generate_latest(merged), CONTENT_TYPE_LATEST

    def merged_families(self) -> list[Metric]:
        """Every worker's families, internal ones included (only with several workers)."""
        folder = multiprocess_dir()
        return list(MultiProcessCollector(None, folder).collect()) if folder is not None else []

    def forget_version(self, model: str, version: str) -> None:
        """A version left service: its ready series goes (set to 0 where it cannot be removed)."""
        if multiprocess_dir() is not None:
            self.model_ready.labels(model, version).set(0)
            return
        with contextlib.suppress(KeyError):
            self.model_ready.remove(model, version)


class EndpointMetrics:
    """The children of one (model, version, protocol, endpoint); failure reasons are added as they occur."""

    __slots__ = ("_failures", "_labels", "_metrics", "duration", "requests")

    def __init__(self, metrics: Metrics, labels: tuple[str, str, str, str]) -> None:
        self._metrics = metrics
        self._labels = labels
        self._failures: dict[str, Counter] = {}
        self.requests = metrics.requests.labels(*labels)
        self.duration = metrics.request_duration.labels(*labels)

    def failure(self, reason: str) -> None:
        counter = self._failures.get(reason)
        if counter is None:
            counter = self._failures[reason] = self._metrics.failures.labels(*self._labels, reason)
        counter.inc()


class ModelMetrics:
    """The cached children of one model version (or of the unknown model)."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._metrics = metrics
        self.model = model
        self.version = version
        self._endpoints: dict[EndpointLabels, EndpointMetrics] = {}
        self.inference_duration = metrics.inference_duration.labels(model, version)
        self.inference_rows = metrics.inference_rows.labels(model, version)

    def endpoint(self, endpoint: EndpointLabels) -> EndpointMetrics:
        """The request children of one endpoint, created on its first request."""
        children = self._endpoints.get(endpoint)
        if children is None:
            labels = (self.model, self.version, endpoint.protocol, endpoint.name)
            children = self._endpoints[endpoint] = EndpointMetrics(self._metrics, labels)
        return children

    # Generation children exist only for models that generate, once they do.
    @cached_property
    def generated_tokens(self) -> Counter:
        return self._metrics.generated_tokens.labels(self.model, self.version)

    @cached_property
    def active_streams(self) -> Gauge:
        return self._metrics.active_streams.labels(self.model)

    @cached_property
    def streams_cancelled(self) -> Counter:
        return self._metrics.streams_cancelled.labels(self.model)

    @cached_property
    def time_to_first_token(self) -> Histogram:
        return self._metrics.time_to_first_token.labels(self.model, self.version)

    @cached_property
    def inter_token_latency(self) -> Histogram:
        return self._metrics.inter_token_latency.labels(self.model, self.version)

    @cached_property
    def decode_batch_size(self) -> Histogram:
        return self._metrics.decode_batch_size.labels(self.model, self.version)

    def set_ready(self, ready: bool) -> None:
        if self.model:
            self._metrics.model_ready.labels(self.model, self.version).set(1 if ready else 0)
