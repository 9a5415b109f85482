"""Request body limit: a body over the limit is refused with 413 before it is read whole.

A declared ``Content-Length`` over the limit is refused at once; a chunked body is counted
as it streams and cut off when it passes the limit. Written as a pure ASGI middleware
(Starlette has no body limit of its own) so nothing buffers the body before the check.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airside.server.problems import problem


class _TooLarge(Exception):
    pass


class UploadLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _refusal(self) -> object:
        mb = self.max_bytes / (1024 * 1024)
        return problem(413, "payload_too_large", f"the request body is over {mb:g} MB")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refusal()(scope, receive, send)  # type: ignore[operator]
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracking_send)
        except _TooLarge:
            if not started:
                await self._refusal()(scope, receive, send)  # type: ignore[operator]
