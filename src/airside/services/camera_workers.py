"""Camera workers on other machines: one camera's pipeline run where its feed is, with no
access to the store, searching and recording through the server as the camera's principal.

The worker decodes, detects, tracks and embeds locally; it sends the server embeddings
(never a frame or a crop) to search, and the events its pipeline decides. Here each of
those is the same use-case a local camera runs: searches through
``watch.identify_faces`` (``matching.identify_many``: authorised per gallery, audited,
watchlist hits opened for review), events through ``services.events`` (authorised and
audited there). What this module adds is the check that only the camera's own principal
acts for it (``camera.worker``, a refusal audited), and the event names (client keys)
that let a worker send an event again without it being recorded twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from airside.errors import AccessDenied, AirsideError, ConflictError, NotFoundError
from airside.governance import audit
from airside.governance.principals import Principal
from airside.services import events
from airside.services.app import Airside
from airside.services.authz import authorize, authorize_gallery
from airside.services.gallery_view import GalleryView
from airside.services.watch import EmbeddedFace, identify_faces
from airside.video.pipeline import Match
from airside.vision.contract import EmbeddingContract

#: At most this many faces in one search request (a frame's faces) and events in one batch.
MAX_FACES = 64
MAX_EVENTS = 100


@dataclass(frozen=True)
class RemoteCamera:
    """What the server's configuration says of a camera (the adapter reads it)."""

    name: str
    principal: str
    galleries: tuple[str, ...]
    purpose: str | None
    remote: bool
    scene: bool


def authorize_worker(app: Airside, who: Principal, camera: RemoteCamera) -> None:
    """Raise (audited as ``camera.worker``) unless ``who`` is the camera's own principal
    and the camera is one that a worker elsewhere runs: another camera's key, or any other
    principal (an administrator included), never acts for it."""
    try:
        if who.name != camera.principal:
            raise AccessDenied(
                f"only camera {camera.name!r}'s own principal may act for it", code="forbidden"
            )
        if not camera.remote:
            raise ConflictError(
                f"camera {camera.name!r} is run by the server itself, not by a worker elsewhere",
                details={"field": "remote"},
            )
    except AirsideError as e:
        app.audit_refusal(who, "camera.worker", e, extra={"camera": camera.name})
        raise


def configure(app: Airside, who: Principal, camera: RemoteCamera) -> list[GalleryView]:
    """The galleries the worker will search (their contracts and quality bars), once the
    camera's principal may search each of them (and record safety events, with a scene).
    Audited: it is the moment a machine elsewhere is handed the camera's source."""
    authorize_worker(app, who, camera)
    views = [authorize_gallery(app, who, "identify", g, camera.purpose) for g in camera.galleries]
    if camera.scene:
        authorize(app, who, "event.safety")
    with app.session() as s:
        audit.append(
            s,
            who,
            "camera.worker",
            decision="configured",
            result={"camera": camera.name, "galleries": [v.name for v in views]},
        )
    return views


def identify(
    app: Airside,
    who: Principal,
    camera: RemoteCamera,
    contract: EmbeddingContract,
    faces: Sequence[EmbeddedFace],
    t: float,
) -> list[Match]:
    """Search the camera's galleries (the server's list, not the worker's) for faces the
    worker embedded under ``contract``: a contract other than a gallery's is refused
    (``contract_mismatch``, audited), as for any search."""
    authorize_worker(app, who, camera)
    try:
        if not camera.galleries:
            raise AirsideError(f"camera {camera.name!r} searches no gallery", code="bad_request")
        if not 1 <= len(faces) <= MAX_FACES:
            raise AirsideError(f"send 1-{MAX_FACES} faces at a time", code="validation")
        for f in faces:
            v = np.asarray(f.embedding)
            if v.shape != (contract.dim,) or not np.isfinite(v).all():
                raise AirsideError(
                    f"an embedding must be {contract.dim} finite numbers (the contract's "
                    "dimension)",
                    code="validation",
                    details={"field": "embedding"},
                )
        if not math.isfinite(t):
            raise AirsideError("t must be a finite number of stream seconds", code="validation")
    except AirsideError as e:
        app.audit_refusal(who, "identify", e, extra={"camera": camera.name})
        raise
    return identify_faces(
        app, who, camera.galleries, faces, t,
        camera=camera.name, contract=contract, purpose=camera.purpose,
    )  # fmt: skip


