"""An event as callers see it: the stored row without its evidence.

The crop or snapshot never leaves the service through a view; only whether one is kept
and until when (reading it is ``evidence.event_crop``, audited).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from airside.services.events.fields import iso
from airside.store.tables import Event


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
        started_at=iso(ev.started_at) or "",
        created_at=iso(ev.created_at) or "",
        detail=detail,
        review_case=ev.review_case,
        crop=ev.evidence is not None,
        crop_until=iso(ev.evidence_until) if ev.evidence is not None else None,
    )
