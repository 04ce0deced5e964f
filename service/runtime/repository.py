"""The model repository: scan `models/<name>/<version>/`, load every version, look models up.

`Repository.get(name, version=None)` returns a `LoadedModel` (the highest version by default); a model
that failed to load is still there, not ready, with its reason. Loading builds everything a request
needs: the session, a text model's tokenizer and generation settings, the class labels. A text model
that cannot generate is not ready from start-up, with its reason, rather than failing each request.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from service.errors import ModelLoadError, ModelNotFoundError
from service.metrics import Metrics
from service.runtime.generation import TEXT_TASKS, TextModel
from service.runtime.manifest import Manifest, file_sha256, read_manifest
from service.runtime.model import LoadedModel
from service.runtime.postprocess import class_labels
from service.runtime.session import ModelSession, SessionConfig

log = logging.getLogger(__name__)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
PLATFORM = "onnxruntime_onnx"


class Repository:
    """Every version of every model under one folder, loaded at start-up."""

    def __init__(
        self,
        root: Path,
        config: SessionConfig,
        metrics: Metrics,
        default_batch_limit: int = 0,
        default_concurrency_limit: int = 0,
    ):
        self.root = root.resolve()
        self.config = config
        self.metrics = metrics
        self.default_batch_limit = default_batch_limit or None
        self.default_concurrency_limit = default_concurrency_limit or None
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
            model.concurrency_limit = model.manifest.max_concurrency or self.default_concurrency_limit
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
            if model.task in TEXT_TASKS:
                try:
                    model.text = TextModel.from_manifest(model, model.manifest.raw)
                except ValueError as error:
                    raise ModelLoadError(f"cannot generate text: {error}") from error
            tokenizer = model.text.tokenizer if model.text is not None else None
            model.class_labels = class_labels(model.task, model.labels, tokenizer)
        except ModelLoadError as error:
            model.session = None
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
