"""Watching a camera: the video pipeline wired to the face models and the services.

Every identification goes through ``matching.identify_many`` (authorised for the
camera's principal, audited, watchlist hits opened for review; the crops of one frame in
one transaction), and every event through ``services.events`` (stored only where retention
allows). Only the galleries the caller names, and its scopes allow, are searched. Faces are
found, cut and embedded by vision's frame engine, seen here only as its Protocol.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from airside.analytics.abandoned import AbandonedConfig
from airside.analytics.rules import SafetyEvent
from airside.analytics.scene import Scene, load_scene
from airside.config import Settings
from airside.errors import AirsideError
from airside.governance.principals import Principal
from airside.private_files import open_private
from airside.services import events, matching
from airside.services.app import Airside
from airside.services.authz import authorize, authorize_gallery
from airside.services.retention import PurgeScheduler
from airside.video.annotate import H264Writer
from airside.video.people_gate import MotionGate
from airside.video.pipeline import (
    IdentityEvent,
    Match,
    Pipeline,
    WatchConfig,
    WatchStats,
    WatchSummary,
)
from airside.video.safety import SafetyAnalytics
from airside.video.sources import SystemEvent, VideoSource
from airside.video.track_identity import IdentityConfig
from airside.vision.contract import EmbeddingContract
from airside.vision.frame_faces import video_engine
from airside.vision.people import build_person_detector
from airside.vision.protocols import FaceCrop, FrameFaceEngine


@dataclass(frozen=True)
class EmbeddedFace:
    """A face crop already embedded (here, or by a camera worker on another machine): the
    vector, the crop's quality and SHA-256 (logged keyed), and the track it belongs to."""

    embedding: np.ndarray
    quality: float
    crop_sha256: str
    track: int


def identify_faces(
    app: Airside,
    principal: Principal,
    galleries: Sequence[str],
    faces: Sequence[EmbeddedFace],
    t: float,
    *,
    camera: str,
    contract: EmbeddingContract,
    purpose: str | None = None,
) -> list[Match]:
    """The best match of each face over ``galleries``, searched in one transaction
    (``matching.identify_many``: authorised, audited with the camera and track, watchlist
    hits opened for review)."""
    probes = [
        matching.Probe(f.embedding, f.quality, f.crop_sha256,
                       {"camera": camera, "track": f.track, "t": round(t, 3)})
        for f in faces
    ]  # fmt: skip
    results = matching.identify_many(
        app, principal, list(galleries), probes, contract=contract, k=1, purpose=purpose
    )
    return [best_match(galleries, per_gallery) for per_gallery in results]


def best_match(galleries: Sequence[str], results: Sequence[matching.IdentifyResult]) -> Match:
    """The best match over the galleries (one result each, in the order of ``galleries``)."""
    best = Match(None, 0.0)
    for g, res in zip(galleries, results, strict=True):
        top = res.candidates[0].score if res.candidates else 0.0
        if res.match and (best.subject is None or top > best.score):
            best = Match(res.candidates[0].subject, top, g, res.review_case)
        elif best.subject is None:
            best = Match(None, max(best.score, top))
    return best


class ServiceIdentifier:
    """Searches each of the camera's galleries through the service layer."""

    def __init__(
        self,
        app: Airside,
        principal: Principal,
        engine: FrameFaceEngine,
        galleries: list[str],
        camera: str,
        purpose: str | None = None,
    ) -> None:
        self.app, self.principal, self.engine = app, principal, engine
        self.galleries, self.camera, self.purpose = galleries, camera, purpose

    def identify_many(self, crops: Sequence[tuple[FaceCrop, int]], t: float) -> list[Match]:
        """The frame's crops embedded in one batch and searched in one transaction."""
        if not crops:
            return []
        vecs = self.engine.embed_many([crop for crop, _ in crops])
        faces = [
            EmbeddedFace(vec, crop.quality, crop.sha256, track_id)
            for (crop, track_id), vec in zip(crops, vecs, strict=True)
        ]
        return identify_faces(
            self.app, self.principal, self.galleries, faces, t,
            camera=self.camera, contract=self.engine.contract, purpose=self.purpose,
        )  # fmt: skip


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class StoreSink:
    """Identity events into the store (at decision time) and, complete, into JSON lines."""

    def __init__(
        self, app: Airside, principal: Principal, camera: str, jsonl: IO[str] | None
    ) -> None:
        self.app, self.principal, self.camera, self.jsonl = app, principal, camera, jsonl

    def decided(self, event: IdentityEvent) -> None:
        event.event_id = events.record_identity_event(
            self.app,
            self.principal,
            camera=event.camera,
            track=event.track,
            subject=event.subject,
            gallery=event.gallery or "",
            score=event.score,
            first_seen=event.first_seen,
            last_seen=event.last_seen,
            crop_jpeg=_jpeg(event.crop.image) if event.crop is not None else None,
            review_case=event.review_case,
        )

    def ended(self, event: IdentityEvent) -> None:
        if event.event_id is not None:
            events.update_event_seen(self.app, self.principal, event.event_id, event.last_seen)
        self._line({**event.as_dict(), "event_id": event.event_id})

    def retracted(self, event: IdentityEvent, replaced_by: IdentityEvent | None) -> None:
        if event.event_id is None:
            return
        events.retract_identity_event(
            self.app,
            self.principal,
            event.event_id,
            reason="unknown" if replaced_by is None else "another_subject",
            replaced_by=None if replaced_by is None else replaced_by.event_id,
        )

    def safety(self, event: SafetyEvent, snapshot_jpeg: bytes | None) -> None:
        event_id = events.record_safety_event(
            self.app,
            self.principal,
            camera=self.camera,
            type_=event.type,
            severity=event.severity,
            at=event.at,
            first_seen=event.started_at,
            zone=event.zone,
            tracks=list(event.tracks),
            detail={**event.detail, "rule": event.rule, "line": event.line},
            snapshot_jpeg=snapshot_jpeg,
        )
        self._line({**event.as_dict(), "camera": self.camera, "event_id": event_id})

    def system(self, event: SystemEvent) -> None:
        events.record_system_event(
            self.app,
            self.principal,
            camera=self.camera,
            type_=event.type,
            at=event.at,
            detail=event.detail,
        )
        self._line({"type": event.type, "camera": self.camera, "at": round(event.at, 3),
                    "detail": event.detail})  # fmt: skip

    def _line(self, obj: dict[str, object]) -> None:
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(obj) + "\n")
            self.jsonl.flush()  # an event written is an event kept, whatever happens next


