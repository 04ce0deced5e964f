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
from service.runtime.session import ModelSession, RunControl, TensorSpec, check_input

if TYPE_CHECKING:
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
    in_progress: int = 0
    load_seconds: float = 0.0
    # Built at load: the text model of a language or seq2seq model, and the names of the classes
    # (model.json's labels, or a language model's vocabulary for next-token top-k).
    text: TextModel | None = None
    class_labels: list[str] | None = None
    version_str: str = field(init=False)

    def __post_init__(self) -> None:
        self.version_str = str(self.version)

    @property
    def ready(self) -> bool:
        return self.session is not None

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
        start = time.perf_counter()
        results = session.run(feeds, output_names, control)
        self.metrics.inference_duration.observe(time.perf_counter() - start)
        batch_input = session.batch_input
        self.metrics.inference_rows.inc(feeds[batch_input].shape[0] if batch_input is not None else 1)
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
