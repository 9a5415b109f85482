"""Security headers on every response, the API's and the console's, errors included
(docs/security.md): a Content-Security-Policy (a response that sets its own keeps it: the
console's pages, a report shown sandboxed), ``nosniff``, no referrer, no framing, and
``Cache-Control: no-store`` on the API (its answers carry personal data: nothing is kept
by a browser or a shared cache).

``/api/docs`` (Swagger UI) is served with a policy of its own that allows its one inline
script by hash (never ``'unsafe-inline'`` for scripts) and its files from the CDN it loads
them from."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# An API answer is JSON (or an image, a stream): nothing in it may run or be framed.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
ALWAYS = {
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
}
NO_STORE_UNDER = ("/api/", "/metrics")
_CDN = "https://cdn.jsdelivr.net"


class SecurityHeaders:
    """Adds the headers a response lacks (pure ASGI: nothing buffered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        no_store = path.startswith(NO_STORE_UNDER)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                have = {k.lower() for k, _ in raw}
                extra = dict(ALWAYS)
                if b"content-security-policy" in have:
                    # Its own policy says who may frame it (a report the console shows).
                    del extra[b"x-frame-options"]
                extra[b"content-security-policy"] = API_CSP.encode()
                if no_store:
                    extra[b"cache-control"] = b"no-store"
                raw += [(k, v) for k, v in extra.items() if k not in have]
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, with_headers)


def docs_policy(page: bytes) -> str:
    """The CSP of a Swagger UI page: its inline scripts by hash, its files from the CDN."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in re.findall(rb"<script>(.*?)</script>", page, flags=re.S)
    )
    return (
        f"default-src 'none'; script-src {_CDN} {hashes}; style-src {_CDN} 'unsafe-inline'; "
        f"img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def install_docs(app: FastAPI, path: str, openapi_url: str) -> None:
    """Serve Swagger UI at ``path`` under ``docs_policy`` (create the app with
    ``docs_url=None``)."""

    async def api_docs(_request: Request) -> HTMLResponse:
        page = get_swagger_ui_html(openapi_url=openapi_url, title="Airside API").body
        return HTMLResponse(page, headers={"content-security-policy": docs_policy(bytes(page))})

    # A plain route, as FastAPI's own docs_url adds (no key needed; not in the API's table).
    app.add_route(path, api_docs, include_in_schema=False)
