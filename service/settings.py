"""Server settings: every field is a `--kebab-case` flag of `python -m service` and a `RECAP_` env var.

Tests build their own `Settings(...)` and hand it to `create_app`; nothing here reads the command line
unless `__main__` asks for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ProviderName = Literal["cpu", "cuda", "tensorrt"]
OptimizationLevel = Literal["disabled", "basic", "extended", "all"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
ControlMode = Literal["none", "poll", "explicit"]


class Settings(BaseSettings):
    """Everything the server can be told at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="RECAP_",
        cli_kebab_case=True,
        cli_prog_name="python -m service",
        cli_implicit_flags=True,
        extra="forbid",
        frozen=True,
    )

    host: str = Field(default="127.0.0.1", min_length=1, description="Interface to listen on.")
    workers: int | Literal["auto"] = Field(
        default=1,
        description="Worker processes serving the port (auto: the CPUs this process may use). With more "
        "than one, a supervisor restarts a dead worker and forwards SIGTERM/SIGHUP; /metrics and the "
        "statistics sum every worker; the limits are per server (each worker takes its share).",
    )
    reuse_port: bool = Field(
        default=False,
        description="With --workers: each worker binds the port with SO_REUSEPORT (the kernel spreads "
        "connections evenly; a dying worker drops the connections queued on it), not one shared socket.",
    )
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port to listen on.")
    model_repository: Path = Field(
        default=Path("models"),
        description="Folder holding <model>/<version>/model.onnx (+ model.json); it must exist.",
    )
    providers: list[ProviderName] = Field(
        default_factory=lambda: list[ProviderName](["cpu"]),
        min_length=1,
        description="onnxruntime execution providers in order of preference: cpu, cuda, tensorrt.",
    )
    strict_providers: bool = Field(
        default=False,
        description="A model whose session did not get every requested GPU provider is not ready "
        "(otherwise it falls back to the CPU and the fallback is logged once).",
    )
    gpu_device_id: int = Field(default=0, ge=0, description="CUDA device for the cuda/tensorrt providers.")
    intra_op_threads: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="onnxruntime threads inside one operator; 0: onnxruntime's default.",
    )
    inter_op_threads: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="onnxruntime threads across operators; 0: onnxruntime's default.",
    )
    graph_optimization_level: OptimizationLevel = Field(
        default="all", description="onnxruntime graph optimisation level: disabled, basic, extended or all."
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        le=2**31,
        description="Largest request body accepted; larger ones get 413 before they are read.",
    )
    max_concurrency: int = Field(
        default=64,
        ge=0,
        description="Requests in progress across the server (probes and /metrics exempt); one more is "
        "answered 503 with Retry-After at once, never queued. 0: no limit.",
    )
    model_max_concurrency: int = Field(
        default=32,
        ge=0,
        description="Requests in progress per model version, for models whose model.json sets no "
        "max_concurrency (long generations cannot take every slot). 0: no limit.",
    )
    max_inflight_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Bytes of request bodies being read or processed at once; a request that would pass "
        "it is answered 503 with Retry-After before its body is read. 0: no limit.",
    )
    request_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="A request not answered in time gets 504 (a stream under way ends with "
        'finish_reason "timeout"); a client may ask for less with a timeout parameter in microseconds.',
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A connection whose request headers are not complete in time is closed.",
    )
    body_timeout_seconds: float = Field(
        default=60.0, gt=0, le=86_400, description="A request body not received in time gets 408."
    )
    max_batch_size: int = Field(
        default=0, ge=0, description="Batch limit for models whose model.json sets none; 0: no limit."
    )
    offload_min_rows: int = Field(
        default=1024,
        ge=1,
        description="Batches of at least this many rows run in a worker thread instead of inline "
        "on the event loop: a thread hop costs 0.1-0.35 ms here, more than running a few hundred rows "
        "of a tabular model inline; at 1024 rows the larger MLPs take about 1 ms.",
    )
    strict_readiness: bool = Field(
        default=True,
        description="/v2/health/ready answers 200 only when every model has a ready default version "
        "(a failed or pending older/newer version does not count); off: when at least one model is ready.",
    )
    model_control_mode: ControlMode = Field(
        default="none",
        description="none: load every version at start-up, never read the repository again; poll: rescan "
        "it every --repository-poll-seconds (new, changed by sha256 and removed versions); explicit: load "
        "--load-model at start-up, then only what POST /v2/repository/models/{m}/load|unload asks.",
    )
    repository_poll_seconds: float = Field(
        default=5.0, gt=0, le=86_400, description="Seconds between two rescans in poll mode."
    )
    load_model: list[str] = Field(
        default_factory=list,
        description="explicit mode: a model to load at start-up (repeat the flag; * for all).",
    )
    version_policy: str = Field(
        default="all",
        pattern=r"^(all|latest:[1-9][0-9]{0,5})$",
        description="Versions in service: all, or latest:N (the N highest version folders).",
    )
    drain_grace_seconds: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="After SIGTERM: readiness is 503 at once, and requests are still accepted for this long "
        "(so a load balancer or Kubernetes removes the endpoint first).",
    )
    shutdown_timeout_seconds: float = Field(
        default=25.0,
        ge=0,
        le=3600,
        description="Then: requests and streams in progress get this long to finish; a stream still "
        'running ends with a last event finish_reason "shutdown". Then the process exits 0.',
    )
    generate_max_tokens: int = Field(
        default=512,
        ge=1,
        le=100_000,
        description="Cap on a generate request's max_tokens; larger asks get 400.",
    )
    generate_default_max_tokens: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="max_tokens of a generate request that sets none (<= the cap).",
    )
    generate_max_prompt_length: int = Field(
        default=4096,
        ge=1,
        le=1_000_000,
        description="Longest text_input (characters) a generate request may send.",
    )
    generate_max_streams: int = Field(
        default=32,
        ge=1,
        le=100_000,
        description="Concurrent generate_stream responses; one more is answered 429 until one ends.",
    )
    generate_batch_limit: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Most streams one decode step of a model with KV-cache graphs runs together; more "
        "streams wait to join until one ends.",
    )
    samples_max_count: int = Field(
        default=256, ge=1, le=4096, description="Most images one GET .../samples.png may ask for (count)."
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="API keys, one per line as `<scopes> <key>` (scopes: inference, admin, metrics; a key "
        "may be given as sha256:<hex>). Clients send `Authorization: Bearer <key>`. Re-read on SIGHUP and "
        "when the file changes. Without it, only a loopback address may be bound.",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="Serve without API keys on a non-loopback address (anyone who reaches the port may "
        "call every route). Off: such a server refuses to start.",
    )
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate (chain): serve HTTPS.")
    tls_key_file: Path | None = Field(default=None, description="PEM private key of --tls-cert-file.")
    grpc_port: int = Field(
        default=8001,
        ge=0,
        le=65535,
        description="Open Inference Protocol over gRPC (inference.GRPCInferenceService, grpc.health.v1) on "
        "this port, as Triton's 8001; 0: no gRPC.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Also serve /metrics on this port (as Triton's 8002), for scrapers that cannot send a "
        "key; open unless --metrics-port-auth. Bind it where only the scraper reaches.",
    )
    metrics_host: str | None = Field(
        default=None, description="Interface of the metrics listener (default: --host)."
    )
    metrics_port_auth: bool = Field(
        default=False, description="The metrics listener asks for a key with the metrics scope too."
    )
    access_log: bool = Field(default=False, description="Log every request (costs throughput).")
    log_level: LogLevel = Field(default="info", description="Logging level of the server.")
    log_format: LogFormat = Field(
        default="text",
        description="text: one readable line per event; json: one JSON object per line, for log shippers. "
        "Either way each line about a request carries its request id.",
    )

    @model_validator(mode="after")
    def _default_within_cap(self) -> Settings:
        if self.generate_default_max_tokens > self.generate_max_tokens:
            raise ValueError(
                f"generate_default_max_tokens ({self.generate_default_max_tokens}) is over "
                f"generate_max_tokens ({self.generate_max_tokens})"
            )
        return self

    @property
    def worker_count(self) -> int:
        if self.workers == "auto":
            return max(1, len(os.sched_getaffinity(0)))
        return self.workers

    @model_validator(mode="after")
    def _workers(self) -> Settings:
        if self.workers != "auto" and not 1 <= self.workers <= 256:
            raise ValueError(f"--workers must be auto or 1 to 256, got {self.workers}")
        for name in ("max_concurrency", "model_max_concurrency"):
            value = getattr(self, name)
            if 0 < value < self.worker_count:
                flag = "--" + name.replace("_", "-")
                raise ValueError(
                    f"{flag} ({value}) is below --workers ({self.worker_count}): the limit is per server "
                    "and each worker needs at least one slot"
                )
        if self.worker_count > 1 and self.model_control_mode == "explicit":
            raise ValueError(
                "--model-control-mode explicit needs --workers 1: a load or unload would reach only the "
                "worker that answers it; use --model-control-mode poll (every worker polls) with workers"
            )
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("--tls-cert-file and --tls-key-file go together: give both or neither")
        for path in (self.tls_cert_file, self.tls_key_file, self.api_keys_file):
            if path is not None and not path.is_file():
                raise ValueError(f"{str(path)!r} is not a file")
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError(f"--metrics-port {self.metrics_port} is the main --port")
        if self.grpc_port and self.grpc_port in (self.port, self.metrics_port):
            raise ValueError(f"--grpc-port {self.grpc_port} is already the HTTP or the metrics port")
        if 0 < self.max_inflight_bytes < self.max_body_bytes:
            raise ValueError(
                f"--max-inflight-bytes ({self.max_inflight_bytes}) is below --max-body-bytes "
                f"({self.max_body_bytes}): a body the server accepts could never be admitted"
            )
        return self

    @field_validator("providers")
    @classmethod
    def _no_duplicates(cls, value: list[ProviderName]) -> list[ProviderName]:
        if len(set(value)) != len(value):
            raise ValueError(f"providers must not repeat, got {value}")
        return value

    @field_validator("model_repository")
    @classmethod
    def _is_directory(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"model repository {str(value)!r} is not a directory")
        return value
