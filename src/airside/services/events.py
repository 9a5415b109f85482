"""Events: what cameras saw and pipelines noticed, stored, listed, purged and erased.

One model (``store.models.Event``) for identity matches, watchlist hits (which name the
review case they opened), safety events (``record_safety_event``: no identity, a
face-blurred snapshot at most) and system events (a stream lost). An
identity event is a biometric operation on a person: it is authorised on its gallery
(``event.record``), audited in the same transaction, linked to the subject row so that
erasure and withdrawal remove it, and it may carry evidence: the track's best face crop
(JPEG), kept only while the settings and the gallery's own retention allow
(``evidence_until``), and sealed (AES-256-GCM under the template key ring, bound to the
event row) whenever template protection is in force. System events carry no personal
data and are not audited. ``purge_events`` is run by the retention purge.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from airside.config import Settings
from airside.errors import AirsideError, ConflictError, NotFoundError
from airside.governance import access, audit, pseudonyms
from airside.governance.access import GalleryRef
from airside.governance.principals import Principal
from airside.governance.template_protection import event_crop_aad
from airside.services.app import Airside
from airside.services.authz import authorize, authorize_gallery
from airside.store.tables import (
    Event,
    Gallery,
    PrincipalRecord,
    ReviewCase,
    Subject,
    Template,
)

IDENTITY = "identity"
WATCHLIST_HIT = "watchlist_hit"
RETRACTED = "_retracted"  # suffix: an identity or watchlist hit its track later overturned
SYSTEM = "system"
SEVERITIES = ("info", "warning", "critical")
# System events that need someone's attention (everything else is informational).
SYSTEM_WARNINGS = frozenset({"stream_lost"})
# Safety events (analytics/rules.py and abandoned objects): the Event's type is the rule's.
SAFETY_TYPES = frozenset(
    {"intrusion", "loitering", "crowding", "running", "fall", "line_cross", "abandoned_object"}
)
MAX_SAFETY_TRACKS = 1000
# A face crop is a few kilobytes; anything this large is not one.
MAX_CROP_BYTES = 2 * 1024 * 1024
MAX_LIST = 10_000
_KIND = re.compile(r"^[a-z0-9][a-z0-9_.:\-]{0,39}$")


@dataclass(frozen=True)
class EventView:
    """An event as callers see it: never the crop itself, only whether one is kept."""

    id: int
    type: str
    severity: str
    camera: str
    track: int | None
    subject: str | None
    gallery: str | None
    purpose: str | None
    score: float | None
    zone: str | None
    first_seen: float
    last_seen: float
    started_at: str
    created_at: str
    detail: dict[str, Any]
    review_case: int | None
    crop: bool
    crop_until: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def json_line(self) -> str:
        """One line of JSON (for JSON-lines feeds and files)."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _utc(t: datetime | None) -> datetime:
    return datetime.now(UTC) if t is None else _aware(t).astimezone(UTC)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else _aware(t).astimezone(UTC).isoformat(timespec="milliseconds")


def view_of(ev: Event) -> EventView:
    detail: dict[str, Any] = json.loads(ev.detail) if ev.detail else {}
    return EventView(
        id=ev.id,
        type=ev.type,
        severity=ev.severity,
        camera=ev.camera,
        track=ev.track,
        subject=ev.subject_ref,
        gallery=ev.gallery,
        purpose=ev.purpose,
        score=ev.score,
        zone=ev.zone,
        first_seen=ev.first_seen,
        last_seen=ev.last_seen,
        started_at=_iso(ev.started_at) or "",
        created_at=_iso(ev.created_at) or "",
        detail=detail,
        review_case=ev.review_case,
        crop=ev.evidence is not None,
        crop_until=_iso(ev.evidence_until) if ev.evidence is not None else None,
    )


# ---------------------------------------------------------------------------------------------
# validation


def _text(value: str, what: str, limit: int = 200) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ValueError(f"{what} must be 1-{limit} characters")
    return value


