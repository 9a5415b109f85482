"""Evidence on events: a face crop (identity events) or a face-blurred snapshot (safety
events), kept only while retention allows and sealed whenever template protection is on.

A crop is biometric data: how long it may be kept (the settings and the gallery's own
retention), how it is stored (AES-256-GCM under the template key ring, bound to the event
row) and how it is read back (authorised and audited) are decided here, in one place.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airside.config import Settings
from airside.governance import audit, pseudonyms
from airside.governance.principals import Principal
from airside.governance.template_protection import event_crop_aad
from airside.services.app import Airside
from airside.services.events.fields import aware
from airside.services.events.scope import event_action
from airside.store.tables import Event, Gallery

# A face crop is a few kilobytes; anything this large is not one.
MAX_CROP_BYTES = 2 * 1024 * 1024


def check_crop(crop: bytes | None) -> bytes | None:
    """``crop`` as bytes when it is a JPEG of at most :data:`MAX_CROP_BYTES`."""
    if crop is None:
        return None
    if not isinstance(crop, bytes | bytearray) or bytes(crop[:3]) != b"\xff\xd8\xff":
        raise ValueError("an event crop must be a JPEG image")
    if len(crop) > MAX_CROP_BYTES:
        raise ValueError(f"an event crop must be at most {MAX_CROP_BYTES} bytes")
    return bytes(crop)


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
        until = min(until, aware(gallery.retain_until).astimezone(UTC))
    return until if until > now else None


def safety_snapshot_until(settings: Settings, now: datetime) -> datetime | None:
    """Until when a safety event's snapshot taken ``now`` may be kept: at most
    ``event_crop_retention_days`` (and never past the event itself); None when snapshots
    may not be kept (``keep_event_crops`` off, or a retention of 0 days)."""
    if not settings.keep_event_crops:
        return None
    days = min(settings.event_crop_retention_days, settings.event_retention_days)
    until = now + timedelta(days=days)
    return until if until > now else None


def store_evidence(app: Airside, ev: Event, blob: bytes, until: datetime) -> None:
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


def event_crop(app: Airside, principal: Principal, event_id: int) -> bytes | None:
    """The event's face crop (JPEG, decrypted), or None when none is kept (never taken,
    not allowed, or past its retention). Audited: a crop is biometric data."""
    now = datetime.now(UTC)
    with event_action(app, principal, "event.crop", event_id) as (s, ev):
        crop: bytes | None = None
        if ev.evidence is not None and (
            ev.evidence_until is None or aware(ev.evidence_until) > now
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
