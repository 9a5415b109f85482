"""Recording events: identity matches and watchlist hits, safety events, system events,
and the later corrections of an identity event (still in view, overturned).

An identity event is a biometric operation on a person: it is authorised on its gallery
(``event.record``), audited in the same transaction and linked to the subject row so that
erasure and withdrawal remove it. Safety events carry no identity (``event.safety``);
system events carry no personal data and are not audited. Every row is built by
:func:`_add_event`, so the columns, the start time and the evidence are handled alike.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from airside.errors import AirsideError, ConflictError, NotFoundError
from airside.governance import audit, pseudonyms
from airside.governance.principals import Principal
from airside.services.app import Airside
from airside.services.authz import authorize, authorize_gallery
from airside.services.events import outbox
from airside.services.events.evidence import (
    check_crop,
    crop_until,
    safety_snapshot_until,
    store_evidence,
)
from airside.services.events.fields import (
    check_key,
    check_text,
    detail_json,
    stream_seconds,
    utc,
)
from airside.services.events.kinds import (
    IDENTITY,
    RETRACTED,
    SAFETY_TYPES,
    SEVERITIES,
    SYSTEM,
    SYSTEM_WARNINGS,
    WATCHLIST_HIT,
)
from airside.services.events.scope import event_action
from airside.store.tables import Event, Gallery, ReviewCase, Subject, Template

MAX_SAFETY_TRACKS = 1000
_KIND = re.compile(r"^[a-z0-9][a-z0-9_.:\-]{0,39}$")


def _add_event(
    app: Airside,
    s: Session,
    *,
    type_: str,
    severity: str,
    camera: str,
    first_seen: float,
    last_seen: float,
    now: datetime,
    started_at: datetime | None,
    detail: str,
    track: int | None = None,
    zone: str | None = None,
    subject_id: int | None = None,
    subject_ref: str | None = None,
    gallery: str | None = None,
    purpose: str | None = None,
    score: float | None = None,
    review_case: int | None = None,
    evidence: bytes | None = None,
    evidence_until: datetime | None = None,
    client_key: str | None = None,
) -> Event:
    """Add one event row to ``s`` and flush it (the id, which sealed evidence is bound to).

    ``started_at``: the wall clock of ``first_seen`` (default: ``now`` minus the time the
    event has lasted, for callers that record as it happens). ``evidence`` is kept until
    ``evidence_until`` when both are given (:func:`evidence.store_evidence`)."""
    ev = Event(
        type=type_,
        severity=severity,
        camera=camera,
        track=track,
        subject_id=subject_id,
        subject_ref=subject_ref,
        gallery=gallery,
        purpose=purpose,
        score=score,
        zone=zone,
        first_seen=first_seen,
        last_seen=last_seen,
        started_at=(
            utc(started_at)
            if started_at is not None
            else now - timedelta(seconds=last_seen - first_seen)
        ),
        created_at=now,
        detail=detail,
        review_case=review_case,
        client_key=client_key,
    )
    # Followers read "the events above id N": an id must be committed in the order it was
    # handed out, or one committed late below a follower's place would never be sent. On
    # PostgreSQL (where writers do not queue for the database as on SQLite) the id is
    # therefore taken under the appenders' lock, held to the commit (stream.py).
    audit.lock_writers(s)
    s.add(ev)
    s.flush()
    if evidence is not None and evidence_until is not None:
        store_evidence(app, ev, evidence, evidence_until)
    outbox.enqueue(s, ev)  # webhooks: queued with the event, so none is lost (outbox.py)
    return ev


def _recorded_as(s: Session, camera: str, client_key: str | None) -> int | None:
    """The id of the event ``camera`` already recorded under ``client_key`` (it is sent
    again), or None. Looked up under the appenders' lock, held to the commit, so that two
    deliveries of one event racing each other record it once."""
    if client_key is None:
        return None
    audit.lock_writers(s)
    found: int | None = s.scalar(
        select(Event.id).where(Event.camera == camera, Event.client_key == client_key)
    )
    return found


def event_for_key(app: Airside, camera: str, client_key: str) -> tuple[int, str] | None:
    """(id, type) of the event ``camera`` recorded under ``client_key``, or None: how a
    camera worker elsewhere names an event in a later correction. Reads an id only; the
    correction itself is authorised as it is made."""
    check_key(client_key)
    with app.session(readonly=True) as s:
        row = s.execute(
            select(Event.id, Event.type).where(
                Event.camera == camera, Event.client_key == client_key
            )
        ).first()
    return None if row is None else (int(row[0]), str(row[1]))


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
    client_key: str | None = None,
) -> int:
    """Store that ``subject`` of ``gallery`` was identified on ``camera``'s ``track``, with
    its audit record, in one transaction; returns the event id.

    A watchlist hit (``review_case`` given: the case its search opened) is stored as type
    ``watchlist_hit``. ``crop_jpeg`` is kept only while the retention allows
    (:func:`crop_until`) and is sealed when template protection is in force. The subject
    must still be enrolled in the gallery: an identification that raced an erasure, a
    withdrawal or a purge is refused (``not_enrolled``), so no event outlives them.
    ``started_at``: the wall clock of ``first_seen`` (default: now minus the time the
    track has been seen, for callers that record as the track is seen). ``client_key``: the
    name the caller gave the event; the same name again returns the event recorded first
    and records nothing (see :func:`_recorded_as`)."""
    check_text(camera, "camera")
    key = check_key(client_key)
    check_text(subject, "subject")
    if zone is not None:
        check_text(zone, "zone")
    if isinstance(track, bool) or not isinstance(track, int) or track < 0:
        raise ValueError("track must be an integer >= 0")
    first = stream_seconds(first_seen, "first_seen")
    last = stream_seconds(last_seen, "last_seen")
    if last < first:
        raise ValueError("last_seen must not be before first_seen")
    if not math.isfinite(float(score)):
        raise ValueError("score must be a finite number")
    crop = check_crop(crop_jpeg)
    trail = detail_json(detail)
    view = authorize_gallery(app, principal, "event.record", gallery)
    now = datetime.now(UTC)
    kind = WATCHLIST_HIT if review_case is not None else IDENTITY
    try:
        with app.session() as s:
            if (done := _recorded_as(s, camera, key)) is not None:
                return done
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
            ev = _add_event(
                app,
                s,
                type_=kind,
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
                now=now,
                started_at=started_at,
                detail=trail,
                review_case=review_case,
                evidence=crop,
                evidence_until=crop_until(app.settings, g, now) if crop is not None else None,
                client_key=key,
            )
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
    last = stream_seconds(last_seen, "last_seen")
    with event_action(app, principal, "event.record", event_id) as (_s, ev):
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
    client_key: str | None = None,
) -> int:
    """Store a system event (``type_`` e.g. ``stream_lost``, ``stream_restored``) of
    ``camera`` at stream second ``at``; returns its id. No biometric data, so no audit
    record; the caller must still be allowed ``event.record``. ``client_key``: as for
    :func:`record_identity_event`."""
    check_text(camera, "camera")
    key = check_key(client_key)
    if not isinstance(type_, str) or not _KIND.match(type_):
        raise ValueError(f"system event type {type_!r} must be 1-40 of a-z 0-9 _ . : -")
    t = stream_seconds(at, "at")
    trail = detail_json({"kind": type_, "message": str(detail)[:2000]})
    authorize(app, principal, "event.record")
    now = datetime.now(UTC)
    with app.session() as s:
        if (done := _recorded_as(s, camera, key)) is not None:
            return done
        ev = _add_event(
            app,
            s,
            type_=SYSTEM,
            severity="warning" if type_ in SYSTEM_WARNINGS else "info",
            camera=camera,
            first_seen=t,
            last_seen=t,
            now=now,
            started_at=started_at,
            detail=trail,
            client_key=key,
        )
        return ev.id


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
    client_key: str | None = None,
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
    ``first_seen`` (default: now minus ``at - first_seen``). ``client_key``: as for
    :func:`record_identity_event`."""
    check_text(camera, "camera")
    key = check_key(client_key)
    if type_ not in SAFETY_TYPES:
        raise ValueError(
            f"safety event type {type_!r} must be one of {', '.join(sorted(SAFETY_TYPES))}"
        )
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    if zone is not None:
        check_text(zone, "zone")
    first = stream_seconds(first_seen, "first_seen")
    last = stream_seconds(at, "at")
    if last < first:
        raise ValueError("at must not be before first_seen")
    if not isinstance(tracks, list | tuple) or len(tracks) > MAX_SAFETY_TRACKS:
        raise ValueError(f"tracks must be a list of at most {MAX_SAFETY_TRACKS} track ids")
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in tracks):
        raise ValueError("tracks must be integers >= 0")
    ids = [int(k) for k in tracks]
    if not isinstance(detail, dict):
        raise ValueError("detail must be a dict")
    trail = detail_json({**detail, "tracks": ids})
    snapshot = check_crop(snapshot_jpeg)
    authorize(app, principal, "event.safety")
    now = datetime.now(UTC)
    with app.session() as s:
        if (done := _recorded_as(s, camera, key)) is not None:
            return done
        ev = _add_event(
            app,
            s,
            type_=type_,
            severity=severity,
            camera=camera,
            track=ids[0] if ids else None,
            zone=zone,
            first_seen=first,
            last_seen=last,
            now=now,
            started_at=started_at,
            detail=trail,
            evidence=snapshot,
            evidence_until=(
                safety_snapshot_until(app.settings, now) if snapshot is not None else None
            ),
            client_key=key,
        )
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
    why = check_text(reason, "reason", 40)
    with event_action(app, principal, "event.record", event_id) as (s, ev):
        if ev.type not in (IDENTITY, WATCHLIST_HIT):
            raise ConflictError(f"event {event_id} is a {ev.type} event, not an identity")
        had_crop = ev.evidence is not None
        ev.type = ev.type + RETRACTED
        ev.evidence = ev.evidence_key_id = ev.evidence_until = None
        detail = json.loads(ev.detail) if ev.detail else {}
        detail["retracted"] = {"reason": why, "replaced_by": replaced_by}
        ev.detail = detail_json(detail)
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
