"""How ``airside serve`` runs uvicorn: HTTPS when given a certificate and its key (the key
file readable by its owner only, checked as the installation's keys are), and
X-Forwarded-For and -Proto trusted only from the proxies ``trusted_proxies`` (or uvicorn's
``FORWARDED_ALLOW_IPS``) lists (otherwise the
client address is the TCP peer's: a header cannot pick the address that failed sign-ins
are counted against)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airside.config import Settings
from airside.errors import AirsideError
from airside.governance.key_source import check_key_file


def uvicorn_options(
    settings: Settings, *, tls_cert: Path | None = None, tls_key: Path | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` beyond the app, host, port."""
    # uvicorn's own FORWARDED_ALLOW_IPS, where a deployment set it, is as explicit.
    listed = settings.trusted_proxies or os.environ.get("FORWARDED_ALLOW_IPS", "")
    proxies = [p.strip() for p in listed.split(",") if p.strip()]
    options: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies or None,
        "server_header": False,
    }
    if (tls_cert is None) != (tls_key is None):
        raise AirsideError("HTTPS needs both a certificate and its key (--tls-cert and "
                           "--tls-key)", code="validation")  # fmt: skip
    if tls_cert is not None and tls_key is not None:
        for f in (tls_cert, tls_key):
            if not f.is_file():
                raise AirsideError(f"no such file: {f}", code="not_found")
        check_key_file(tls_key)  # insecure_key_file: names the file, its mode and the fix
        options |= {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)}
    return options
