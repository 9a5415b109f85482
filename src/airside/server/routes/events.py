"""Events out: the event list, the evidence behind its authorised URL, a live stream
(Server-Sent Events that resume from ``Last-Event-ID``) and webhook destinations.

Every event body carries ids and decisions only; a crop or snapshot is fetched from
``/events/{id}/evidence``, which is authorised on the event's gallery and audited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, BeforeValidator, Field
from starlette.concurrency import run_in_threadpool

from airside.errors import AirsideError, NotFoundError
from airside.governance.principals import Principal
from airside.server.auth import SESSION_COOKIE, Caller, Service, allowed, presented_key
from airside.server.events_out import event_payload, head_watch
from airside.server.routes import ROW_ID_MAX, RowId
from airside.server.work import Pool
from airside.services import console_sessions, events, principal_admin, webhooks
from airside.services.app import Airside

router = APIRouter(tags=["events"])
log = logging.getLogger("airside.server.events")

# A comment line this often keeps proxies from closing a quiet stream.
KEEPALIVE_S = 15.0
# The caller's key is checked again this often: a revoked key ends its streams.
REAUTH_S = 30.0
# What a client's EventSource waits before reconnecting (it then sends Last-Event-ID).
RETRY_MS = 2000
STREAM_BATCH = 100

Camera = Annotated[str | None, Query(max_length=200, description="Only this camera's events")]
Type = Annotated[
    str | None,
    Query(alias="type", max_length=40, description="Only events of this type (identity, ...)"),
]


def _iso_time(value: object) -> object:
    """Refuse a bare number: pydantic would read it as Unix seconds (``since=2026`` as a
    moment of 1970), where the API takes an ISO 8601 date-time (docs/api.md)."""
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+(\.[0-9]*)?\s*", value):
        raise ValueError("must be an ISO 8601 date-time, e.g. 2026-12-03T08:00:00Z")
    return value


Since = Annotated[
    datetime | None,
    BeforeValidator(_iso_time),
    Query(description="Only events started at or after this (ISO 8601)"),
]


def _validation(e: ValueError) -> AirsideError:
    return AirsideError(str(e), code="validation")


@router.get("/events", summary="Stored events, newest first (filters: camera, type, since)")
async def list_events(
    app: Service,
    who: Caller,
    pool: Pool,
    camera: Camera = None,
    type_: Type = None,
    since: Since = None,
    subject: Annotated[str | None, Query(max_length=200)] = None,
    gallery: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=events.MAX_LIST)] = 100,
) -> dict[str, Any]:
    try:
        found = await pool.run(
            events.list_events, app, who, camera=camera, subject=subject, since=since,
            limit=limit, gallery=gallery, type_=type_,
        )  # fmt: skip
    except ValueError as e:
        raise _validation(e) from None
    return {"limit": limit, "items": [event_payload(v) for v in found]}


@router.get(
    "/events/{event_id}/evidence",
    summary="The event's face crop or snapshot (JPEG), authorised and audited",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def evidence(event_id: RowId, app: Service, who: Caller, pool: Pool) -> Response:
    crop = await pool.run(events.event_crop, app, who, event_id)
    if crop is None:
        raise NotFoundError(
            f"event {event_id} has no evidence kept (none taken, not allowed, or past its "
            "retention)"
        )
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    return Response(crop, media_type="image/jpeg", headers=headers)


def _sse(view: events.EventView) -> str:
    data = json.dumps(event_payload(view), sort_keys=True, separators=(",", ":"))
    return f"id: {view.id}\ndata: {data}\n\n"


async def _stream(
    request: Request,
    app: Airside,
    who: Principal,
    recheck: Callable[[], object],
    start: int,
    camera: str | None,
    type_: str | None,
    since: datetime | None,
) -> AsyncIterator[str]:
    poll = app.settings.events_poll_s
    last = start
    yield f"retry: {RETRY_MS}\n\n"
    sent_at = checked_at = time.monotonic()
    watch = head_watch(request.app)
    try:
        while True:
            if await request.is_disconnected():
                return
            now = time.monotonic()
            if now - checked_at >= REAUTH_S:
                checked_at = now
                await run_in_threadpool(recheck)
            batch = await asyncio.to_thread(
                events.events_after, app, who, last, camera=camera, type_=type_, since=since,
                limit=STREAM_BATCH,
            )  # fmt: skip
            last = batch.head
            for view in batch.events:
                yield _sse(view)
            if batch.events:
                sent_at = time.monotonic()
            elif time.monotonic() - sent_at >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                sent_at = time.monotonic()
            if len(batch.events) >= STREAM_BATCH:
                continue
            if watch is not None:
                await watch.wait_above(last, min(KEEPALIVE_S, REAUTH_S) / 3)
            else:
                await asyncio.sleep(poll)
    except AirsideError as e:  # refused mid-stream (disabled, key revoked): it ends here
        yield f"event: error\ndata: {json.dumps({'code': e.code})}\n\n"
    except Exception as e:  # the client reconnects with Last-Event-ID
        log.error("event stream ended: %s", type(e).__name__)


@router.get(
    "/events/stream",
    summary="Live events as Server-Sent Events; resumes from Last-Event-ID",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(
    request: Request,
    app: Service,
    who: Caller,
    camera: Camera = None,
    type_: Type = None,
    since: Since = None,
    last_event_id: Annotated[
        str | None, Header(description="The id of the last event received (resume)")
    ] = None,
    after: Annotated[
        int | None,
        Query(ge=0, le=ROW_ID_MAX, description="Resume after this event id (for EventSource)"),
    ] = None,
) -> StreamingResponse:
    """Each event is one SSE message: ``id`` is the event id, ``data`` the event as JSON.
    Without ``Last-Event-ID`` (or ``after``) the stream starts with the next event recorded
    (or, with ``since``, replays the events started since then)."""
    resume = after
    if last_event_id is not None and last_event_id.strip():
        try:
            resume = int(last_event_id.strip())
        except ValueError:
            resume = -1
        if not 0 <= resume <= ROW_ID_MAX:
            raise AirsideError("Last-Event-ID must be an event id (an integer >= 0)",
                               code="validation", details={"field": "Last-Event-ID"})  # fmt: skip
    try:
        start = await run_in_threadpool(
            events.open_stream, app, who, camera=camera, type_=type_, after=resume, since=since
        )
    except ValueError as e:
        raise _validation(e) from None
    key = presented_key(request)
    token = request.cookies.get(SESSION_COOKIE, "")

    def recheck() -> object:  # a key revoked or a session ended mid-stream ends the stream
        if key is not None:
            return principal_admin.authenticate(app, key)
        return console_sessions.resolve(app, token)

    return StreamingResponse(
        _stream(request, app, who, recheck, start, camera, type_, since),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# -- webhooks (administrators) -------------------------------------------------------------


class WebhookIn(BaseModel):
    name: str = Field(examples=["ops-console"], min_length=1, max_length=100)
    url: str = Field(examples=["https://ops.example/airside"], min_length=1, max_length=2000)
    include_crops: bool = Field(
        False, description="Send the face crop or snapshot in the body (default: never)"
    )
    cameras: list[str] | None = Field(None, description="Only these cameras' events")
    types: list[str] | None = Field(None, description="Only events of these types")


# A caller without the right is refused (403) before the body is validated (422).
Adding = Annotated[Principal, allowed("webhook.add")]


@router.get("/webhooks", tags=["webhooks"], summary="Webhook destinations (never their secrets)")
async def list_webhooks(app: Service, who: Caller, pool: Pool) -> dict[str, Any]:
    found = await pool.run(webhooks.list_webhooks, app, who)
    return {"items": [w.as_dict() for w in found]}


@router.post(
    "/webhooks", status_code=201, tags=["webhooks"],
    summary="Add a destination; its signing secret is in this answer only",
)  # fmt: skip
async def add_webhook(body: WebhookIn, app: Service, who: Adding, pool: Pool) -> dict[str, Any]:
    added = await pool.run(
        webhooks.add_webhook, app, who, body.name, body.url,
        include_crops=body.include_crops, cameras=body.cameras, types=body.types,
    )  # fmt: skip
    return added.as_dict()


@router.get("/webhooks/deliveries", tags=["webhooks"],
            summary="The delivery log: every attempt, newest first")  # fmt: skip
async def deliveries(
    app: Service,
    who: Caller,
    pool: Pool,
    webhook: Annotated[str | None, Query(max_length=100)] = None,
    event: Annotated[int | None, Query(ge=0, le=ROW_ID_MAX)] = None,
    limit: Annotated[int, Query(ge=1, le=webhooks.MAX_LIST)] = 100,
) -> dict[str, Any]:
    found = await pool.run(
        webhooks.list_deliveries, app, who, webhook=webhook, event=event, limit=limit
    )
    return {"limit": limit, "items": [d.as_dict() for d in found]}


@router.delete("/webhooks/{name}", tags=["webhooks"],
               summary="Remove a destination and what it still had to be sent")  # fmt: skip
async def remove_webhook(name: str, app: Service, who: Caller, pool: Pool) -> dict[str, Any]:
    dropped = await pool.run(webhooks.remove_webhook, app, who, name)
    return {"name": name, "removed": True, "dropped": dropped}
