"""API keys: the keys file, its scopes, constant-time lookup and rotation without a restart.

The file holds one key per line as `<scopes> <key>`: scopes a comma-separated subset of `inference`,
`admin` and `metrics`; the key as it is sent, or `sha256:<hex>` of it, so the file need not hold the
secret itself. `#` starts a comment. Only digests are kept in memory: a presented key is hashed once and
compared with every stored digest by `hmac.compare_digest`, so the time taken says nothing about how
close a guess came. No key, digest or line of the file is ever logged or echoed.

`KeyStore.reload_if_changed()` re-reads the file when what the path points at changes (inode, size or
modification time: a Kubernetes Secret is rotated by swapping a symlink, with no signal), and
`reload()` re-reads it unconditionally (SIGHUP). A file that no longer parses keeps the keys in force and
logs why: a half-written rotation must not lock every client out or let every client in.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
SCOPES = ("inference", "admin", "metrics")
LISTED = ", ".join(SCOPES)
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
MIN_KEY_LENGTH = 16


class KeysFileError(ValueError):
    """The keys file cannot be used; the message names the line, never its content."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    digest: bytes  # sha256 of the key
    scopes: frozenset[str]


def parse_keys(text: str) -> list[StoredKey]:
    keys: list[StoredKey] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise KeysFileError(f"line {number}: expected `<scopes> <key>`, got {len(parts)} fields")
        scope_text, key = parts
        scopes = frozenset(scope_text.split(","))
        unknown = sorted(scopes - set(SCOPES))
        if unknown or not scopes:
            shown = ", ".join(s[:16] for s in unknown) or "none"
            raise KeysFileError(
                f"line {number}: unknown scope(s) {shown}; expected some of {', '.join(SCOPES)}"
            )
        if key.startswith("sha256:"):
            hexdigest = key.removeprefix("sha256:")
            if not _HEX_DIGEST.fullmatch(hexdigest):
                raise KeysFileError(f"line {number}: sha256: must be followed by 64 hex digits")
            digest = bytes.fromhex(hexdigest)
        elif len(key) < MIN_KEY_LENGTH:
            raise KeysFileError(f"line {number}: a key needs at least {MIN_KEY_LENGTH} characters")
        else:
            digest = hashlib.sha256(key.encode()).digest()
        keys.append(StoredKey(digest, scopes))
    if not keys:
        raise KeysFileError("the file holds no key")
    return keys


def _stamp(path: Path) -> tuple[int, int, int, int]:
    info = os.stat(path)  # follows symlinks: a swapped Secret symlink shows as a new inode
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


class KeyStore:
    """The keys in force, read from `path`; `scopes_of` is the check each request makes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: tuple[StoredKey, ...] = ()
        # What the path pointed at when last read, or tried: a failed read is not retried (nor logged
        # again) until the file changes once more.
        self._seen: tuple[int, int, int, int] | None = None
        self.reload(startup=True)

    def __len__(self) -> int:
        return len(self._keys)

    def scopes_of(self, key: str) -> frozenset[str] | None:
        """The scopes of a presented key, or None for a key the file does not hold."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        found: frozenset[str] | None = None
        for stored in self._keys:  # every entry is compared: no early exit to time
            if hmac.compare_digest(stored.digest, digest):
                found = stored.scopes
        return found

    def reload(self, startup: bool = False) -> bool:
        """Re-read the file; True when the keys in force changed. At start-up an unusable file is fatal."""
        try:
            self._seen = None
            self._seen = _stamp(self.path)
            keys = tuple(parse_keys(self.path.read_text()))
        except (OSError, UnicodeDecodeError, KeysFileError) as error:
            reason = error if isinstance(error, KeysFileError) else type(error).__name__
            if startup:
                raise KeysFileError(f"API keys file {self.path}: {reason}") from error
            log.error(
                "API keys file %s not reloaded (%s); the %d key(s) in force stay",
                self.path,
                reason,
                len(self),
            )
            return False
        changed = keys != self._keys
        self._keys = keys
        if changed and not startup:
            log.info("API keys reloaded from %s: %d key(s)", self.path, len(keys))
        return changed

    def reload_if_changed(self) -> bool:
        """Poll: re-read only when what the path points at changed since it was last read."""
        try:
            stamp: tuple[int, int, int, int] | None = _stamp(self.path)
        except OSError:
            stamp = None  # mid-rotation the link may point nowhere for a moment
        return self.reload() if stamp != self._seen else False


async def watch(keys: KeyStore, interval_s: float) -> None:
    """Reload `keys` whenever the file changes (a Kubernetes Secret rotates without a signal)."""
    while True:
        await asyncio.sleep(interval_s)
        keys.reload_if_changed()


# -- python -m service.keys: new keys, and the secrets of the compose stack ----------------------------


def new_key() -> str:
    return secrets.token_urlsafe(32)


def stored_form(key: str) -> str:
    """The keys-file spelling of a key that keeps only its digest on disk."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def write_compose_secrets(folder: Path) -> str:
    """`folder`/api-keys (the server's file: digests only) and `folder`/load-key (the Locust users'
    inference key). Returns the new all-scope key, which is written nowhere: keep it."""
    existing = [name for name in ("api-keys", "load-key") if (folder / name).exists()]
    if existing:
        raise FileExistsError(f"{folder} already holds {', '.join(existing)}: remove them to start anew")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)  # the files are read through the bind mounts by the containers' own user
    operator, load = new_key(), new_key()
    (folder / "api-keys").write_text(
        "# recap-serve API keys (python -m service.keys compose-secrets): <scopes> <key or sha256:hex>\n"
        f"inference,admin,metrics {stored_form(operator)}  # the operator\n"
        f"inference {stored_form(load)}  # the Locust users (load-key)\n"
    )
    (folder / "load-key").write_text(load + "\n")
    for name in ("api-keys", "load-key"):
        (folder / name).chmod(0o644)
    return operator


def main(argv: list[str] | None = None) -> int:
    import argparse  # noqa: PLC0415 (the command line only)

    parser = argparse.ArgumentParser(prog="python -m service.keys", description="recap-serve API keys")
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="a new random key, and its line for the keys file")
    new.add_argument("--scopes", default="inference", help=f"comma-separated, of {LISTED}")
    compose = commands.add_parser("compose-secrets", help="write the compose stack's secrets into FOLDER")
    compose.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.command == "new":
        scopes = args.scopes
        parse_keys(f"{scopes} {'x' * MIN_KEY_LENGTH}")  # the scopes are valid
        key = new_key()
        print(f"key (give it to the client): {key}")
        print(f"keys-file line: {scopes} {stored_form(key)}")
        return 0
    try:
        operator = write_compose_secrets(args.folder)
    except FileExistsError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"wrote {args.folder}/api-keys and {args.folder}/load-key")
    print(f"operator key (all scopes; stored only as its digest, keep it now): {operator}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
