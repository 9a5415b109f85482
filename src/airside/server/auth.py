"""Who is calling: an API key (``Authorization: Bearer <key>``, or ``X-API-Key`` as
CompreFace clients send it), checked by the same service as the CLI's. No key is a 401;
a forged, revoked or expired key is a 401 audited by ``principal_admin.authenticate``.
There is no local-user fallback over the network: every request names its principal."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from airside.errors import AccessDenied
from airside.governance.principals import Principal
from airside.server.auth_guard import FAILURE_CODES, AuthGuard
from airside.services import console_sessions, principal_admin
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


SESSION_COOKIE = "airside_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def client_address(request: Request) -> str:
    """The caller's address: the TCP peer's (the server trusts X-Forwarded-For only from
    the proxies in ``trusted_proxies``; uvicorn applies it, server/serving.py)."""
    return request.client.host if request.client is not None else "unknown"


T = TypeVar("T")


async def guarded(request: Request, check: Callable[..., T], *args: Any) -> T:
    """Run a credential ``check`` for this request's client address, unless the address is
    locked out after failed attempts (429 with Retry-After; server/auth_guard.py)."""
    guard: AuthGuard | None = getattr(request.app.state, "auth_guard", None)
    if guard is None:
        return await run_in_threadpool(check, *args)
    address = client_address(request)
    wait = guard.locked_for(address)
    if wait > 0:
        raise AccessDenied(
            "too many failed sign-in attempts from this address: try again later",
            code="too_many_attempts",
            details={"retry_after": math.ceil(wait)},
        )
    try:
        return await run_in_threadpool(check, *args)
    except AccessDenied as e:
        if e.code in FAILURE_CODES:
            failures = guard.failed(address)
            if failures:
                lockout = AccessDenied(
                    f"{failures} failed attempts from {address} within "
                    f"{guard.window_s:g} s: locked out for {guard.lockout_s:g} s",
                    code="too_many_attempts",
                )
                await run_in_threadpool(
                    airside_of(request).audit_refusal, principal_admin.ANONYMOUS, "auth.lockout",
                    lockout,
                    extra={"client": address, "failures": failures,
                           "lockout_s": guard.lockout_s},
                )  # fmt: skip
        raise


def _no_key() -> Principal:
    raise AccessDenied(
        "this route needs an API key (Authorization: Bearer <key>)", code="missing_key"
    )


async def principal(request: Request) -> Principal:
    """The authenticated principal of this request (401 problem otherwise): an API key, or
    the console's session cookie, with its CSRF token on anything that changes state."""
    key = presented_key(request)
    if key is None:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            return await session_principal(request, token)
        return await guarded(request, _no_key)  # 429 while the address is locked out
    return await guarded(request, principal_admin.authenticate, airside_of(request), key)


async def session_principal(request: Request, token: str) -> Principal:
    """The principal of a console session; a state change without the session's CSRF token
    is refused (403, audited): another site can make a browser send the cookie, but cannot
    read the token to send with it."""
    app = airside_of(request)
    active = await guarded(request, console_sessions.resolve, app, token)
    if request.method not in SAFE_METHODS and not console_sessions.csrf_ok(
        active, request.headers.get(CSRF_HEADER)
    ):
        error = AccessDenied(
            f"a change from the console needs the session's {CSRF_HEADER} header",
            code="csrf_failed",
        )
        await run_in_threadpool(app.audit_refusal, active.principal, "session", error)
        raise error
    return active.principal


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
