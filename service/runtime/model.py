"""One loaded model version: its manifest, session, text model, metrics, and the one input-check path.

Every protocol checks its inputs with the same three calls, in this order, so each message exists once:
`input_spec(name)` (an unknown input), `check_input(spec, datatype, shape)` (datatype, axes, batch and
sequence limits) and `check_complete(names)` (a missing input). `run(output_names, feeds)` then runs
the session (the signature of onnxruntime's `InferenceSession.run`) and records the compute metrics.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from service.errors import InvalidInputError, ModelNotReadyError
from service.metrics import ModelMetrics
from service.runtime.manifest import Manifest
from service.runtime.scan import Fingerprint
from service.runtime.session import ModelSession, RunControl, TensorSpec, check_input
from service.runtime.stats import ModelStats, SharedStats

if TYPE_CHECKING:
    from service.runtime.decode_loop import DecodeLoop
    from service.runtime.generation import TextModel


@dataclass(eq=False)
class LoadedModel:
    """One version of one model: its manifest, its session (None when not ready) and its metrics."""

    name: str
    version: int
    path: Path
    manifest: Manifest
    metrics: ModelMetrics
    session: ModelSession | None = None
    reason: str | None = None
    batch_limit: int | None = None
    concurrency_limit: int | None = None  # requests in progress at once (admission control)
    in_progress: int = 0  # requests holding this version (admission); it is released at 0 once retired
    load_seconds: float = 0.0
    # What it was loaded from, and how a load that did not give a session ended: a folder caught
    # mid-update is pending (tried again at the next scan), anything else failed (UNAVAILABLE).
    fingerprint: Fingerprint = ()
    pending: bool = False
    # A newer copy of this same version that failed or is pending while this one keeps serving.
    update_problem: str | None = None
    stats: ModelStats | SharedStats = field(default_factory=ModelStats)
    # Built at load: the text model of a language or seq2seq model, and the names of the classes
    # (model.json's labels, or a language model's vocabulary for next-token top-k).
    text: TextModel | None = None
    decoder: DecodeLoop | None = None  # the continuous-batching loop of a text model with KV-cache graphs
    class_labels: list[str] | None = None
    version_str: str = field(init=False)

    def __post_init__(self) -> None:
        self.version_str = str(self.version)

    @property
    def ready(self) -> bool:
        return self.session is not None

    @property
    def state(self) -> str:
        """Triton's index states: READY or UNAVAILABLE, plus PENDING for a folder caught mid-update."""
        if self.session is not None:
            return "READY"
        return "PENDING" if self.pending else "UNAVAILABLE"

    @property
    def status_reason(self) -> str | None:
        """Why it is not ready, or what happened to a newer copy of it (shown in the index)."""
        return self.reason if self.session is None else self.update_problem

    def release(self, reason: str) -> None:
        """Drop the session (no request holds this version any more): onnxruntime frees its memory."""
        self.session = None
        self.text = None
        self.decoder = None
        self.reason = reason

    @property
    def labels(self) -> list[str] | None:
        return self.manifest.labels

    @property
    def task(self) -> str | None:
        return self.manifest.task

    @property
    def max_sequence_length(self) -> int | None:
        return self.manifest.max_sequence_length

    @property
    def providers(self) -> list[str]:
        return self.session.providers if self.session else []

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.session.inputs if self.session else _manifest_specs(self.manifest, "inputs")

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.session.outputs if self.session else _manifest_specs(self.manifest, "outputs")

    def require_session(self) -> ModelSession:
        if self.session is None:
            raise ModelNotReadyError(
                f"model {self.name!r} version {self.version} is not ready: {self.reason}"
            )
        return self.session

    # -- the input-check path every protocol takes ---------------------------------------------------

    def input_spec(self, name: str) -> TensorSpec:
        """The graph input called `name`; an unknown name is a 400 that lists the model's inputs."""
        session = self.require_session()
        spec = session.input_by_name.get(name)
        if spec is None:
            raise InvalidInputError(
                f"unknown input {str(name)[:64]!r}; the model takes {', '.join(session.input_by_name)}"
            )
        return spec

    def check_input(self, spec: TensorSpec, datatype: str, shape: Sequence[int]) -> None:
        """Does a (datatype, shape) fit the graph input and this model's batch and sequence limits?"""
        check_input(spec, datatype, shape, self.batch_limit, self.max_sequence_length)

    def check_complete(self, names: Collection[str]) -> None:
        """Every graph input is among `names` (already known to be graph inputs)."""
        session = self.require_session()
        if len(names) == len(session.inputs):
            return
        for spec in session.inputs:
            if spec.name not in names:
                raise InvalidInputError(
                    f"missing input {spec.name!r}; the model takes {', '.join(session.input_by_name)}"
                )

    def output_spec(self, name: object) -> TensorSpec:
        """The graph output called `name`; anything else is a 400 that lists the model's outputs."""
        session = self.require_session()
        spec = session.output_by_name.get(name) if type(name) is str else None
        if spec is None:
            shown = repr(name[:64]) if type(name) is str else "a missing name"
            raise InvalidInputError(
                f"unknown output {shown}; the model's outputs are {', '.join(session.output_names)}"
            )
        return spec

    def run(
        self, output_names: list[str], feeds: dict[str, np.ndarray], control: RunControl | None = None
    ) -> list[np.ndarray]:
        """Run the session on checked `feeds`; the outputs in the order of `output_names`. `control`
        can stop it from another thread (a deadline passed, the client left)."""
        session = self.require_session()
        start = time.perf_counter_ns()
        results = session.run(feeds, output_names, control)
        end = time.perf_counter_ns()
        took = end - start
        self.metrics.inference_duration.observe(took / 1e9)
        batch_input = session.batch_input
        rows = feeds[batch_input].shape[0] if batch_input is not None else 1
        self.metrics.inference_rows.inc(rows)
        self.stats.record_run(rows, took, end)
        return results


def _manifest_specs(manifest: Manifest, key: str) -> list[TensorSpec]:
    """Tensor specs from model.json, shown in the metadata of a model that failed to load."""
    specs = []
    for item in manifest.raw.get(key) or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            shape = item["shape"] if isinstance(item.get("shape"), list) else []
            dims = tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)
            specs.append(TensorSpec(item["name"], str(item.get("datatype", "")), dims))
    return specs
