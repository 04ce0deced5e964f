"""Model control: which versions are in service, and how they change while the server serves.

`--model-control-mode`:
- `none`: every version folder is loaded at start-up, and the repository is not read again;
- `poll`: the same start, then a rescan every `--repository-poll-seconds`: new version folders are
  loaded, removed ones taken out of service, and a version whose model.onnx or model.json changed (by
  sha256) is loaded again;
- `explicit`: only the models `--load-model` names (`*`: all) at start-up, then only what the
  repository API asks (`load`/`unload`).

Triton's order, which its issue 2076 taught it: load the new version first (a background thread, so
serving never stops; checked and warmed up by `Repository.load_version`), swap it in, and only then
take the old one out. Requests already running on the old session finish on it; the session is
released once no request holds it. A version that fails to load never replaces a ready one: the old
copy keeps serving and the failure is its `update_problem`. A folder caught mid-update is pending,
not failed; like a failed load it is tried again when a scan sees its files change (retrying the same
bytes could only fail the same way).

`--version-policy`: `all` (every version folder) or `latest:N` (the N highest, as Triton's
`version_policy`); if none of those N is ready, the highest ready version still on disk keeps serving,
so a broken publish never leaves the model without a version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from service.errors import InvalidInputError, ModelNotFoundError
from service.runtime.model import LoadedModel
from service.runtime.repository import Repository
from service.runtime.scan import NAME_PATTERN, Fingerprint, VersionFolder, find_model, model_names, scan

log = logging.getLogger(__name__)
ControlMode = Literal["none", "poll", "explicit"]
POLICY_PATTERN = re.compile(r"^(all|latest:[1-9][0-9]{0,5})$")
RELEASE_CHECK_SECONDS = 0.05  # how often a retired version looks whether its last request finished


@dataclass(frozen=True)
class VersionPolicy:
    latest: int | None = None  # None: every version

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        if not POLICY_PATTERN.match(text):
            raise ValueError(f"version policy {text[:32]!r}: expected all or latest:N (N >= 1)")
        return cls(None if text == "all" else int(text.split(":")[1]))

    def wanted(self, folders: list[VersionFolder]) -> list[VersionFolder]:
        return folders if self.latest is None else folders[-self.latest :]


@dataclass(frozen=True)
class IndexEntry:
    """One row of Triton's repository index."""

    name: str
    version: str | None
    state: str
    reason: str | None

    def document(self) -> dict[str, str]:
        row = {"name": self.name}
        if self.version is not None:
            row["version"] = self.version
        row["state"] = self.state
        if self.reason:
            row["reason"] = self.reason
        return row


