"""model.json, parsed: the facts the server uses (labels, task, limits, tokenizer, sha256).

A bare model.onnx has no model.json; `Manifest.bare()` stands in for it and everything is read from
the graph. The whole document stays available as `raw` for model cards and the generation code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from service.errors import ModelLoadError

TASKS = (
    "regression",
    "binary_classification",
    "multiclass_classification",
    "sequence_classification",
    "language_model",
    "seq2seq",
    "generator",
    "discriminator",
)


@dataclass(frozen=True)
class Manifest:
    """The parts of model.json the server acts on."""

    task: str | None = None
    description: str = ""
    labels: list[str] | None = None
    feature_names: list[str] | None = None
    max_batch_size: int | None = None
    max_concurrency: int | None = None
    max_sequence_length: int | None = None
    tokenizer: dict[str, Any] | None = None
    sha256: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def bare(cls) -> Manifest:
        return cls()

    @property
    def has_file(self) -> bool:
        return bool(self.raw)


def _typed(raw: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ModelLoadError(f"model.json: {key!r} must be {what}")
    return value


def _string_list(raw: dict[str, Any], key: str) -> list[str] | None:
    value = _typed(raw, key, list, "a list of strings")
    if value is not None and not all(isinstance(item, str) for item in value):
        raise ModelLoadError(f"model.json: {key!r} must be a list of strings")
    return value


def _positive(raw: dict[str, Any], key: str) -> int | None:
    value = _typed(raw, key, int, "a positive integer")
    if value is not None and value < 1:
        raise ModelLoadError(f"model.json: {key!r} must be a positive integer, got {value}")
    return value


def parse_manifest(raw: object) -> Manifest:
    """Validate the keys the server uses; other keys pass through untouched in `raw`."""
    if not isinstance(raw, dict):
        raise ModelLoadError("model.json must hold a JSON object")
    task = _typed(raw, "task", str, "a string")
    if task is not None and task not in TASKS:
        raise ModelLoadError(f"model.json: unknown task {task!r}; expected one of {', '.join(TASKS)}")
    sha256 = _typed(raw, "sha256", str, "a hex string")
    return Manifest(
        task=task,
        description=_typed(raw, "description", str, "a string") or "",
        labels=_string_list(raw, "labels"),
        feature_names=_string_list(raw, "feature_names"),
        max_batch_size=_positive(raw, "max_batch_size"),
        max_concurrency=_positive(raw, "max_concurrency"),
        max_sequence_length=_positive(raw, "max_sequence_length"),
        tokenizer=_typed(raw, "tokenizer", dict, "an object"),
        sha256=sha256.lower() if sha256 else None,
        raw=raw,
    )


def manifest_from_bytes(document: bytes | None) -> Manifest:
    """model.json's bytes parsed (None: no model.json, the bare manifest)."""
    if document is None:
        return Manifest.bare()
    try:
        raw = orjson.loads(document)
    except orjson.JSONDecodeError as error:
        raise ModelLoadError(f"model.json is not valid JSON: {error}") from error
    return parse_manifest(raw)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
