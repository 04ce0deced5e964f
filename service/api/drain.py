"""Graceful drain: what SIGTERM starts, shared by the server loop (`service.server`) and the pipeline.

1. SIGTERM: `begin()`; readiness answers 503 at once, and requests are still served;
2. `--drain-grace-seconds` later the server stops accepting connections (`tick()` says when);
3. requests and streams in progress get `--shutdown-timeout-seconds` more; then `ended` is set: a
   stream ends with a last event `finish_reason: "shutdown"` and work in a worker thread is stopped;
4. the process exits 0.
"""

from __future__ import annotations

import asyncio
import time


class Drain:
    def __init__(self, grace_s: float = 0.0, timeout_s: float = 25.0) -> None:
        self.grace_s = grace_s
        self.timeout_s = timeout_s
        self.draining = False
        self.began = 0.0
        self.closing = False
        self.ended = asyncio.Event()

    def begin(self) -> None:
        """SIGTERM arrived (called from a signal handler: it only sets attributes)."""
        if not self.draining:
            self.began = time.monotonic()
            self.draining = True

    def tick(self) -> bool:
        """On the event loop, several times a second: True once the grace period is over (stop
        accepting); from then on the timeout runs."""
        if not self.draining:
            return False
        if not self.closing and time.monotonic() >= self.began + self.grace_s:
            self.closing = True
            asyncio.get_running_loop().call_later(self.timeout_s, self.ended.set)
        return self.closing
