"""`--metrics-port`: /metrics on a listener of its own, as Triton's 8002, for scrapers that cannot send a
key (KServe's metrics aggregator, annotation-based Prometheus scraping).

It runs in the server's event loop, started and stopped by the app's lifespan, and answers through the
same pipeline step as the main port's /metrics: open, or behind the `metrics` scope with
`--metrics-port-auth`. The main server owns the process's signals; this one only follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

from service.api.admission import Limits
from service.api.errors import JSON_HEADERS, error_body, error_headers
from service.api.front import RequestIds
from service.api.health import METRICS
from service.api.pipeline import Call, Failure, Pipeline
from service.logs import REQUEST_ID
from service.metrics import Metrics

log = logging.getLogger(__name__)


class MetricsApp:
    """The whole ASGI app of the listener: GET /metrics, and 404 for anything else."""

    def __init__(self, pipeline: Pipeline, metrics: Metrics, require_key: bool) -> None:
        # An open listener takes the pipeline without keys: no key check, the same error mapping.
        self.pipeline = pipeline if require_key else Pipeline(pipeline.repository, metrics, Limits(0))
        self.metrics = metrics
        self.ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request_id = self.ids.accept_or_new(None)
        REQUEST_ID.set(request_id)
        if scope["path"] != "/metrics" or scope["method"] not in ("GET", "HEAD"):
            await _answer(
                send, 404, error_body(f"no route {scope['method']} {scope['path'][:128]}"), JSON_HEADERS
            )
            return
        authorization = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None
        )
        result = await self.pipeline.run_server(
            METRICS, self._exposition, None, request_id=request_id, authorization=authorization
        )
        if isinstance(result, Failure):
            await _answer(send, result.status, error_body(result.message), error_headers(result.error))
        else:
            body, content_type = result
            await _answer(send, 200, body, [(b"content-type", content_type.encode())])

    async def _exposition(self, call: Call, _: None) -> tuple[bytes, str]:
        return self.metrics.exposition()


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _FollowerServer(uvicorn.Server):
    """A uvicorn server that leaves the signals to the main one (it is stopped by the lifespan)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class MetricsListener:
    def __init__(
        self, app: MetricsApp, host: str, port: int, tls: dict[str, Any], reuse_port: bool = False
    ) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, lifespan="off", access_log=False, log_config=None, **tls
        )
        self.server = _FollowerServer(config)
        self.address = f"{host}:{port}"
        self.reuse_port = reuse_port  # several workers: each binds the port (any answers the whole sum)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen, or raise: a metrics port that cannot be bound stops the server from starting."""
        sockets = None
        if self.reuse_port:
            from service.supervisor import listening_socket  # noqa: PLC0415  (only with workers)

            host, _, port = self.address.rpartition(":")
            sockets = [listening_socket(host, int(port), reuse_port=True)]
        self._task = asyncio.create_task(self.server.serve(sockets))
        while not self.server.started:
            if self._task.done():
                error = self._task.exception() if not self._task.cancelled() else None
                raise RuntimeError(f"the metrics listener could not listen on {self.address}") from error
            await asyncio.sleep(0.01)
        log.info("metrics listener on %s", self.address)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await self._task
