"""The model repository: scan `models/<name>/<version>/`, load every version, look models up.

`Repository.get(name, version=None)` returns a `LoadedModel` (the highest version by default); a model
that failed to load is still there, not ready, with its reason. `LoadedModel.run` is the one entry
point to inference for every protocol (V2, V1, generation): it checks inputs, runs, and records the
compute metrics.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import (
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotReadyError,
)
from service.metrics import Metrics, ModelMetrics
from service.runtime.manifest import Manifest, file_sha256, read_manifest
from service.runtime.session import ModelSession, SessionConfig, TensorSpec, check_input
from service.runtime.tensors import DATATYPES

log = logging.getLogger(__name__)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
PLATFORM = "onnxruntime_onnx"


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
    load_seconds: float = 0.0
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
    def tokenizer(self) -> dict[str, Any] | None:
        return self.manifest.tokenizer

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

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Every graph input present with the right dtype and a shape that fits; nothing else."""
        session = self.require_session()
        for name in feeds:
            if name not in session.input_by_name:
                raise InvalidInputError(
                    f"unknown input {name[:64]!r}; the model takes {', '.join(session.input_by_name)}"
                )
        for spec in session.inputs:
            array = feeds.get(spec.name)
            if array is None:
                raise InvalidInputError(
                    f"missing input {spec.name!r}; the model takes {', '.join(session.input_by_name)}"
                )
            datatype = next((k for k, v in DATATYPES.items() if v == array.dtype), str(array.dtype))
            check_input(spec, datatype, array.shape, self.batch_limit, self.max_sequence_length)

    def check_outputs(self, output_names: list[str]) -> None:
        session = self.require_session()
        for name in output_names:
            if name not in session.output_by_name:
                raise InvalidInputError(
                    f"unknown output {name[:64]!r}; the model's outputs are {', '.join(session.output_names)}"
                )

    def run(
        self,
        feeds: dict[str, np.ndarray],
        output_names: list[str] | None = None,
        *,
        checked: bool = False,
    ) -> dict[str, np.ndarray]:
        """Run the session on `feeds`; `checked=True` skips the checks a protocol layer already made."""
        session = self.require_session()
        names = session.output_names if output_names is None else output_names
        if not checked:
            self.check_feeds(feeds)
            self.check_outputs(names)
        start = time.perf_counter()
        results = session.run(feeds, names)
        self.metrics.inference_duration.observe(time.perf_counter() - start)
        first = feeds[session.inputs[0].name] if session.inputs else None
        rows = first.shape[0] if first is not None and first.ndim and session.inputs[0].batched else 1
        self.metrics.inference_rows.inc(rows)
        return dict(zip(names, results, strict=True))


def _manifest_specs(manifest: Manifest, key: str) -> list[TensorSpec]:
    """Tensor specs from model.json, shown in the metadata of a model that failed to load."""
    specs = []
    for item in manifest.raw.get(key) or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            shape = item["shape"] if isinstance(item.get("shape"), list) else []
            dims = tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)
            specs.append(TensorSpec(item["name"], str(item.get("datatype", "")), dims))
    return specs


class Repository:
    """Every version of every model under one folder, loaded at start-up."""

    def __init__(self, root: Path, config: SessionConfig, metrics: Metrics, default_batch_limit: int = 0):
        self.root = root.resolve()
        self.config = config
        self.metrics = metrics
        self.default_batch_limit = default_batch_limit or None
        self._by_key: dict[tuple[str, str], LoadedModel] = {}
        self._default: dict[str, LoadedModel] = {}
        self._versions: dict[str, list[LoadedModel]] = {}

    def load_all(self) -> None:
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if not NAME_PATTERN.match(model_dir.name):
                log.warning("skipping %s: not a model name (%s)", model_dir.name, NAME_PATTERN.pattern)
                continue
            versions = sorted(
                (int(p.name), p)
                for p in model_dir.iterdir()
                if p.is_dir() and p.name.isdigit() and int(p.name) > 0
            )
            if not versions:
                log.warning("skipping %s: no positive integer version folder", model_dir.name)
                continue
            loaded = [self._load(model_dir.name, number, path) for number, path in versions]
            self._versions[model_dir.name] = loaded
            self._default[model_dir.name] = loaded[-1]
            for model in loaded:
                self._by_key[(model.name, model.version_str)] = model

    def _load(self, name: str, version: int, path: Path) -> LoadedModel:
        start = time.perf_counter()
        metrics = self.metrics.for_model(name, str(version))
        model = LoadedModel(name, version, path, Manifest.bare(), metrics)
        try:
            model.manifest = read_manifest(path)
            model.batch_limit = model.manifest.max_batch_size or self.default_batch_limit
            onnx_path = path / "model.onnx"
            if not onnx_path.resolve().is_relative_to(self.root) or not onnx_path.is_file():
                raise ModelLoadError("model.onnx is missing")
            if model.manifest.sha256 is not None:
                digest = file_sha256(onnx_path)
                if digest != model.manifest.sha256:
                    raise ModelLoadError(
                        f"sha256 mismatch: model.json says {model.manifest.sha256[:16]}..., "
                        f"model.onnx hashes to {digest[:16]}..."
                    )
            model.session = ModelSession(onnx_path, self.config, f"{name} v{version}")
        except ModelLoadError as error:
            model.reason = str(error)
            log.error("model %s version %d is not ready: %s", name, version, model.reason)
        model.load_seconds = time.perf_counter() - start
        metrics.set_ready(model.ready)
        if model.ready:
            log.info(
                "loaded %s version %d (%s) on %s in %.0f ms",
                name,
                version,
                "model.json" if model.manifest.has_file else "bare model.onnx",
                ",".join(model.providers),
                model.load_seconds * 1000,
            )
        return model

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The model version asked for (the highest when `version` is None); 404 error if none."""
        model = self._default.get(name) if version is None else self._by_key.get((name, version))
        if model is not None:
            return model
        if name not in self._default:
            raise ModelNotFoundError(f"unknown model {name[:64]!r}")
        versions = ", ".join(m.version_str for m in self._versions[name])
        raise ModelNotFoundError(f"model {name!r} has no version {version[:16]!r}; versions: {versions}")  # type: ignore[index]

    def versions(self, name: str) -> list[LoadedModel]:
        if name not in self._versions:
            raise ModelNotFoundError(f"unknown model {name[:64]!r}")
        return self._versions[name]

    def models(self) -> list[LoadedModel]:
        return [m for versions in self._versions.values() for m in versions]

    @property
    def ready(self) -> bool:
        return all(m.ready for m in self._by_key.values())
