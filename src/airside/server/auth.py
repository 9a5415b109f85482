"""Who is calling: an API key (``Authorization: Bearer <key>``, or ``X-API-Key`` as
CompreFace clients send it), checked by the same service as the CLI's. No key is a 401;
a forged, revoked or expired key is a 401 audited by ``principal_admin.authenticate``.
There is no local-user fallback over the network: every request names its principal."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from airside.errors import AccessDenied
from airside.governance.principals import Principal
from airside.services import principal_admin
from airside.services.app import Airside
from airside.services.authz import authorize


def airside_of(request: Request) -> Airside:
    """The service context the server was started with."""
    app: Airside = request.app.state.airside
    return app


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer":
            raise AccessDenied("only Bearer API keys are accepted", code="bad_key")
        return value
    return request.headers.get("x-api-key")


async def principal(request: Request) -> Principal:
    """The authenticated principal of this request (401 problem otherwise)."""
    key = presented_key(request)
    if key is None:
        raise AccessDenied(
            "this route needs an API key (Authorization: Bearer <key>)", code="missing_key"
        )
    return await run_in_threadpool(principal_admin.authenticate, airside_of(request), key)


Caller = Annotated[Principal, Depends(principal)]
Service = Annotated[Airside, Depends(airside_of)]


def allowed(action: str) -> Any:
    """A dependency: the caller, once the service's access check for ``action`` has passed
    (a refusal is audited by it). For routes with a body: a caller without the right is
    refused (403) before the body is validated (422). The service checks again as it acts.

    ``who: Annotated[Principal, allowed("principal.add")]``"""

    async def check(request: Request, who: Caller) -> Principal:
        await run_in_threadpool(authorize, airside_of(request), who, action)
        return who

    return Depends(check)
