"""`--workers N`: one supervisor process and N worker processes serving one port.

The supervisor loads no model. It binds the port once (a shared listening socket every worker accepts
on, the default) or leaves each worker to bind its own with SO_REUSEPORT (`--reuse-port`: the kernel
spreads new connections evenly, but the connections queued on a worker that dies are dropped with it).
It starts the workers (spawned: each loads the repository once, after the start), restarts one that
dies, forwards SIGTERM (each worker drains: `service.server`), SIGINT and SIGHUP (keys reload) to every
worker, and exits 0 once they have all stopped.

Metrics: the supervisor gives the workers a fresh PROMETHEUS_MULTIPROC_DIR (emptied at start, removed at
exit when it made it) and marks a dead worker's live gauges dead; its counters stay, so no count is lost.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from prometheus_client import multiprocess

from service.metrics import MULTIPROCESS_ENV
from service.settings import Settings

log = logging.getLogger(__name__)
CHECK_SECONDS = 0.2  # how often the supervisor looks for a dead worker
STARTUP_FAILURE = 3  # a worker's exit code when it could not start (uvicorn's): no restart loop
BACKLOG = 2048


def listening_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def worker_main(settings: Settings, listener: socket.socket | None, listen: bool = True) -> None:
    """One server process (a worker, or the whole server with --workers 1): its own app, repository and
    event loop; on `listener`, on its own SO_REUSEPORT socket, or (`listen=False`) on uvicorn's own."""
    # Imported here: the supervisor never needs the app, onnxruntime or uvicorn.
    import uvicorn  # noqa: PLC0415

    from service import logs  # noqa: PLC0415
    from service.main import create_app, uvicorn_config  # noqa: PLC0415
    from service.server import DrainingServer  # noqa: PLC0415

    logs.configure(settings.log_level, settings.log_format)
    if listener is None and listen:
        listener = listening_socket(settings.host, settings.port, reuse_port=True)
    app = create_app(settings)
    config = uvicorn.Config(app, **uvicorn_config(settings, direct_infer=app.infer))
    server = DrainingServer(config, app.state.recap.drain)
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT, re-raised by uvicorn after it stopped
        server.run(sockets=[listener] if listener is not None else None)
    if not server.started:
        sys.exit(STARTUP_FAILURE)  # the port was taken, the lifespan failed


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.count = settings.worker_count
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[BaseProcess] = []
        self.stopping = False
        self.failed = False
        self._owned_dir: Path | None = None

    def _metrics_dir(self) -> None:
        """A fresh multiprocess folder: the one the environment names (emptied), or a new one."""
        named = os.environ.get(MULTIPROCESS_ENV)
        if named:
            folder = Path(named)
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob("*.db"):
                stale.unlink()
        else:
            folder = self._owned_dir = Path(tempfile.mkdtemp(prefix="recap-metrics-"))
            os.environ[MULTIPROCESS_ENV] = str(folder)

    def _start(self, index: int, data: Settings, listener: socket.socket | None) -> BaseProcess:
        process = self.context.Process(
            target=worker_main, args=(data, listener), name=f"recap-worker-{index}"
        )
        process.start()
        log.info("worker %d started (pid %s)", index, process.pid)
        return process

    def _forward(self, sig: int, frame: FrameType | None) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        for process in self.workers:
            if process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, sig)

    def run(self) -> int:
        self._metrics_dir()
        settings = self.settings
        listener = None if settings.reuse_port else listening_socket(settings.host, settings.port)
        data = settings.model_copy(update={"workers": self.count})  # auto, resolved once
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._forward)
        log.info(
            "supervisor (pid %d): %d workers on %s:%d (%s)",
            os.getpid(),
            self.count,
            settings.host,
            settings.port,
            "SO_REUSEPORT" if settings.reuse_port else "one shared socket",
        )
        try:
            self.workers = [self._start(i, data, listener) for i in range(self.count)]
            while True:
                time.sleep(CHECK_SECONDS)
                if all(not p.is_alive() for p in self.workers) and (self.stopping or self.failed):
                    break
                for index, process in enumerate(self.workers):
                    if process.is_alive() or self.stopping or self.failed:
                        continue
                    self._replace(index, process, data, listener)
        finally:
            if listener is not None:
                listener.close()
            if self._owned_dir is not None:
                shutil.rmtree(self._owned_dir, ignore_errors=True)
        return STARTUP_FAILURE if self.failed else 0

    def _replace(
        self, index: int, process: BaseProcess, data: Settings, listener: socket.socket | None
    ) -> None:
        process.join()
        if process.pid is not None:
            multiprocess.mark_process_dead(process.pid)
        if process.exitcode == STARTUP_FAILURE:
            log.error("worker %d could not start; stopping the server", index)
            self.failed = True
            self._forward(signal.SIGTERM, None)
            return
        log.warning(
            "worker %d (pid %s) died with exit code %s; starting another",
            index,
            process.pid,
            process.exitcode,
        )
        self.workers[index] = self._start(index, data, listener)