@dataclass(frozen=True)
class Recorded:
    """What became of one event of a batch: its id, or why it was refused (for good:
    sending it again cannot help)."""

    key: str
    event: int | None
    error: AirsideError | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "event": self.event,
            "error": None
            if self.error is None
            else {"code": self.error.code, "detail": str(self.error)},
        }


def record(
    app: Airside, who: Principal, camera: RemoteCamera, items: Sequence[Mapping[str, Any]]
) -> list[Recorded]:
    """Record a batch of the worker's events, in order, each as a local camera's sink would
    (one transaction each). An event named by a key already recorded is not recorded again;
    an event refused (its subject erased meanwhile, a correction of an event never
    recorded) is answered with its error and the rest go on."""
    authorize_worker(app, who, camera)
    if len(items) > MAX_EVENTS:
        raise AirsideError(f"send at most {MAX_EVENTS} events at a time", code="validation")
    out = []
    for item in items:
        try:
            out.append(Recorded(item["key"], _record_one(app, who, camera, item)))
        except ValueError as e:
            out.append(Recorded(item["key"], None, AirsideError(str(e), code="validation")))
        except AirsideError as e:
            out.append(Recorded(item["key"], None, e))
    return out


def _wall(seconds: float) -> datetime:
    if not math.isfinite(seconds):
        raise ValueError("started_at must be a finite time")
    return datetime.fromtimestamp(seconds, UTC)


def _ref(app: Airside, camera: RemoteCamera, key: str) -> tuple[int, str]:
    found = events.event_for_key(app, camera.name, key)
    if found is None:
        raise NotFoundError(f"camera {camera.name!r} recorded no event {key!r}")
    return found


def _record_one(app: Airside, who: Principal, camera: RemoteCamera, e: Mapping[str, Any]) -> int:
    kind, key = e["kind"], e["key"]
    if kind == "identity":
        if e["gallery"] not in camera.galleries:  # whatever else its principal may search
            error = AccessDenied(
                f"camera {camera.name!r} does not search gallery {e['gallery']!r}",
                code="out_of_scope",
            )
            app.audit_refusal(who, "event.record", error, gallery=e["gallery"],
                              extra={"camera": camera.name, "track": e["track"]})  # fmt: skip
            raise error
        return events.record_identity_event(
            app, who, camera=camera.name, track=e["track"], subject=e["subject"],
            gallery=e["gallery"], score=e["score"], first_seen=e["first_seen"],
            last_seen=e["last_seen"], crop_jpeg=None, review_case=e["review_case"],
            started_at=_wall(e["started_at"]), client_key=key,
        )  # fmt: skip
    if kind == "ended":  # the track left: its event's last sighting (idempotent)
        event_id, _ = _ref(app, camera, e["ref"])
        events.update_event_seen(app, who, event_id, e["last_seen"])
        return event_id
    if kind == "retracted":
        event_id, type_ = _ref(app, camera, e["ref"])
        if type_.endswith(events.RETRACTED):  # sent again: retracted already
            return event_id
        by = _ref(app, camera, e["replaced_by"])[0] if e["replaced_by"] is not None else None
        events.retract_identity_event(app, who, event_id, reason=e["reason"], replaced_by=by)
        return event_id
    if kind == "safety":
        return events.record_safety_event(
            app, who, camera=camera.name, type_=e["type"], severity=e["severity"], at=e["at"],
            first_seen=e["first_seen"], zone=e["zone"], tracks=list(e["tracks"]),
            detail=dict(e["detail"]), snapshot_jpeg=e["snapshot"],
            started_at=_wall(e["started_at"]), client_key=key,
        )  # fmt: skip
    if kind == "system":
        return events.record_system_event(
            app, who, camera=camera.name, type_=e["type"], at=e["at"], detail=e["detail"],
            started_at=_wall(e["started_at"]), client_key=key,
        )  # fmt: skip
    raise ValueError(f"unknown event kind {kind!r}")
