"""Console sign-in: an API key exchanged for a session cookie (HttpOnly, SameSite=Strict,
Secure over TLS, expiring) and a CSRF token the page sends back on every change; who the
caller is and what their role may do, for the console to show only that (the API
enforces it regardless); sign-out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from airside.server.auth import SESSION_COOKIE, Caller, Service, guarded
from airside.services import console_sessions

router = APIRouter(tags=["console session"])


class SignIn(BaseModel):
    key: str = Field(min_length=1, max_length=200, description="An Airside API key")


@router.post("/session", summary="Sign in to the console with an API key (sets the cookie)")
async def sign_in(
    body: SignIn, request: Request, response: Response, app: Service
) -> dict[str, Any]:
    signed = await guarded(request, console_sessions.sign_in, app, body.key)
    ttl = int((signed.expires_at - datetime.now(UTC)).total_seconds())
    response.set_cookie(
        SESSION_COOKIE,
        signed.token,
        max_age=max(1, ttl),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    info = await run_in_threadpool(console_sessions.describe, app, signed.principal)
    return {**info, "csrf_token": signed.csrf, "expires_at": signed.expires_at.isoformat()}


@router.get("/session", summary="Who is calling, and what their role may do")
async def current(app: Service, who: Caller) -> dict[str, Any]:
    return await run_in_threadpool(console_sessions.describe, app, who)


@router.delete("/session", summary="Sign out of the console (ends the session)")
async def sign_out(
    request: Request, response: Response, app: Service, who: Caller
) -> dict[str, Any]:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await run_in_threadpool(console_sessions.sign_out, app, token)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return {"signed_out": who.name}
