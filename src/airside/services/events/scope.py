"""Authorising an action on one stored event, within its gallery's scope.

Updating, retracting and showing the crop of an event all load it, check the caller may
act on its gallery, and audit a refusal on its own; this is that unit of work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from airside.errors import AirsideError, NotFoundError
from airside.governance import access
from airside.governance.access import GalleryRef
from airside.governance.principals import Principal
from airside.services.app import Airside
from airside.store.tables import Event


@contextmanager
def event_action(
    app: Airside, principal: Principal, action: str, event_id: int
) -> Iterator[tuple[Session, Event]]:
    """Authorise ``action`` on one event (its gallery's scope) inside one unit of work; a
    refusal (or a missing event) is audited in its own transaction and raised."""
    where: dict[str, str | None] = {"gallery": None, "purpose": None}
    try:
        with app.session() as s:
            access.authorize(s, principal, action)
            ev = s.get(Event, event_id)
            if ev is None:
                raise NotFoundError(f"no event {event_id}")
            where = {"gallery": ev.gallery, "purpose": ev.purpose}
            if ev.gallery is not None:
                access.authorize(s, principal, action, GalleryRef(ev.gallery, ev.purpose or ""))
            yield s, ev
    except AirsideError as e:
        app.audit_refusal(
            principal,
            action,
            e,
            purpose=where["purpose"],
            gallery=where["gallery"],
            extra={"event": event_id},
        )
        raise