def _seconds(value: float, what: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number of stream seconds")
    return v


def _detail(detail: dict[str, Any] | None) -> str:
    try:
        return json.dumps(detail or {}, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"event detail must be plain JSON: {e}") from None


def _check_crop(crop: bytes | None) -> bytes | None:
    if crop is None:
        return None
    if not isinstance(crop, bytes | bytearray) or bytes(crop[:3]) != b"\xff\xd8\xff":
        raise ValueError("an event crop must be a JPEG image")
    if len(crop) > MAX_CROP_BYTES:
        raise ValueError(f"an event crop must be at most {MAX_CROP_BYTES} bytes")
    return bytes(crop)


# ---------------------------------------------------------------------------------------------
# retention of crops


def crop_until(settings: Settings, gallery: Gallery, now: datetime) -> datetime | None:
    """Until when a crop taken ``now`` of someone in ``gallery`` may be kept, or None when it
    may not be kept at all: ``event_crop_retention_days`` (and never past the event itself),
    but never longer than a template enrolled now would be kept in the gallery
    (``retain_seconds``) nor past the gallery's end (``retain_until``, e.g. a boarding
    gallery's departure + 12 h)."""
    if not settings.keep_event_crops:
        return None
    days = min(settings.event_crop_retention_days, settings.event_retention_days)
    until = now + timedelta(days=days)
    if gallery.retain_seconds is not None:
        until = min(until, now + timedelta(seconds=gallery.retain_seconds))
    if gallery.retain_until is not None:
        until = min(until, _aware(gallery.retain_until).astimezone(UTC))
    return until if until > now else None


# ---------------------------------------------------------------------------------------------
# recording


def _store_evidence(app: Airside, ev: Event, blob: bytes, until: datetime) -> None:
    """Keep ``blob`` (a crop or snapshot) on the flushed event ``ev`` until ``until``,
    sealed under the template key (bound to the event's id) when protection is on."""
    key = app.template_protector.write_key()
    if key is None:
        ev.evidence = blob
    else:
        kid, k = key
        ev.evidence = app.template_protector.seal(kid, k, blob, event_crop_aad(ev.id, kid))
        ev.evidence_key_id = kid
    ev.evidence_until = until


def record_identity_event(
    app: Airside,
    principal: Principal,
    *,
    camera: str,
    track: int,
    subject: str,
    gallery: str,
    score: float,
    first_seen: float,
    last_seen: float,
    crop_jpeg: bytes | None,
    review_case: int | None = None,
    detail: dict[str, Any] | None = None,
    zone: str | None = None,
    started_at: datetime | None = None,
) -> int:
    """Store that ``subject`` of ``gallery`` was identified on ``camera``'s ``track``, with
    its audit record, in one transaction; returns the event id.

    A watchlist hit (``review_case`` given: the case its search opened) is stored as type
    ``watchlist_hit``. ``crop_jpeg`` is kept only while the retention allows
    (:func:`crop_until`) and is sealed when template protection is in force. The subject
    must still be enrolled in the gallery: an identification that raced an erasure, a
    withdrawal or a purge is refused (``not_enrolled``), so no event outlives them.
    ``started_at``: the wall clock of ``first_seen`` (default: now minus the time the
    track has been seen, for callers that record as the track is seen)."""
    _text(camera, "camera")
    _text(subject, "subject")
    if zone is not None:
        _text(zone, "zone")
    if isinstance(track, bool) or not isinstance(track, int) or track < 0:
        raise ValueError("track must be an integer >= 0")
    first = _seconds(first_seen, "first_seen")
    last = _seconds(last_seen, "last_seen")
    if last < first:
        raise ValueError("last_seen must not be before first_seen")
    if not math.isfinite(float(score)):
        raise ValueError("score must be a finite number")
    crop = _check_crop(crop_jpeg)
    trail = _detail(detail)
    view = authorize_gallery(app, principal, "event.record", gallery)
    now = datetime.now(UTC)
    start = _utc(started_at) if started_at is not None else now - timedelta(seconds=last - first)
    kind = WATCHLIST_HIT if review_case is not None else IDENTITY
    try:
        with app.session() as s:
            subj_row = s.execute(
                select(Subject.id, Subject.audit_salt).where(Subject.reference == subject)
            ).first()
            if subj_row is None:
                raise NotFoundError(f"no subject {subject!r}")
            subj_id, salt = subj_row
            enrolled = s.scalar(
                select(Template.id)
                .where(Template.subject_id == subj_id, Template.gallery_id == view.id)
                .limit(1)
            )
            if enrolled is None:
                raise NotFoundError(
                    f"subject {subject!r} is no longer enrolled in gallery {gallery!r} "
                    "(erased, withdrawn or purged): the event is not stored",
                    code="not_enrolled",
                )
            if review_case is not None:
                case = s.get(ReviewCase, review_case)
                if case is None or case.gallery != view.name or case.subject != subject:
                    raise ConflictError(
                        f"review case {review_case} is not a hit of {subject!r} in {gallery!r}"
                    )
            g = s.get(Gallery, view.id)
            assert g is not None
            until = crop_until(app.settings, g, now) if crop is not None else None
            ev = Event(
                type=kind,
                severity="warning" if kind == WATCHLIST_HIT else "info",
                camera=camera,
                track=track,
                subject_id=subj_id,
                subject_ref=subject,
                gallery=view.name,
                purpose=view.purpose,
                score=float(score),
                zone=zone,
                first_seen=first,
                last_seen=last,
                started_at=start,
                created_at=now,
                detail=trail,
                review_case=review_case,
            )
            s.add(ev)
            s.flush()  # the id, which the sealed crop is bound to
            if crop is not None and until is not None:
                _store_evidence(app, ev, crop, until)
            audit.append(
                s,
                principal,
                "event.record",
                decision="recorded",
                purpose=view.purpose,
                gallery=view.name,
                result={
                    "event": ev.id,
                    "type": kind,
                    "subject": pseudonyms.pseudonym(salt),  # governance/pseudonyms.py
                    "track": track,
                    "camera": camera,
                    "score": round(float(score), 6),
                    "crop": ev.evidence is not None,
                    "review_case": review_case,
                },
            )
            return ev.id
    except AirsideError as e:
        app.audit_refusal(
            principal,
            "event.record",
            e,
            purpose=view.purpose,
            gallery=view.name,
            extra={"camera": camera, "track": track},
            about=subject,
        )
        raise


def update_event_seen(app: Airside, principal: Principal, event_id: int, last_seen: float) -> None:
    """Move an event's ``last_seen`` forward (the track is still in view).

    Authorised like recording (``event.record`` on the event's gallery) but not audited:
    it is bookkeeping on an event whose recording was audited, and adds no biometric data.
    A ``last_seen`` earlier than the stored one changes nothing."""
    last = _seconds(last_seen, "last_seen")
    with _event_action(app, principal, "event.record", event_id) as (_s, ev):
        if last > ev.last_seen:
            ev.last_seen = last


def record_system_event(
    app: Airside,
    principal: Principal,
    *,
    camera: str,
    type_: str,
    at: float,
    detail: str,
    started_at: datetime | None = None,
) -> int:
    """Store a system event (``type_`` e.g. ``stream_lost``, ``stream_restored``) of
    ``camera`` at stream second ``at``; returns its id. No biometric data, so no audit
    record; the caller must still be allowed ``event.record``."""
    _text(camera, "camera")
    if not isinstance(type_, str) or not _KIND.match(type_):
        raise ValueError(f"system event type {type_!r} must be 1-40 of a-z 0-9 _ . : -")
    t = _seconds(at, "at")
    trail = _detail({"kind": type_, "message": str(detail)[:2000]})
    authorize(app, principal, "event.record")
    now = datetime.now(UTC)
    with app.session() as s:
        ev = Event(
            type=SYSTEM,
            severity="warning" if type_ in SYSTEM_WARNINGS else "info",
            camera=camera,
            first_seen=t,
            last_seen=t,
            started_at=_utc(started_at) if started_at is not None else now,
            created_at=now,
            detail=trail,
        )
        s.add(ev)
        s.flush()
        return ev.id


def safety_snapshot_until(settings: Settings, now: datetime) -> datetime | None:
    """Until when a safety event's snapshot taken ``now`` may be kept: at most
    ``event_crop_retention_days`` (and never past the event itself); None when snapshots
    may not be kept (``keep_event_crops`` off, or a retention of 0 days)."""
    if not settings.keep_event_crops:
        return None
    days = min(settings.event_crop_retention_days, settings.event_retention_days)
    until = now + timedelta(days=days)
    return until if until > now else None


def record_safety_event(
    app: Airside,
    principal: Principal,
    *,
    camera: str,
    type_: str,
    severity: str,
    at: float,
    first_seen: float,
    zone: str | None,
    tracks: list[int],
    detail: dict[str, Any],
    snapshot_jpeg: bytes | None = None,
    started_at: datetime | None = None,
) -> int:
    """Store a safety event (``type_``: the rule type, e.g. ``intrusion``, ``fall``) that
    ``camera`` noticed from stream second ``first_seen`` to ``at``; returns its id.

    No identity is involved: no subject, no gallery, no template; ``tracks`` (the track ids
    involved) go into ``detail``. Authorised as ``event.safety`` (roles camera and operator;
    not a gallery action) and audited as ``event.safety`` with the type, zone, track ids
    and whether a snapshot is kept, never with any biometric data.

    ``snapshot_jpeg`` is evidence of the scene: **the caller must have blurred every face
    in it already** (it is stored as given). It is kept only for
    ``event_crop_retention_days`` (:func:`safety_snapshot_until`) and sealed like face
    crops when template protection is in force. ``started_at``: the wall clock of
    ``first_seen`` (default: now minus ``at - first_seen``)."""
    _text(camera, "camera")
    if type_ not in SAFETY_TYPES:
        raise ValueError(
            f"safety event type {type_!r} must be one of {', '.join(sorted(SAFETY_TYPES))}"
        )
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    if zone is not None:
        _text(zone, "zone")
    first = _seconds(first_seen, "first_seen")
    last = _seconds(at, "at")
    if last < first:
        raise ValueError("at must not be before first_seen")
    if not isinstance(tracks, list | tuple) or len(tracks) > MAX_SAFETY_TRACKS:
        raise ValueError(f"tracks must be a list of at most {MAX_SAFETY_TRACKS} track ids")
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in tracks):
        raise ValueError("tracks must be integers >= 0")
    ids = [int(k) for k in tracks]
    if not isinstance(detail, dict):
        raise ValueError("detail must be a dict")
    trail = _detail({**detail, "tracks": ids})
    snapshot = _check_crop(snapshot_jpeg)
    authorize(app, principal, "event.safety")
    now = datetime.now(UTC)
    start = _utc(started_at) if started_at is not None else now - timedelta(seconds=last - first)
    with app.session() as s:
        ev = Event(
            type=type_,
            severity=severity,
            camera=camera,
            track=ids[0] if ids else None,
            zone=zone,
            first_seen=first,
            last_seen=last,
            started_at=start,
            created_at=now,
            detail=trail,
        )
        s.add(ev)
        s.flush()  # the id, which a sealed snapshot is bound to
        until = safety_snapshot_until(app.settings, now) if snapshot is not None else None
        if snapshot is not None and until is not None:
            _store_evidence(app, ev, snapshot, until)
        audit.append(
            s,
            principal,
            "event.safety",
            decision="recorded",
            result={
                "event": ev.id,
                "type": type_,
                "severity": severity,
                "camera": camera,
                "zone": zone,
                "tracks": ids,
                "snapshot": ev.evidence is not None,
            },
        )
        return ev.id


