"""`python -m service --host ... --port ... --model-repository ...` (every flag also a RECAP_ env var)."""

from __future__ import annotations

import contextlib
import sys

import uvicorn

from service import logs, security
from service.http_protocol import guarded_protocol
from service.keys import KeysFileError
from service.main import create_app, tls_options
from service.server import DrainingServer
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)  # type: ignore[call-arg]
    logs.configure(settings.log_level, settings.log_format)
    refusal = security.protected_mode_refusal(settings)
    if refusal is not None:
        print(f"recap-serve: {refusal}", file=sys.stderr)
        sys.exit(2)
    security.warn_clear_text(settings)
    try:
        app = create_app(settings)
    except KeysFileError as error:
        print(f"recap-serve: {error}", file=sys.stderr)
        sys.exit(2)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(settings.header_timeout_seconds, settings.body_timeout_seconds),
        loop="uvloop",
        access_log=settings.access_log,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's loggers propagate to ours (request ids, JSON)
        server_header=False,
        date_header=False,
        **tls_options(settings),
    )
    server = DrainingServer(config, app.state.recap.drain)
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT, re-raised by uvicorn after it stopped
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's start-up failure code: the port was taken, the lifespan failed


if __name__ == "__main__":
    main()
