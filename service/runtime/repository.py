"""The model repository: load a version folder, hold the versions in service, look models up.

`Repository.get(name, version=None)` returns a `LoadedModel`: the highest *ready* version by default
(the highest version when none is ready, so a request gets its reason). A version that failed to load
is still listed, not ready, with its reason; a folder caught mid-update is pending.

Two halves, two kinds of caller:
- `load_version(folder)` builds everything a request needs (the session from exactly the bytes whose
  sha256 was checked, the graph checked against model.json, one warm-up run, a text model's tokenizer,
  the class labels). It touches nothing shared, so the lifecycle (`service.runtime.lifecycle`) runs it
  in a background thread while the event loop keeps serving.
- `install` and `remove` change the versions in service, on the event loop only (no lock: every
  reader is on the loop too). A request that already holds the old entry finishes on it; the lifecycle
  releases the old session once no request holds it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ModelLoadError, ModelNotFoundError, RecapError
from service.metrics import Metrics
from service.runtime.decode_loop import DecodeLoop
from service.runtime.generation import TEXT_TASKS, TextModel
from service.runtime.kv_cache import CacheGraphs
from service.runtime.manifest import Manifest, manifest_from_bytes
from service.runtime.model import LoadedModel
from service.runtime.postprocess import class_labels
from service.runtime.scan import (
    MISSING,
    NAME_PATTERN,
    SERVED_FILES,
    FileHasher,
    Fingerprint,
    VersionFolder,
    scan,
)
from service.runtime.session import ModelSession, SessionConfig, TensorSpec
from service.runtime.stats import new_stats

log = logging.getLogger(__name__)
PLATFORM = "onnxruntime_onnx"
__all__ = ["NAME_PATTERN", "PLATFORM", "Repository"]


class PendingError(ModelLoadError):
    """The folder is caught mid-update (a file missing, model.json's sha256 not yet model.onnx's)."""


class Repository:
    """The versions in service of every model under one folder."""

    def __init__(
        self,
        root: Path,
        config: SessionConfig,
        metrics: Metrics,
        default_batch_limit: int = 0,
        default_concurrency_limit: int = 0,
        *,
        decode_batch_limit: int = 32,
    ):
        self.root = root.resolve()
        self.config = config
        self.metrics = metrics
        self.default_batch_limit = default_batch_limit or None
        self.default_concurrency_limit = default_concurrency_limit or None
        self.decode_batch_limit = decode_batch_limit
        self.hasher = FileHasher()
        self._versions: dict[str, dict[int, LoadedModel]] = {}
        self._default: dict[str, LoadedModel] = {}
        self._by_key: dict[tuple[str, str], LoadedModel] = {}

    # -- loading: any thread ------------------------------------------------------------------------

    def load_version(self, folder: VersionFolder, *, retry_later: bool = False) -> LoadedModel:
        """One version, ready or not. With `retry_later` (the repository is polled) a folder caught
        mid-update is pending rather than failed."""
        name, version, path = folder.name, folder.version, folder.path
        start = time.perf_counter()
        model = LoadedModel(name, version, path, Manifest.bare(), self.metrics.for_model(name, str(version)))
        model.fingerprint = folder.fingerprint
        model.stats = new_stats(self.metrics, name, str(version))
        try:
            onnx_bytes, json_bytes = self._read_files(path)
            read = {"model.onnx": hashlib.sha256(onnx_bytes).hexdigest()}
            read["model.json"] = hashlib.sha256(json_bytes).hexdigest() if json_bytes is not None else MISSING
            model.fingerprint = self._fingerprint(path, read)
            model.manifest = manifest_from_bytes(json_bytes)
            model.batch_limit = model.manifest.max_batch_size or self.default_batch_limit
            model.concurrency_limit = model.manifest.max_concurrency or self.default_concurrency_limit
            expected = model.manifest.sha256
            digest = model.fingerprint[0][1]
            if expected is not None and digest != expected:
                raise PendingError(
                    f"sha256 mismatch: model.json says {expected[:16]}..., "
                    f"model.onnx hashes to {digest[:16]}..."
                )
            session = ModelSession(onnx_bytes, self.config, f"{name} v{version}")
            _check_signature(model.manifest, session)
            _warm_up(session)
            model.session = session
            if model.task in TEXT_TASKS:
                try:
                    model.text = TextModel.from_manifest(model, model.manifest.raw)
                except ValueError as error:
                    raise ModelLoadError(f"cannot generate text: {error}") from error
                self._load_cache_graphs(model, path)
            tokenizer = model.text.tokenizer if model.text is not None else None
            model.class_labels = class_labels(model.task, model.labels, tokenizer)
        except ModelLoadError as error:
            model.session = None
            model.text = None
            model.decoder = None
            model.reason = str(error)
            model.pending = retry_later and isinstance(error, PendingError)
        model.load_seconds = took = time.perf_counter() - start
        result = "success" if model.ready else "pending" if model.pending else "failure"
        self.metrics.model_loads.labels(name, str(version), result).inc()
        if model.ready:
            log.info(
                "loaded %s version %d (%s) on %s in %.0f ms",
                name,
                version,
                "model.json" if model.manifest.has_file else "bare model.onnx",
                ",".join(model.providers),
                took * 1000,
            )
        elif model.pending:
            log.warning("%s version %d is pending (retried on change): %s", name, version, model.reason)
        else:
            log.error("%s version %d failed to load in %.0f ms: %s", name, version, took * 1000, model.reason)
        return model

    def _load_cache_graphs(self, model: LoadedModel, path: Path) -> None:
        """The KV-cache graphs model.json lists (docs/model-repository.md), and the decode loop that
        batches the model's streams over them. A model without them generates with the full-recompute
        loop."""
        record = model.manifest.raw.get("kv_cache")
        if record is None:
            return
        assert model.text is not None
        label = f"{model.name} v{model.version}"
        graphs, digests = CacheGraphs.load(
            record, model.text.kind, lambda file: self._read_extra(path, file), self.config, label
        )
        model.fingerprint = self._fingerprint(path, dict(model.fingerprint) | digests)
        model.decoder = DecodeLoop(model, graphs, self.decode_batch_limit)

    def _fingerprint(self, path: Path, read: dict[str, str]) -> Fingerprint:
        """The scan's fingerprint of a version: the sha256 of the bytes loaded where a file was read,
        of the file on disk (as the scan saw it) where not."""
        return tuple(
            (file, read[file] if file in read else self.hasher.sha256(path / file)) for file in SERVED_FILES
        )

    def _read_extra(self, path: Path, file: str) -> bytes:
        extra = path / file
        if not extra.resolve().is_relative_to(self.root):
            raise ModelLoadError(f"{file} points outside the model repository")
        try:
            return extra.read_bytes()
        except FileNotFoundError as error:
            raise PendingError(f"{file} (named in model.json's kv_cache) is missing") from error
        except OSError as error:
            raise ModelLoadError(f"{file} cannot be read: {error.strerror}") from error

    def _read_files(self, path: Path) -> tuple[bytes, bytes | None]:
        """model.onnx and model.json (None: a bare model), read once: what is checked is what is loaded."""
        onnx_path = path / "model.onnx"
        if not onnx_path.resolve().is_relative_to(self.root):
            raise ModelLoadError("model.onnx points outside the model repository")
        try:
            onnx_bytes = onnx_path.read_bytes()
        except FileNotFoundError as error:
            raise PendingError("model.onnx is missing") from error
        except OSError as error:
            raise ModelLoadError(f"model.onnx cannot be read: {error.strerror}") from error
        json_path = path / "model.json"
        if not json_path.resolve().is_relative_to(self.root):
            raise ModelLoadError("model.json points outside the model repository")
        try:
            json_bytes: bytes | None = json_path.read_bytes()
        except FileNotFoundError:
            json_bytes = None
        return onnx_bytes, json_bytes

    def load_all(self) -> None:
        """Every version folder, loaded in this thread (the start-up of `--model-control-mode none`)."""
        for folders in scan(self.root, self.hasher).values():
            for folder in folders:
                self.install(self.load_version(folder))

    # -- the versions in service: event loop only ---------------------------------------------------

    def install(self, model: LoadedModel) -> LoadedModel | None:
        """Put a loaded version in service (ready or not); returns the entry it replaced."""
        versions = self._versions.setdefault(model.name, {})
        previous = versions.get(model.version)
        versions[model.version] = model
        self._by_key[(model.name, model.version_str)] = model
        self._refresh_default(model.name)
        model.metrics.set_ready(model.ready)
        return previous

    def remove(self, name: str, version: int) -> LoadedModel | None:
        """Take a version out of service; returns it (requests holding it finish on it)."""
        versions = self._versions.get(name)
        if versions is None or version not in versions:
            return None
        removed = versions.pop(version)
        self._by_key.pop((name, removed.version_str), None)
        self.metrics.forget_version(name, removed.version_str)
        if versions:
            self._refresh_default(name)
        else:
            del self._versions[name]
            del self._default[name]
        return removed

    def _refresh_default(self, name: str) -> None:
        """The default version is the highest ready one (the highest of all when none is ready)."""
        versions = self._versions[name]
        ready = [number for number, model in versions.items() if model.ready]
        self._default[name] = versions[max(ready) if ready else max(versions)]

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The model version asked for (the default when `version` is None); 404 error if none."""
        model = self._default.get(name) if version is None else self._by_key.get((name, version))
        if model is not None:
            return model
        if name not in self._default:
            raise ModelNotFoundError(f"unknown model {name[:64]!r}")
        versions = ", ".join(m.version_str for m in self.versions(name))
        raise ModelNotFoundError(f"model {name!r} has no version {version[:16]!r}; versions: {versions}")  # type: ignore[index]

    def served(self, name: str, version: int) -> LoadedModel | None:
        versions = self._versions.get(name)
        return versions.get(version) if versions is not None else None

    def default(self, name: str) -> LoadedModel | None:
        return self._default.get(name)

    def versions(self, name: str) -> list[LoadedModel]:
        if name not in self._versions:
            raise ModelNotFoundError(f"unknown model {name[:64]!r}")
        return [self._versions[name][number] for number in sorted(self._versions[name])]

    def names(self) -> list[str]:
        return sorted(self._versions)

    def models(self) -> list[LoadedModel]:
        return [model for name in self.names() for model in self.versions(name)]