# ---------------------------------------------------------------------------------------------
# reading


def retract_identity_event(
    app: Airside,
    principal: Principal,
    event_id: int,
    *,
    reason: str,
    replaced_by: int | None = None,
) -> None:
    """Mark an identity event its own track later overturned: the votes settled on another
    subject (``replaced_by`` names that event) or on *unknown*.

    The row stays, typed ``identity_retracted`` (``watchlist_hit_retracted``), because the
    system announced it and someone may have acted on it; its crop is deleted at once,
    because the face it shows is no longer believed to be the subject's. Authorised like
    recording and audited (``event.retract``) in the same transaction."""
    why = _text(reason, "reason", 40)
    with _event_action(app, principal, "event.record", event_id) as (s, ev):
        if ev.type not in (IDENTITY, WATCHLIST_HIT):
            raise ConflictError(f"event {event_id} is a {ev.type} event, not an identity")
        had_crop = ev.evidence is not None
        ev.type = ev.type + RETRACTED
        ev.evidence = ev.evidence_key_id = ev.evidence_until = None
        detail = json.loads(ev.detail) if ev.detail else {}
        detail["retracted"] = {"reason": why, "replaced_by": replaced_by}
        ev.detail = _detail(detail)
        audit.append(
            s,
            principal,
            "event.retract",
            decision="retracted",
            purpose=ev.purpose,
            gallery=ev.gallery,
            result={
                "event": ev.id,
                "subject": pseudonyms.of_subject_id(s, ev.subject_id),
                "track": ev.track,
                "camera": ev.camera,
                "reason": why,
                "replaced_by": replaced_by,
                "crop_deleted": had_crop,
            },
        )


