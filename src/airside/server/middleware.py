"""Request metrics: every HTTP request's latency, by route *template* (``/api/v1/cameras/
{name}``, never the path itself: names and ids would make a series each), method and
status, into ``metrics.REQUEST_SECONDS``; a 503 with ``Retry-After`` (overload, a
deadline passed) also counts in ``metrics.OVERLOADED``.

A pure ASGI middleware (nothing buffered). Latency runs to the end of the response body;
for an event stream (``text/event-stream``), which lasts as long as its client, to the
response's headers. A path no route matches is counted as ``route="unmatched"``.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airside.server.metrics import OVERLOADED, REQUEST_SECONDS

UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The matched route's template, with the prefix of the router it was included with.

    FastAPI leaves the route itself in ``scope["route"]``, whose path is relative to its
    router (``/cameras/{name}``); the prefix is the request path's leading segments that
    the template does not cover (routers' prefixes are literal)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    if ":path}" in path:  # a parameter spanning segments: the prefix cannot be told apart
        return path
    template = [p for p in path.split("/") if p]
    full = [p for p in str(scope.get("path", "")).split("/") if p]
    prefix = full[: max(0, len(full) - len(template))]
    return "/" + "/".join([*prefix, *template]) if prefix or template else "/"


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        streaming = busy = False
        observed = False

        def observe() -> None:
            nonlocal observed
            if observed:
                return
            observed = True
            seconds = time.perf_counter() - started
            REQUEST_SECONDS.labels(route_template(scope), scope["method"], str(status)).observe(
                seconds
            )
            if status == 503 and busy:
                OVERLOADED.inc()

        async def timed_send(message: Message) -> None:
            nonlocal status, streaming, busy
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for k, v in message.get("headers", ()):
                    if k.lower() == b"content-type" and v.startswith(b"text/event-stream"):
                        streaming = True
                    elif k.lower() == b"retry-after":
                        busy = True
                if streaming:
                    observe()
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                observe()

        try:
            await self.app(scope, receive, timed_send)
        finally:
            observe()  # an error before or during the response counts too