@dataclass
class WatchRequest:
    galleries: list[str] = field(default_factory=list)
    camera: str = "camera"
    purpose: str | None = None
    out: Path | None = None
    events_path: Path | None = None
    redact: bool = False
    detect_every: int = 1
    realtime: bool | None = None
    max_identifications: int = 3
    cut_threshold: float | None = 27.0  # end every track at a hard cut (video/cuts.py)
    # Safety analytics: a scene file (zones, lines, rules); the person detector by name
    # (None: MoveNet when installed, else motion blobs); abandoned objects after n seconds.
    scene: Path | None = None
    person_detector: str | None = None
    abandoned_after_s: float | None = None
    # Detect people at most every this many stream seconds (the tracker carries them in
    # between); None: PEOPLE_INTERVAL_S for a crowd detector (NanoDet), else every frame.
    people_every_s: float | None = None
    people_gate: bool = True  # on detection frames, look again only where the view changed


#: Detection cadence of the crowd detector: ~0.2 s a 720p frame on one core, so every
#: 8th frame of a 25 fps camera keeps up in real time (docs/people.md has the figures).
PEOPLE_INTERVAL_S = 0.32


def safety_analytics(settings: Settings, scene: Scene, request: WatchRequest) -> SafetyAnalytics:
    """The scene's rules over the person detector the request (or the settings) names."""
    detector = build_person_detector(
        request.person_detector or settings.person_detector, models_dir=settings.model_registry
    )
    crowd = detector.name.startswith("nanodet")
    every = request.people_every_s
    return SafetyAnalytics(
        scene,
        detector,
        abandoned=AbandonedConfig(unattended_s=request.abandoned_after_s)
        if request.abandoned_after_s is not None
        else None,
        interval_s=(PEOPLE_INTERVAL_S if crowd else 0.0) if every is None else every,
        gate=MotionGate() if request.people_gate and crowd else None,
    )


def watch_config(request: WatchRequest, quality_bars: Sequence[float]) -> WatchConfig:
    """The pipeline's settings for ``request``; a crop is identified once it passes the
    lowest quality bar of the galleries searched."""
    return WatchConfig(
        camera=request.camera,
        detect_every=request.detect_every,
        realtime=request.realtime,
        redact=request.redact,
        cut_threshold=request.cut_threshold,
        identity=IdentityConfig(
            quality_bar=min(quality_bars) if quality_bars else 40.0,
            max_identifications=request.max_identifications,
        ),
    )


def watch(
    app: Airside,
    principal: Principal,
    source: VideoSource,
    request: WatchRequest,
    on_status: Callable[[WatchStats], None] | None = None,
) -> WatchSummary:
    """Run the pipeline over ``source`` until it ends (or is stopped)."""
    if not request.galleries and request.scene is None:
        raise AirsideError(
            "name a gallery to search (identity), a scene file (safety), or both",
            code="bad_request",
        )
    bars = []
    for g in request.galleries:  # refuse up front (audited), not at the first face
        bars.append(authorize_gallery(app, principal, "identify", g, request.purpose).quality_bar)
    engine: FrameFaceEngine | None = None
    identifier: ServiceIdentifier | None = None
    if request.galleries:
        engine = video_engine(app.analyzer, app.settings.detector.video_detect_side)
        identifier = ServiceIdentifier(
            app, principal, engine, request.galleries, request.camera, request.purpose
        )
    safety = None
    if request.scene is not None:
        authorize(app, principal, "event.safety")
        safety = safety_analytics(app.settings, load_scene(request.scene), request)
    config = watch_config(request, bars)
    out = request.out

    def writer(w: int, h: int, fps: float) -> H264Writer:
        assert out is not None
        return H264Writer(out, source.fps or fps, w, h)

    # Events name people: a new events file is created 0600 (private_files.py).
    jsonl = open_private(request.events_path, append=True) if request.events_path else None
    # A camera runs for months: retention is enforced while it does, not only at `purge`.
    purger = PurgeScheduler(app).start()
    try:
        sink = StoreSink(app, principal, request.camera, jsonl)
        pipe = Pipeline(
            engine,
            identifier,
            sink,
            config,
            safety=safety,
            writer_factory=writer if out is not None else None,
            on_status=on_status,
        )
        return pipe.run(source)
    finally:
        purger.stop()
        if jsonl is not None:
            jsonl.close()
