"""`python -m service --host ... --port ... --model-repository ...` (every flag also a RECAP_ env var)."""

from __future__ import annotations

import sys

from service import logs, security
from service.keys import KeysFileError, KeyStore
from service.settings import Settings
from service.supervisor import Supervisor, worker_main


def main(argv: list[str] | None = None) -> None:
    settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)  # type: ignore[call-arg]
    logs.configure(settings.log_level, settings.log_format)
    refusal = security.protected_mode_refusal(settings)
    if refusal is not None:
        print(f"recap-serve: {refusal}", file=sys.stderr)
        sys.exit(2)
    security.warn_clear_text(settings)
    try:
        if settings.api_keys_file is not None:
            KeyStore(settings.api_keys_file)  # a broken keys file stops the start, before any worker
    except KeysFileError as error:
        print(f"recap-serve: {error}", file=sys.stderr)
        sys.exit(2)
    if settings.worker_count > 1:
        sys.exit(Supervisor(settings).run())  # loads no model: the workers do
    worker_main(settings, None, listen=False)


if __name__ == "__main__":
    main()
