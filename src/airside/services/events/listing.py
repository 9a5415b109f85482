"""Listing stored events: filtered, limited to what the caller's scopes reach, audited."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select

from airside.governance import access, audit, pseudonyms
from airside.governance.access import GalleryRef
from airside.governance.principals import Principal
from airside.services.app import Airside
from airside.services.authz import authorize
from airside.services.events.fields import iso, utc
from airside.services.events.view import EventView, view_of
from airside.store.tables import Event, Gallery, PrincipalRecord

MAX_LIST = 10_000


def list_events(
    app: Airside,
    principal: Principal,
    *,
    camera: str | None = None,
    subject: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    gallery: str | None = None,
    type_: str | None = None,
) -> list[EventView]:
    """The newest events (at most ``limit``), of ``camera``, ``subject``, ``gallery`` and
    ``type_`` when given, started at or after ``since``. Non-global roles see identity
    events only of the galleries their scopes reach (system events carry no personal data
    and are shown to everyone allowed to list). Every listing is audited."""
    if not 1 <= limit <= MAX_LIST:
        raise ValueError(f"limit must be between 1 and {MAX_LIST}")
    view = authorize(app, principal, "event.list", gallery=gallery)
    with app.session() as s:
        q = select(Event).order_by(Event.started_at.desc(), Event.id.desc()).limit(limit)
        if view is not None:
            q = q.where(Event.gallery == view.name)
        else:
            role = s.scalar(
                select(PrincipalRecord.role).where(PrincipalRecord.name == principal.name)
            )
            if role not in access.GLOBAL_ROLES:
                every = [
                    GalleryRef(n, p) for n, p in s.execute(select(Gallery.name, Gallery.purpose))
                ]
                visible = [g.name for g in access.visible_galleries(s, principal, every)]
                q = q.where(or_(Event.gallery.is_(None), Event.gallery.in_(visible)))
        if camera is not None:
            q = q.where(Event.camera == camera)
        if subject is not None:
            q = q.where(Event.subject_ref == subject)
        if type_ is not None:
            q = q.where(Event.type == type_)
        if since is not None:
            q = q.where(Event.started_at >= utc(since))
        out = [view_of(ev) for ev in s.scalars(q)]
        audit.append(
            s,
            principal,
            "event.list",
            decision="listed",
            purpose=view.purpose if view else None,
            gallery=view.name if view else None,
            result={
                "n": len(out),
                "camera": camera,
                # A filter on a subject: their pseudonym (None when it names no subject).
                "subject": None if subject is None else pseudonyms.of_reference(s, subject),
                "type": type_,
                "since": iso(utc(since)) if since is not None else None,
            },
        )
    return out
