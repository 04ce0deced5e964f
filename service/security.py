"""Start-up safety: protected mode (no keys, no public bind) and the clear-text warning.

Protected mode follows TorchServe's token default and Redis's protected mode: a server without API keys
answers anyone who reaches it, so it may bind only a loopback address unless the operator says
`--allow-unauthenticated` on purpose.
"""

from __future__ import annotations

import ipaddress
import logging

from service.settings import Settings

log = logging.getLogger(__name__)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def protected_mode_refusal(settings: Settings) -> str | None:
    """Why the server must not start as configured, or None. (The metrics listener is open by design
    and bound where only the scraper reaches; only the main listener counts here.)"""
    if settings.api_keys_file is not None or settings.allow_unauthenticated or is_loopback(settings.host):
        return None
    return (
        f"refusing to serve without API keys on {settings.host}, a non-loopback address: anyone who "
        "reaches it could call every route. Either add keys with --api-keys-file PATH (RECAP_API_KEYS_FILE; "
        "one `<scopes> <key>` per line, e.g. `inference,admin,metrics <a long random key>`), or pass "
        "--allow-unauthenticated (RECAP_ALLOW_UNAUTHENTICATED=true) to serve it open on purpose."
    )


def warn_clear_text(settings: Settings) -> None:
    """One warning when keys (or anything) would travel unencrypted beyond this host."""
    if settings.tls_cert_file is None and not is_loopback(settings.host):
        log.warning(
            "serving plain HTTP on %s: API keys and data travel in clear text; give --tls-cert-file and "
            "--tls-key-file, or terminate TLS in front of the server (README: Security)",
            settings.host,
        )
