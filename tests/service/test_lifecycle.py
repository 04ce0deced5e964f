"""Model control in process: scans, loads, swaps, removals, pending and failed folders, version policy,
the release of a retired session, and the explicit mode's name checks."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from service.errors import InvalidInputError, ModelNotFoundError
from service.metrics import Metrics
from service.runtime.lifecycle import ControlMode, ModelControl, VersionPolicy
from service.runtime.repository import Repository
from service.runtime.session import SessionConfig
from tests.helpers.onnx_models import classifier, write_model

T = TypeVar("T")
MANIFEST = {"task": "multiclass_classification", "labels": ["a", "b", "c"]}


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def control_of(root: Path, mode: ControlMode = "poll", policy: str = "all") -> tuple[ModelControl, Metrics]:
    metrics = Metrics()
    repository = Repository(root, SessionConfig(), metrics)
    return ModelControl(repository, mode, VersionPolicy.parse(policy), 0.05), metrics


def loads(metrics: Metrics, model: str, version: str, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "recap_model_loads_total", {"model": model, "version": version, "result": result}
    )
    return value or 0.0


def test_new_changed_touched_and_removed_versions(tmp_path: Path) -> None:
    write_model(tmp_path, "m", classifier(4, 3, seed=1), manifest=MANIFEST)

    async def scenario() -> None:
        control, metrics = control_of(tmp_path)
        await control.start()
        repository = control.repository
        assert repository.get("m").version == 1
        write_model(tmp_path, "m", classifier(4, 3, seed=2), version=2, manifest=MANIFEST)
        await control.sync(None)
        assert repository.get("m").version == 2
        first = repository.get("m", "2")
        # Same bytes, new time stamps: no reload.
        os.utime(first.path / "model.onnx")
        await control.sync(None)
        assert repository.get("m", "2") is first and loads(metrics, "m", "2", "success") == 1
        # New bytes in the same version folder: loaded again and swapped in.
        write_model(tmp_path, "m", classifier(4, 3, seed=3), version=2, manifest=MANIFEST)
        await control.sync(None)
        second = repository.get("m", "2")
        assert second is not first and loads(metrics, "m", "2", "success") == 2
        await asyncio.sleep(0.2)
        assert first.session is None and first.reason == "replaced by new files"  # released: no holder
        shutil.rmtree(tmp_path / "m" / "2")
        await control.sync(None)
        assert repository.get("m").version == 1 and [m.version for m in repository.versions("m")] == [1]
        shutil.rmtree(tmp_path / "m")
        await control.sync(None)
        assert repository.names() == []
        await control.stop()

    run(scenario())


def test_a_broken_version_never_replaces_a_ready_one(tmp_path: Path) -> None:
    write_model(tmp_path, "m", classifier(4, 3, seed=1), manifest=MANIFEST)

    async def scenario() -> None:
        control, metrics = control_of(tmp_path)
        await control.start()
        repository = control.repository
        write_model(tmp_path, "m", b"not onnx", version=3, manifest=MANIFEST)
        await control.sync(None)
        assert repository.get("m").version == 1  # the highest *ready* version
        broken = repository.get("m", "3")
        assert broken.state == "UNAVAILABLE" and "could not load" in (broken.reason or "")
        entries = {(e.name, e.version): e for e in control.index()}
        assert entries[("m", "3")].state == "UNAVAILABLE" and entries[("m", "1")].state == "READY"
        await control.sync(None)  # the same bytes are not tried again
        assert loads(metrics, "m", "3", "failure") == 1
        # Version 1 replaced by a corrupt copy: the old session keeps serving, the failure is shown.
        serving = repository.get("m", "1")
        (tmp_path / "m" / "1" / "model.json").unlink()
        (tmp_path / "m" / "1" / "model.onnx").write_bytes(b"garbage")
        await control.sync(None)
        assert repository.get("m", "1") is serving and serving.ready
        assert "new files failed" in (serving.update_problem or "")
        await control.stop()

    run(scenario())


def test_a_folder_caught_mid_update_is_pending_and_loads_once_complete(tmp_path: Path) -> None:
    write_model(tmp_path, "m", classifier(4, 3, seed=1), manifest=MANIFEST)

    async def scenario() -> None:
        control, metrics = control_of(tmp_path)
        await control.start()
        repository = control.repository
        # model.json of the new bytes arrived, model.onnx not yet: sha256 mismatch.
        onnx_path = write_model(tmp_path, "m", classifier(4, 3, seed=2), version=2, manifest=MANIFEST)
        new_bytes = onnx_path.read_bytes()
        onnx_path.write_bytes(classifier(4, 3, seed=9).SerializeToString())
        await control.sync(None)
        pending = repository.get("m", "2")
        assert pending.state == "PENDING" and "sha256 mismatch" in (pending.reason or "")
        assert repository.get("m").version == 1 and loads(metrics, "m", "2", "pending") == 1
        onnx_path.write_bytes(new_bytes)  # the copy completes
        await control.sync(None)
        assert repository.get("m").version == 2 and repository.get("m", "2").ready
        # A missing model.onnx is pending too.
        (tmp_path / "m" / "3").mkdir()
        await control.sync(None)
        assert repository.get("m", "3").state == "PENDING" and repository.get("m").version == 2
        await control.stop()

    run(scenario())


def test_a_retired_session_is_released_only_after_its_requests_finish(tmp_path: Path) -> None:
    write_model(tmp_path, "m", classifier(4, 3, seed=1), manifest=MANIFEST)

    async def scenario() -> None:
        control, _ = control_of(tmp_path)
        await control.start()
        old = control.repository.get("m")
        old.in_progress = 1  # a request holds it
        write_model(tmp_path, "m", classifier(4, 3, seed=2), manifest=MANIFEST)
        await control.sync(None)
        assert control.repository.get("m") is not old
        await asyncio.sleep(0.2)
        assert old.ready  # still serving its request
        old.in_progress = 0
        await asyncio.sleep(0.2)
        assert not old.ready
        await control.stop()

    run(scenario())


def test_latest_n_keeps_the_last_ready_version_while_the_newest_are_broken(tmp_path: Path) -> None:
    for version in (1, 2):
        write_model(tmp_path, "m", classifier(4, 3, seed=version), version=version, manifest=MANIFEST)

    async def scenario() -> None:
        control, _ = control_of(tmp_path, policy="latest:1")
        await control.start()
        repository = control.repository
        assert [m.version for m in repository.versions("m")] == [2]
        write_model(tmp_path, "m", b"broken", version=3, manifest=MANIFEST)
        await control.sync(None)
        assert [m.version for m in repository.versions("m")] == [2, 3]  # 2 stays: 3 is not ready
        assert repository.get("m").version == 2
        write_model(tmp_path, "m", classifier(4, 3, seed=3), version=3, manifest=MANIFEST)
        await control.sync(None)
        assert [m.version for m in repository.versions("m")] == [3]
        await control.stop()

    run(scenario())


@pytest.mark.parametrize("bad", ["../x", "a/b", "x" * 300, "..", "UPPER"])
def test_explicit_names_are_identifiers_never_paths(tmp_path: Path, bad: str) -> None:
    (tmp_path / "repo").mkdir()
    write_model(tmp_path / "repo", "m", classifier(4, 3), manifest=MANIFEST)
    write_model(tmp_path, "x", classifier(4, 3), manifest=MANIFEST)  # outside the repository

    async def scenario() -> None:
        control, _ = control_of(tmp_path / "repo", mode="explicit")
        await control.start()
        assert control.repository.names() == []
        with pytest.raises(InvalidInputError):
            await control.load(bad)
        with pytest.raises(ModelNotFoundError):
            await control.load("nope")
        assert control.repository.names() == []
        model = await control.load("m")
        assert model.ready
        await control.unload("m")
        assert control.repository.names() == []
        assert [e.document() for e in control.index()] == [
            {"name": "m", "state": "UNAVAILABLE", "reason": "unloaded"}
        ]
        await control.stop()

    run(scenario())


def test_load_and_unload_need_explicit_mode(tmp_path: Path) -> None:
    write_model(tmp_path, "m", classifier(4, 3), manifest=MANIFEST)

    async def scenario() -> None:
        for mode in ("none", "poll"):
            control, _ = control_of(tmp_path, mode=mode)
            await control.start()
            with pytest.raises(InvalidInputError, match=f"--model-control-mode {mode}"):
                await control.load("m")
            with pytest.raises(InvalidInputError, match="explicit"):
                await control.unload("m")
            await control.stop()

    run(scenario())


def test_a_graph_that_does_not_match_model_json_does_not_load(tmp_path: Path) -> None:
    manifest = {**MANIFEST, "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]}
    write_model(tmp_path, "m", classifier(4, 3), manifest=manifest)
    control, _ = control_of(tmp_path)
    run(control.start())
    model = control.repository.get("m")
    assert not model.ready and "not the graph's" in (model.reason or "")
    run(control.stop())


@pytest.mark.parametrize("policy", ["latest:0", "latest", "newest:2", "latest:-1"])
def test_version_policy_spelling(policy: str) -> None:
    with pytest.raises(ValueError, match="all or latest:N"):
        VersionPolicy.parse(policy)