def _check_signature(manifest: Manifest, session: ModelSession) -> None:
    """model.json's inputs and outputs (where it lists them) are the graph's: names, datatypes, ranks."""
    for key, graph_specs in (("inputs", session.inputs), ("outputs", session.outputs)):
        declared = manifest.raw.get(key)
        if not isinstance(declared, list):
            continue
        listed = {item.get("name"): item for item in declared if isinstance(item, dict)}
        graph = {spec.name: spec for spec in graph_specs}
        if set(listed) != set(graph):
            raise ModelLoadError(
                f"model.json's {key} {sorted(map(str, listed))} are not the graph's {sorted(graph)}"
            )
        for name, spec in graph.items():
            item = listed[name]
            shape = item.get("shape")
            same_rank = isinstance(shape, list) and len(shape) == len(spec.dims)
            if item.get("datatype") != spec.datatype or not same_rank:
                raise ModelLoadError(
                    f"model.json's {key[:-1]} {name!r} ({item.get('datatype')} {shape}) is not the graph's "
                    f"({spec.datatype} {spec.shape})"
                )


def _warm_up(session: ModelSession) -> None:
    """One run on an example built from the input specs (every dynamic axis 1, zeros): a graph that
    cannot run fails its load instead of its first request, and the first request is not slower."""
    feeds = {spec.name: _example(spec) for spec in session.inputs}
    try:
        session.run(feeds, session.output_names)
    except (RecapError, RuntimeError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelLoadError(f"the warm-up run failed: {first_line[:300]}") from error


def _example(spec: TensorSpec) -> np.ndarray[Any, Any]:
    shape = [d if isinstance(d, int) else 1 for d in spec.dims]
    if spec.datatype == "BYTES":
        return np.full(shape, b"", dtype=np.object_)
    return np.zeros(shape, dtype=spec.dtype if spec.dtype is not None else np.float32)
