"""service.keys: the keys file format, hashed keys, scopes, rotation, and what never reaches a message."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from service.keys import KeysFileError, KeyStore, parse_keys

INFERENCE = "inference-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdefghij"
HASHED = "hashed-key-0123456789abcdefghij"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_scopes_plain_and_hashed_keys_and_comments(tmp_path: Path) -> None:
    digest = hashlib.sha256(HASHED.encode()).hexdigest()
    keys = KeyStore(write(tmp_path / "keys", f"""
# clients
inference {INFERENCE}   # the load test
admin,metrics {ADMIN}
inference,admin,metrics sha256:{digest}
"""))  # fmt: skip
    assert len(keys) == 3
    assert keys.scopes_of(INFERENCE) == {"inference"}
    assert keys.scopes_of(ADMIN) == {"admin", "metrics"}
    assert keys.scopes_of(HASHED) == {"inference", "admin", "metrics"}
    assert keys.scopes_of(f"sha256:{digest}") is None  # the digest itself is not a key
    assert keys.scopes_of(INFERENCE[:-1]) is None and keys.scopes_of("") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no key"),
        ("# only a comment\n", "holds no key"),
        ("inference\n", "line 1: expected `<scopes> <key>`, got 1 fields"),
        (f"inference {INFERENCE} extra\n", "got 3 fields"),
        (f"\ninference,root {INFERENCE}\n", "line 2: unknown scope"),
        (f"{INFERENCE} inference\n", "line 1: unknown scope"),  # columns swapped: the key is not echoed
        ("inference short\n", "at least 16 characters"),
        ("inference sha256:abc\n", "64 hex digits"),
    ],
)
def test_a_bad_file_names_the_line_and_never_the_key(text: str, message: str) -> None:
    with pytest.raises(KeysFileError, match=message) as info:
        parse_keys(text)
    assert INFERENCE not in str(info.value)


def test_a_missing_or_bad_file_is_fatal_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(KeysFileError, match="FileNotFoundError"):
        KeyStore(tmp_path / "absent")
    with pytest.raises(KeysFileError, match="holds no key"):
        KeyStore(write(tmp_path / "empty", "\n"))


def test_rotation_by_rename_and_a_broken_file_keeps_the_keys_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "keys", f"inference {INFERENCE}\n")
    keys = KeyStore(path)
    assert keys.reload_if_changed() is False  # nothing changed: not even re-read
    fresh = write(tmp_path / "keys.new", f"admin {ADMIN}\n")
    os.replace(fresh, path)  # an atomic rename, as rotation tools do
    assert keys.reload_if_changed() is True
    assert keys.scopes_of(INFERENCE) is None and keys.scopes_of(ADMIN) == {"admin"}
    broken = write(tmp_path / "keys.broken", f"admin {ADMIN} oops\n")
    os.replace(broken, path)
    with caplog.at_level(logging.ERROR, logger="service.keys"):
        assert keys.reload_if_changed() is False
        assert keys.reload_if_changed() is False  # the same broken file: logged once
    assert keys.scopes_of(ADMIN) == {"admin"}, "a half-written rotation locks nobody out"
    (line,) = [r.getMessage() for r in caplog.records]
    assert "not reloaded" in line and "1 key(s) in force stay" in line and ADMIN not in line


def test_a_kubernetes_secret_swaps_a_symlink(tmp_path: Path) -> None:
    """A mounted Secret is `<file> -> ..data/<file>`, and rotation re-points `..data` at a new folder."""
    for version, key in (("v1", INFERENCE), ("v2", ADMIN)):
        (tmp_path / version).mkdir()
        write(tmp_path / version / "api-keys", f"inference {key}\n")
    os.symlink("v1", tmp_path / "..data")
    os.symlink("..data/api-keys", tmp_path / "api-keys")
    keys = KeyStore(tmp_path / "api-keys")
    assert keys.scopes_of(INFERENCE) == {"inference"}
    os.symlink("v2", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert keys.reload_if_changed() is True
    assert keys.scopes_of(INFERENCE) is None and keys.scopes_of(ADMIN) == {"inference"}