class ModelControl:
    """Keeps the repository's versions in service in line with the disk (see the module docstring)."""

    def __init__(
        self,
        repository: Repository,
        mode: ControlMode,
        policy: VersionPolicy,
        poll_seconds: float,
        startup_models: tuple[str, ...] = (),
    ) -> None:
        self.repository = repository
        self.mode = mode
        self.policy = policy
        self.poll_seconds = poll_seconds
        self.startup_models = startup_models
        self._lock = asyncio.Lock()  # one change at a time: a scan, a load, an unload
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="model-load")
        self._failed_attempts: dict[tuple[str, int], Fingerprint] = {}  # files that did not load
        self._unloaded: set[str] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._started = False  # the start-up load logs each load once (the loader's line), no swaps

    # -- start and stop -----------------------------------------------------------------------------

    async def start(self) -> None:
        """The start-up load; in poll mode, then the rescans."""
        if self.mode != "explicit" or "*" in self.startup_models:
            await self.sync(None)
        else:
            for name in self.startup_models:
                if find_model(self.repository.root, name) is None:
                    log.error("--load-model %s: no such model in %s", name[:80], self.repository.root)
                    continue
                await self.sync([name])
        self._started = True
        if self.mode == "poll":
            self._poller = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        self._loader.shutdown(wait=False, cancel_futures=True)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.sync(None)
            except Exception:  # a scan that failed must not end the polling
                log.exception("repository scan failed; trying again in %s s", self.poll_seconds)

    # -- the repository API (explicit mode) ---------------------------------------------------------

    def require_explicit(self, action: str) -> None:
        if self.mode != "explicit":
            raise InvalidInputError(
                f"cannot {action} a model: the server runs with --model-control-mode {self.mode}; "
                "load and unload need --model-control-mode explicit"
            )

    def lookup(self, name: str) -> str:
        """A requested name, found in the repository's listing (a name is never used as a path)."""
        if not NAME_PATTERN.match(name):
            raise InvalidInputError(f"{name[:64]!r} is not a model name (expected {NAME_PATTERN.pattern})")
        found = find_model(self.repository.root, name)
        if found is None and name not in self.repository.names():
            raise ModelNotFoundError(f"no model {name!r} in the model repository")
        return found or name

    async def load(self, name: str) -> LoadedModel:
        """Load (or reload) every version of one model; returns its default version, ready (a load that
        leaves it without a ready version is a 400 with the reason, for every protocol)."""
        self.require_explicit("load")
        name = self.lookup(name)
        for key in [key for key in self._failed_attempts if key[0] == name]:
            del self._failed_attempts[key]  # asked for explicitly: try the same files again
        await self.sync([name])
        self._unloaded.discard(name)
        model = self.repository.default(name)
        if model is None:
            raise ModelNotFoundError(f"model {name!r} has no version folder to load")
        if not model.ready:
            raise InvalidInputError(f"failed to load {model.name!r} version {model.version}: {model.reason}")
        return model

    async def unload(self, name: str) -> None:
        self.require_explicit("unload")
        name = self.lookup(name)
        async with self._lock:
            if name not in self.repository.names():
                return
            for model in self.repository.versions(name):
                self._take_out(model, "unloaded")
            self._unloaded.add(name)

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every version in service, then every model on disk that is not (Triton lists both)."""
        served = self.repository.names()
        entries = [
            IndexEntry(m.name, m.version_str, m.state, m.status_reason) for m in self.repository.models()
        ]
        for name in sorted(set(model_names(self.repository.root)) - set(served)):
            reason = "unloaded" if name in self._unloaded else "not loaded"
            entries.append(IndexEntry(name, None, "UNAVAILABLE", reason))
        return [e for e in entries if e.state == "READY"] if ready_only else entries

    # -- bringing the versions in service in line with the disk -------------------------------------

    async def sync(self, names: list[str] | None) -> None:
        """Scan `names` (None: the whole repository) and load, swap and remove to match it."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            repository = self.repository
            root, hasher = repository.root, repository.hasher
            scanned = await loop.run_in_executor(self._loader, scan, root, hasher, names)
            targets = names if names is not None else sorted(set(scanned) | set(repository.names()))
            for name in targets:
                await self._sync_model(name, scanned.get(name, []))
            repository.hasher.forget_missing()

    async def _sync_model(self, name: str, folders: list[VersionFolder]) -> None:
        loop = asyncio.get_running_loop()
        wanted = self.policy.wanted(folders)
        for folder in wanted:  # first load and swap in what is new ...
            current = self.repository.served(name, folder.version)
            if current is not None and current.fingerprint == folder.fingerprint:
                current.update_problem = None  # the files it was loaded from are back
                continue
            if self._failed_attempts.get(folder.key) == folder.fingerprint:
                continue  # these very files did not load; wait for them to change
            candidate = await loop.run_in_executor(self._loader, self._load, folder)
            self._put_in_service(candidate, current, folder)
        # ... then take out what is gone, never before its replacement serves.
        keep = {folder.version for folder in wanted} | self._fallback(name, folders, wanted)
        for model in list(self.repository.versions(name)) if name in self.repository.names() else []:
            if model.version not in keep:
                self._take_out(model, "removed from the repository")

    def _load(self, folder: VersionFolder) -> LoadedModel:
        """In the loader thread; a polled repository will look again, so mid-update is pending."""
        return self.repository.load_version(folder, retry_later=self.mode == "poll")

    def _put_in_service(
        self, candidate: LoadedModel, current: LoadedModel | None, folder: VersionFolder
    ) -> None:
        if not candidate.ready:
            self._failed_attempts[folder.key] = folder.fingerprint
            if current is not None and current.ready:
                kind = "pending" if candidate.pending else "failed"
                current.update_problem = f"new files {kind}: {candidate.reason}; the previous copy serves"
                log.warning("%s version %d: %s", current.name, current.version, current.update_problem)
                return
        else:
            self._failed_attempts.pop(folder.key, None)
        previous = self.repository.install(candidate)
        default = self.repository.default(candidate.name)
        if candidate.ready and self._started:
            log.info(
                "%s version %d in service%s after a %.0f ms load; default version %s",
                candidate.name,
                candidate.version,
                " (swapped for the previous copy)" if previous is not None and previous.ready else "",
                candidate.load_seconds * 1000,
                default.version_str if default is not None else "none",
            )
        if previous is not None:
            self._retire(previous, "replaced by new files")

    def _fallback(self, name: str, folders: list[VersionFolder], wanted: list[VersionFolder]) -> set[int]:
        """With latest:N and none of the N ready: the highest ready version still on disk stays."""
        if len(wanted) == len(folders):
            return set()
        wanted_numbers = {folder.version for folder in wanted}
        served = [self.repository.served(name, number) for number in wanted_numbers]
        if any(model is not None and model.ready for model in served):
            return set()
        on_disk = {folder.version for folder in folders}
        older = [
            m.version
            for m in (self.repository.versions(name) if name in self.repository.names() else [])
            if m.ready and m.version in on_disk and m.version not in wanted_numbers
        ]
        return {max(older)} if older else set()

    def _take_out(self, model: LoadedModel, why: str) -> None:
        removed = self.repository.remove(model.name, model.version)
        if removed is None:
            return
        default = self.repository.default(model.name)
        log.info(
            "%s version %d out of service (%s); default version %s",
            model.name,
            model.version,
            why,
            default.version_str if default is not None else "none",
        )
        self._retire(removed, why)

    def _retire(self, model: LoadedModel, why: str) -> None:
        """Release a version's session once the requests that hold it have finished."""
        if model.session is None:
            return
        task = asyncio.create_task(self._release_when_idle(model, why))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _release_when_idle(self, model: LoadedModel, why: str) -> None:
        start = time.perf_counter()
        holding = model.in_progress
        while model.in_progress > 0:
            await asyncio.sleep(RELEASE_CHECK_SECONDS)
        model.release(why)
        log.info(
            "released the session of %s version %d after %.0f ms (%d request(s) finished on it)",
            model.name,
            model.version,
            (time.perf_counter() - start) * 1000,
            holding,
        )
