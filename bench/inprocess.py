"""The V2 infer path in process (ASGI calls, no sockets), for instruction counts under callgrind.

Run as a script by `bench/instructions.py`, with PYTHONPATH pointing at the code to measure: it builds
that code's app on the given repository, warms up, creates READY, waits for GO (the parent switches
callgrind's instrumentation on), answers N requests, creates DONE and waits for GO to disappear.

    python bench/inprocess.py N MODEL_REPOSITORY SIGNAL_DIR
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.main import create_app
from service.settings import Settings

MODEL = "breast-cancer-mlp"
WARM_UP = 300


def main() -> None:
    count, repository, signals = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    app = create_app(Settings(model_repository=repository, log_level="warning"))
    row = np.random.default_rng(0).normal(size=30).round(4).tolist()
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": row}]})
    path = f"/v2/models/{MODEL}/infer"
    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
        "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 1),
        "root_path": "", "state": {},
    }  # fmt: skip
    message = {"type": "http.request", "body": body.encode(), "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(_: Any) -> None:
        return None

    async def serve() -> None:
        async with app.router.lifespan_context(app):
            stack = app.build_middleware_stack()
            for _ in range(WARM_UP):
                await stack(dict(scope), receive, send)
            (signals / "ready").touch()
            while not (signals / "go").exists():
                time.sleep(0.05)
            for _ in range(count):
                await stack(dict(scope), receive, send)
            (signals / "done").touch()
            while (signals / "go").exists():
                time.sleep(0.05)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
