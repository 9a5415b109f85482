"""A real Airside server on a loopback port, for the API tests: uvicorn in a thread, the
same app ``airside serve`` runs, and httpx clients holding real API keys."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from airside.governance.principals import Principal
from airside.server.app import create_app
from airside.server.local_broker import free_port
from airside.services import principal_admin
from airside.services.app import Airside


@dataclass
class Server:
    url: str
    airside: Airside
    admin: Principal
    admin_key: str

    def client(self, key: str | None = None, **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)  # type: ignore[arg-type]

    def key_for(self, name: str, role: str, scopes: list[tuple[str, str]] | None = None) -> str:
        """Register ``name`` with ``role`` (scopes default to everything) and issue a key."""
        principal_admin.add_principal(self.airside, self.admin, name, role,
                                      scopes if scopes is not None else [("*", "*")])  # fmt: skip
        return principal_admin.issue_key(self.airside, self.admin, name).secret


@contextmanager
def running(
    airside: Airside, *, uvicorn_options: dict[str, Any] | None = None, **app_options: Any
) -> Iterator[Server]:
    """``app_options`` go to ``create_app`` (e.g. ``cameras_file``); ``uvicorn_options``
    replace the server's (``server.serving.uvicorn_options``: TLS, trusted proxies)."""
    admin = principal_admin.ensure_local_admin(airside)
    names = {p.name for p in principal_admin.list_principals(airside, admin)}
    if "api-admin" not in names:  # a data directory served before (a restart)
        principal_admin.add_principal(airside, admin, "api-admin", "admin", [])
    admin_key = principal_admin.issue_key(airside, admin, "api-admin").secret
    port = free_port()
    options = uvicorn_options or {"log_level": "warning", "access_log": False}
    config = uvicorn.Config(create_app(airside, **app_options), host="127.0.0.1", port=port,
                            **options)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        scheme = "https" if options.get("ssl_certfile") else "http"
        yield Server(f"{scheme}://127.0.0.1:{port}", airside, admin, admin_key)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the server did not stop"
