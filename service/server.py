"""uvicorn's server with the graceful drain of `service.api.drain` on SIGTERM.

uvicorn alone stops accepting at SIGTERM (no grace period for a load balancer to notice), and after
its shutdown re-raises the signal, so the process dies of SIGTERM instead of exiting 0.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from service.api.drain import Drain

log = logging.getLogger(__name__)
SEND_MARGIN_SECONDS = 2.0  # after the shutdown timeout: time for the streams' last events to go out


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        config.timeout_graceful_shutdown = int(drain.timeout_s + SEND_MARGIN_SECONDS) + 1
        super().__init__(config)
        self.drain = drain
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM:
            self.drain.begin()  # not passed on: uvicorn would stop at once and re-raise the signal
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain.draining and not self._announced:
            self._announced = True
            log.info(
                "SIGTERM: readiness is 503; accepting for %.1f s more, then %.1f s for requests in progress",
                self.drain.grace_s,
                self.drain.timeout_s,
            )
        if self.drain.tick():
            self.should_exit = True
        return await super().on_tick(counter)
