"""`python -m service.healthcheck`: exit 0 when the server on this host answers /v2/health/ready with 200.

The container healthcheck (Dockerfile HEALTHCHECK and compose). It is one token on purpose: podman's
Docker-compatible API splits a `python -c "..."` argument on spaces, so an inline script is never
healthy there; a module name works on every engine. The port is RECAP_PORT (default 8000).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 2.0


def main() -> int:
    port = os.environ.get("RECAP_PORT", "8000")
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as error:
        print(f"not healthy: {url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
