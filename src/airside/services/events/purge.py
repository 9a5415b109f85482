"""Retention of events: deleting old events and the crops past their time.

Run by the retention purge (``services/retention.py``) inside its own transaction, so the
events, their crops and the templates go (and are audited) together.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from airside.governance import audit
from airside.governance.principals import Principal
from airside.services.app import Airside
from airside.services.events.fields import utc
from airside.store.tables import Event


def purge_events(
    session: Session,
    app: Airside,
    principal: Principal,
    now: datetime,
    *,
    dry_run: bool = False,
) -> dict[str, int]:
    """Delete, in ``session``'s transaction, events older than ``event_retention_days`` and
    the crops of the others that are past their ``evidence_until``, older than
    ``event_crop_retention_days`` or no longer allowed (``keep_event_crops`` off), and log
    what went (per gallery) in the audit log. ``dry_run``: count what is due, change
    nothing. Returns ``{"events": n, "event_crops": m}``."""
    st = app.settings
    now = utc(now)
    event_cutoff = now - timedelta(days=st.event_retention_days)
    crop_cutoff = now - timedelta(days=st.event_crop_retention_days)
    old = Event.started_at <= event_cutoff
    crop_due = and_(Event.evidence.is_not(None), ~old)
    if st.keep_event_crops:
        crop_due = and_(
            crop_due,
            or_(
                Event.evidence_until.is_(None),
                Event.evidence_until <= now,
                Event.started_at <= crop_cutoff,
            ),
        )

    def by_gallery(where: Any) -> dict[str, int]:
        rows = session.execute(
            select(Event.gallery, func.count()).where(where).group_by(Event.gallery)
        ).all()
        return {(g if g is not None else "(system)"): int(n) for g, n in rows}

    events = by_gallery(old)
    crops = by_gallery(crop_due)
    counts = {"events": sum(events.values()), "event_crops": sum(crops.values())}
    if dry_run or not (counts["events"] or counts["event_crops"]):
        return counts
    session.execute(delete(Event).where(old))
    session.execute(
        update(Event)
        .where(crop_due)
        .values(evidence=None, evidence_key_id=None, evidence_until=None)
        .execution_options(synchronize_session=False)
    )
    crop_rule = (
        f"crops past their gallery's retention or older than {st.event_crop_retention_days:g} days"
        if st.keep_event_crops
        else "every crop (keep_event_crops is off)"
    )
    audit.append(
        session,
        principal,
        "purge",
        decision="purged",
        result={
            **counts,
            "events_by_gallery": events,
            "event_crops_by_gallery": crops,
            "rule": f"events older than {st.event_retention_days:g} days; {crop_rule}",
        },
    )
    return counts
