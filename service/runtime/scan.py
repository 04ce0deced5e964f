"""What is on disk: the repository's model folders, their version folders and each version's fingerprint.

A version's fingerprint is the sha256 of each file the server reads from it (model.onnx, model.json and
a text model's KV-cache graphs; nothing else in the folder is read). A file is hashed again only when its
inode, size, mtime or ctime changed, so a scan of an unchanged repository reads no file, and a `touch` (new
mtime, same bytes) is hashed again but changes nothing: a change is decided by content, never by time stamps.

Names and versions are identifiers found by listing the repository, never paths built from a request:
`find_model` looks a requested name up in the listing.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from service.runtime.kv_cache import EXTRA_GRAPH_FILES
from service.runtime.manifest import file_sha256

log = logging.getLogger(__name__)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# The only files the server reads from a version folder: the graph, its manifest, and the KV-cache
# graphs a text model's manifest may name (service.runtime.kv_cache).
SERVED_FILES = ("model.onnx", "model.json", *EXTRA_GRAPH_FILES.values())
MISSING = ""  # the fingerprint entry of a file that is not there
Fingerprint = tuple[tuple[str, str], ...]
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A poll rescans every few seconds: say what is skipped once, not at every scan."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


@dataclass(frozen=True)
class VersionFolder:
    """One `<model>/<version>/` folder as a scan saw it."""

    name: str
    version: int
    path: Path
    fingerprint: Fingerprint

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.version)


class FileHasher:
    """sha256 of files, recomputed only when a file's stat changed (any write changes ctime)."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[tuple[int, int, int, int], str]] = {}

    def sha256(self, path: Path) -> str:
        try:
            stat = path.stat()
        except OSError:
            self._known.pop(path, None)
            return MISSING
        if not path.is_file():
            return MISSING
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        known = self._known.get(path)
        if known is not None and known[0] == key:
            return known[1]
        try:
            digest = file_sha256(path)
        except OSError:
            return MISSING
        self._known[path] = (key, digest)
        return digest

    def forget_missing(self) -> None:
        """Drop cached hashes of files that are gone (removed versions)."""
        for path in [p for p in self._known if not p.exists()]:
            del self._known[path]


def model_names(root: Path) -> list[str]:
    """The model folders of the repository, by name (hidden folders and bad names are skipped)."""
    names = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not NAME_PATTERN.match(entry.name):
            _warn_once(f"skipping {entry.name[:80]!r}: not a model name ({NAME_PATTERN.pattern})")
            continue
        names.append(entry.name)
    return names


def find_model(root: Path, name: str) -> str | None:
    """`name` if it is a model folder of the repository: a request's name is looked up, never joined."""
    if not NAME_PATTERN.match(name):
        return None
    return name if name in model_names(root) else None


def version_folders(root: Path, name: str, hasher: FileHasher) -> list[VersionFolder]:
    """The positive integer version folders of one model (hidden staging folders are not versions)."""
    model_dir = root / name
    folders = []
    try:
        entries = list(os.scandir(model_dir))
    except OSError:
        return []
    for entry in entries:
        if not (entry.is_dir() and entry.name.isdigit() and entry.name == str(int(entry.name))):
            continue
        number = int(entry.name)
        if number <= 0:
            continue
        path = model_dir / entry.name
        fingerprint = tuple((file, hasher.sha256(path / file)) for file in SERVED_FILES)
        folders.append(VersionFolder(name, number, path, fingerprint))
    return sorted(folders, key=lambda f: f.version)


def scan(root: Path, hasher: FileHasher, names: list[str] | None = None) -> dict[str, list[VersionFolder]]:
    """Every model (or the `names` asked for) with its version folders; models without one are left out."""
    found = {}
    for name in model_names(root) if names is None else names:
        folders = version_folders(root, name, hasher)
        if folders:
            found[name] = folders
        else:
            _warn_once(f"skipping {name}: no positive integer version folder")
    return found
