"""Following the store: the events above an id, for event streams and publishers.

Every process on the same store records events (the server, ``airside watch``, camera
workers); a follower reads "the events above the last one I sent", so an event reaches it
whichever process recorded it. Event ids only grow (the table is AUTOINCREMENT on SQLite,
a sequence on PostgreSQL) and are committed in order (SQLite serialises writers; on
PostgreSQL an event's id is taken under the appenders' lock, ``audit.lock_writers``):
nothing is skipped or sent twice.

A caller's stream (``open_stream`` then ``events_after``) is authorised like a listing
(``event.list``, within the caller's gallery scopes) at every poll, so a principal
disabled mid-stream stops receiving; opening it and every batch it is sent are audited
(``event.stream``). Polls that find nothing new read without taking the write lock.
Publishers the operator configured (MQTT) read through ``events_for_publisher`` and keep
their place with ``load_cursor`` / ``save_cursor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from airside.errors import AirsideError
from airside.governance import access, audit
from airside.governance.access import GalleryRef
from airside.governance.principals import Principal
from airside.services.app import Airside
from airside.services.events.fields import check_text, iso, utc
from airside.services.events.view import EventView, view_of
from airside.store.tables import Event, EventCursor, Gallery

ACTION = "event.list"
MAX_BATCH = 1000


@dataclass(frozen=True)
class StreamBatch:
    """The events found above an id, oldest first, and ``head``: the highest id looked at
    (the next poll starts above it; it may be above the last event sent when filters or
    scopes left newer events out)."""

    events: list[EventView]
    head: int


def stream_head(app: Airside) -> int:
    """The highest event id in the store now (0 when there is none). Not authorised: it
    reveals only how many events were ever recorded."""
    with app.session(readonly=True) as s:
        return int(s.scalar(select(func.max(Event.id))) or 0)


def _check_filters(camera: str | None, type_: str | None, after: int | None) -> None:
    if camera is not None:
        check_text(camera, "camera")
    if type_ is not None:
        check_text(type_, "type", 40)
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
        raise ValueError("the last event id must be an integer >= 0")


def _scope_clause(s: Session, principal: Principal) -> ColumnElement[bool] | None:
    """What of the events ``principal`` may see: everything for global roles; otherwise
    events without a gallery and those of the galleries its scopes reach."""
    rec = access.authorize(s, principal, ACTION)
    if rec.role in access.GLOBAL_ROLES:
        return None
    every = [GalleryRef(n, p) for n, p in s.execute(select(Gallery.name, Gallery.purpose))]
    visible = [g.name for g in access.visible_galleries(s, principal, every)]
    return or_(Event.gallery.is_(None), Event.gallery.in_(visible))


def _refused(app: Airside, principal: Principal, e: AirsideError, extra: dict[str, Any]) -> None:
    app.audit_refusal(principal, "event.stream", e, extra=extra)


def open_stream(
    app: Airside,
    principal: Principal,
    *,
    camera: str | None = None,
    type_: str | None = None,
    after: int | None = None,
    since: datetime | None = None,
) -> int:
    """Authorise and audit a caller's event stream; returns the id it starts above:
    ``after`` (a resumed stream: the last event id the caller received), else 0 when
    ``since`` asks for the events started since then, else the newest id now (only events
    recorded from now on)."""
    _check_filters(camera, type_, after)
    filters = {"camera": camera, "type": type_, "after": after,
               "since": iso(utc(since)) if since is not None else None}  # fmt: skip
    try:
        with app.session() as s:
            access.authorize(s, principal, ACTION)
            head = int(s.scalar(select(func.max(Event.id))) or 0)
            start = after if after is not None else (0 if since is not None else head)
            audit.append(s, principal, "event.stream", decision="opened",
                         result={**filters, "start": start})  # fmt: skip
    except AirsideError as e:
        _refused(app, principal, e, filters)
        raise
    return start


def _query(
    s: Session,
    after: int,
    head: int,
    limit: int,
    camera: str | None,
    type_: str | None,
    since: datetime | None,
    scope: ColumnElement[bool] | None,
) -> list[Event]:
    q = select(Event).where(Event.id > after, Event.id <= head).order_by(Event.id).limit(limit)
    if scope is not None:
        q = q.where(scope)
    if camera is not None:
        q = q.where(Event.camera == camera)
    if type_ is not None:
        q = q.where(Event.type == type_)
    if since is not None:
        q = q.where(Event.started_at >= utc(since))
    return list(s.scalars(q))


def events_after(
    app: Airside,
    principal: Principal,
    after: int,
    *,
    camera: str | None = None,
    type_: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> StreamBatch:
    """The events above id ``after`` that ``principal`` may see (``camera``, ``type_`` and
    ``since`` when given), oldest first, at most ``limit``. Authorised at every call; a
    batch that is not empty is audited (``event.stream``: how many, which ids) before it
    is returned, in the transaction that read it."""
    _check_filters(camera, type_, after)
    if not 1 <= limit <= MAX_BATCH:
        raise ValueError(f"limit must be between 1 and {MAX_BATCH}")
    try:
        with app.session(readonly=True) as s:
            scope = _scope_clause(s, principal)
            head = int(s.scalar(select(func.max(Event.id))) or 0)
            if head <= after:
                return StreamBatch([], after)
            found = _query(s, after, head, limit, camera, type_, since, scope)
            if not found:
                return StreamBatch([], head)
        # Something to send: read it again under the write lock and audit it with it.
        with app.session() as s:
            scope = _scope_clause(s, principal)
            rows = _query(s, after, head, limit, camera, type_, since, scope)
            out = [view_of(ev) for ev in rows]
            top = head if len(rows) < limit else rows[-1].id
            if out:
                audit.append(
                    s,
                    principal,
                    "event.stream",
                    decision="sent",
                    result={"n": len(out), "first": out[0].id, "last": out[-1].id,
                            "camera": camera, "type": type_},
                )  # fmt: skip
            return StreamBatch(out, top)
    except AirsideError as e:
        _refused(app, principal, e, {"after": after, "camera": camera, "type": type_})
        raise


def events_for_publisher(app: Airside, after: int, *, limit: int = 100) -> StreamBatch:
    """Every event above id ``after``, oldest first, at most ``limit``: for the publishers
    an operator configured for the whole installation (MQTT), which act on that
    configuration rather than for a caller, carry ids and decisions only (never evidence)
    and are therefore not audited event by event."""
    if not 1 <= limit <= MAX_BATCH:
        raise ValueError(f"limit must be between 1 and {MAX_BATCH}")
    with app.session(readonly=True) as s:
        head = int(s.scalar(select(func.max(Event.id))) or 0)
        if head <= after:
            return StreamBatch([], after)
        rows = _query(s, after, head, limit, None, None, None, None)
        out = [view_of(ev) for ev in rows]
        top = head if len(rows) < limit else rows[-1].id
        return StreamBatch(out, top)


def load_cursor(app: Airside, name: str) -> int | None:
    """The last event id the publisher ``name`` sent, or None when it never ran."""
    with app.session(readonly=True) as s:
        row = s.get(EventCursor, name)
        return None if row is None else row.last_id


def save_cursor(app: Airside, name: str, last_id: int) -> None:
    """Remember that the publisher ``name`` has sent every event up to ``last_id``."""
    check_text(name, "publisher name")
    with app.session() as s:
        row = s.get(EventCursor, name)
        now = datetime.now(UTC)
        if row is None:
            s.add(EventCursor(name=name, last_id=last_id, updated_at=now))
        else:
            row.last_id, row.updated_at = last_id, now