@contextmanager
def _event_action(
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
            q = q.where(Event.started_at >= _utc(since))
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
                "since": _iso(_utc(since)) if since is not None else None,
            },
        )
    return out


def event_crop(app: Airside, principal: Principal, event_id: int) -> bytes | None:
    """The event's face crop (JPEG, decrypted), or None when none is kept (never taken,
    not allowed, or past its retention). Audited: a crop is biometric data."""
    now = datetime.now(UTC)
    with _event_action(app, principal, "event.crop", event_id) as (s, ev):
        crop: bytes | None = None
        if ev.evidence is not None and (
            ev.evidence_until is None or _aware(ev.evidence_until) > now
        ):
            if ev.evidence_key_id is None:
                crop = ev.evidence
            else:
                crop = app.template_protector.open(
                    ev.evidence_key_id,
                    ev.evidence,
                    event_crop_aad(ev.id, ev.evidence_key_id),
                    f"the crop of event {ev.id}",
                )
        audit.append(
            s,
            principal,
            "event.crop",
            decision="shown" if crop is not None else "no_crop",
            purpose=ev.purpose,
            gallery=ev.gallery,
            result={
                "event": ev.id,
                "subject": pseudonyms.of_subject_id(s, ev.subject_id),
                "camera": ev.camera,
            },
        )
    return crop


# ---------------------------------------------------------------------------------------------
# retention


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
    now = _utc(now)
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
