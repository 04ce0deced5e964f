"""`python -m service --host ... --port ... --model-repository ...` (every flag also a RECAP_ env var)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from service.main import create_app
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)  # type: ignore[call-arg]
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http="httptools",
        loop="uvloop",
        access_log=settings.access_log,
        log_level=settings.log_level,
        server_header=False,
        date_header=False,
    )


if __name__ == "__main__":
    main()
