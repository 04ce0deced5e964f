"""The committed gRPC message code is what `make grpc-stubs` generates from proto/open_inference.proto,
and its wire format is the protocol's (tritonclient's inference.* messages parse it, and it theirs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.servers import REPO

GENERATED = REPO / "service" / "api" / "grpc_messages"


def test_the_committed_messages_are_generated_from_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev dependency) generates the messages")
    argv = [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'proto'}"]
    argv += [
        f"--python_out={tmp_path}",
        f"--pyi_out={tmp_path}",
        str(REPO / "proto" / "open_inference.proto"),
    ]
    subprocess.run(argv, check=True, timeout=60)
    for name in ("open_inference_pb2.py", "open_inference_pb2.pyi"):
        assert (tmp_path / name).read_text() == (GENERATED / name).read_text(), "run `make grpc-stubs`"


def test_every_field_matches_the_protocol_messages_tritonclient_sends() -> None:
    """Field numbers and types against tritonclient's own compiled protocol (package inference; ours is
    recap.oip, so both live in one process)."""
    reason = "tritonclient[grpc] is a dev dependency"
    theirs = pytest.importorskip("tritonclient.grpc.service_pb2", reason=reason)
    from service.api.grpc_messages import open_inference_pb2 as ours  # noqa: PLC0415

    def fields(message: Any) -> dict[str, tuple[int, int, bool]]:
        return {f.name: (f.number, f.type, f.is_repeated) for f in message.fields}

    checked = 0
    for name, message in ours.DESCRIPTOR.message_types_by_name.items():
        other = theirs.DESCRIPTOR.message_types_by_name[name]
        pairs = [(message, other)] + [
            (nested, other.nested_types_by_name[nested.name])
            for nested in message.nested_types
            if not nested.GetOptions().map_entry
        ]
        for mine, their in pairs:
            expected = fields(their)
            assert {k: expected.get(k) for k in fields(mine)} == fields(mine), (name, mine.name)
            checked += 1
    assert checked >= 30
