"""Retention: templates are purged when their gallery's retention says so, and every purge
is recorded in the audit log (what was deleted, from which gallery, under which rule)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from airside.governance import audit
from airside.governance.principals import SYSTEM, Principal
from airside.services.app import Airside
from airside.services.authz import authorize
from airside.services.erasure import complete_pending
from airside.services.events import purge_events
from airside.services.template_removal import remove_templates
from airside.store.tables import AuditRecord, Gallery, Template

log = logging.getLogger(__name__)


@dataclass
class PurgeReport:
    at: str
    dry_run: bool
    galleries: dict[str, int] = field(default_factory=dict)
    # Audit records past retention, cut at a signed checkpoint (due ones, in a dry run).
    audit_records: int = 0
    # Events past ``event_retention_days``, and crops taken off events (services/events/purge.py).
    events: int = 0
    event_crops: int = 0

    @property
    def templates(self) -> int:
        return sum(self.galleries.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "at": self.at,
            "dry_run": self.dry_run,
            "templates": self.templates,
            "galleries": self.galleries,
            "audit_records": self.audit_records,
            "events": self.events,
            "event_crops": self.event_crops,
        }


def purge(
    app: Airside, principal: Principal, *, now: datetime | None = None, dry_run: bool = False
) -> PurgeReport:
    """Delete every template past its gallery's retention, in one audited transaction."""
    authorize(app, principal, "purge")
    if not dry_run:
        complete_pending(app)  # erasures a crash cut short go first
    return run_purge(app, principal, now=now, dry_run=dry_run)


def run_purge(
    app: Airside, actor: Principal, *, now: datetime | None = None, dry_run: bool = False
) -> PurgeReport:
    """The purge itself, for callers that are the retention policy rather than a person
    (the in-process scheduler acts as ``system``); people go through :func:`purge`."""
    principal = actor
    now = now or datetime.now(UTC)
    report = PurgeReport(at=now.isoformat(timespec="seconds"), dry_run=dry_run)
    touched: list[str] = []
    with app.session() as s:
        galleries = s.scalars(
            select(Gallery).where(
                or_(Gallery.retain_seconds.is_not(None), Gallery.retain_until.is_not(None))
            )
        ).all()
        for g in galleries:
            due = select(Template.id).where(Template.gallery_id == g.id)
            until = g.retain_until
            if until is not None and (until if until.tzinfo else until.replace(tzinfo=UTC)) <= now:
                rule = f"gallery retained until {until.isoformat()}"
            elif g.retain_seconds is not None:
                cutoff = now - timedelta(seconds=g.retain_seconds)
                due = due.where(Template.created_at <= cutoff)
                rule = f"templates older than {g.retain_seconds} s"
            else:
                continue
            ids = list(s.scalars(due))
            if not ids:
                continue
            report.galleries[g.name] = len(ids)
            if dry_run:
                continue
            remove_templates(s, {g.id: ids})
            audit.append(
                s,
                principal,
                "purge",
                decision="purged",
                purpose=g.purpose,
                gallery=g.name,
                result={"templates": len(ids), "template_ids": ids, "rule": rule},
            )
            touched.append(g.name)
        due_events = purge_events(s, app, principal, now, dry_run=dry_run)
        report.events = due_events["events"]
        report.event_crops = due_events["event_crops"]
        before = now - timedelta(days=app.settings.audit_retention_days)
        if dry_run:
            report.audit_records = _audit_due(s, before)
        else:
            pruned = audit.prune(s, principal, app.signer, before)
            report.audit_records = pruned.records if pruned else 0
        events_purged = not dry_run and bool(report.events or report.event_crops)
        if not touched and not report.audit_records and not events_purged:
            audit.append(
                s,
                principal,
                "purge",
                decision="dry_run" if dry_run else "nothing_due",
                result=report.as_dict(),
            )
    if touched or events_purged:
        from airside.services.gallery_view import get_gallery

        with app.session() as s:
            for name in touched:
                app.index_after_commit(s, get_gallery(s, name))
        app.db.compact_wal()
    return report


def _audit_due(session: Session, before: datetime) -> int:
    """Records older than ``before`` (a dry run does not say where a real one would cut)."""
    cutoff = before.astimezone(UTC).isoformat(timespec="microseconds")
    n = session.scalar(select(func.count()).select_from(AuditRecord).where(AuditRecord.ts < cutoff))
    return int(n or 0)


class PurgeScheduler:
    """Runs :func:`purge` every ``interval`` seconds in a daemon thread, for long-running
    processes (camera pipelines, the API server). A failed purge is logged and retried at
    the next tick; it never stops the host process."""

    def __init__(self, app: Airside, interval: float | None = None):
        self.app = app
        self.interval = interval if interval is not None else app.settings.purge_interval_s
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="airside-purge", daemon=True)

    def start(self) -> PurgeScheduler:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        try:  # erasures a crash cut short (a minute ago or more) go at start, not a tick later
            complete_pending(self.app)
        except Exception:
            log.exception("completing interrupted erasures failed")
        while not self._stop.wait(self.interval):
            try:
                complete_pending(self.app)
                run_purge(self.app, SYSTEM)
                self.app.sync_shared_indexes()
                self.runs += 1
            except Exception:  # keep the host process alive; the next tick retries
                log.exception("scheduled purge failed")
