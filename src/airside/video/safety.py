"""Safety analytics on frames: people and poses -> tracks -> scene rules, and abandoned
objects by background modelling. No identity is involved: it works for everyone in view
and identifies nobody (snapshots have every head blurred)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from PIL import Image

from airside.analytics.abandoned import AbandonedConfig, AbandonedObjectDetector
from airside.analytics.rules import PersonTrack, RuleEngine, SafetyEvent
from airside.analytics.scene import Scene
from airside.video.annotate import redact
from airside.video.tracking import ByteTrackConfig, ByteTrackTracker, Tracker
from airside.vision.people import PersonDetection, PersonDetector

Box = tuple[float, float, float, float]
# The top of a person's box blurred in snapshots: the head, generously.
HEAD_FRACTION = 0.3


@dataclass
class SafetyFrame:
    """What one analysed frame produced."""

    events: list[SafetyEvent] = field(default_factory=list)
    people: list[tuple[int, Box]] = field(default_factory=list)


def head_boxes(people: list[tuple[int, Box]]) -> list[Box]:
    return [(x0, y0, x1, y0 + HEAD_FRACTION * (y1 - y0)) for _, (x0, y0, x1, y1) in people]


def snapshot_jpeg(image: np.ndarray, people: list[tuple[int, Box]], faces: list[Box]) -> bytes:
    """The frame with every head and every detected face blurred, as evidence."""
    safe = redact(image, [*head_boxes(people), *faces])
    buf = io.BytesIO()
    Image.fromarray(safe).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class SafetyAnalytics:
    def __init__(
        self,
        scene: Scene,
        detector: PersonDetector,
        *,
        tracker: Tracker | None = None,
        abandoned: AbandonedConfig | None = None,
        origin: datetime | None = None,
    ) -> None:
        self.scene = scene
        self.detector = detector
        # The person detector already dropped what it doubts (its scores are on its own
        # scale: motion blobs rarely exceed 0.6), so every detection may start a track.
        # A 2 s lost buffer carries people through short occlusions; matching accepts a
        # small overlap, since a falling person's box turns from tall to wide in ~0.5 s.
        self.tracker = tracker or ByteTrackTracker(
            ByteTrackConfig(high_thresh=0.25, low_thresh=0.05, new_track_thresh=0.25,
                            match_thresh=0.9, second_match_thresh=0.8, lost_buffer=50)
        )  # fmt: skip
        self.rules = RuleEngine(scene, origin=origin)
        self.abandoned = AbandonedObjectDetector(abandoned) if abandoned is not None else None

    def scene_cut(self, t: float) -> None:
        """The view changed (video/cuts.py): every person track ends, rules forget their
        episodes (line counts and cooldowns stay), and the abandoned-object background
        is learnt anew, or the whole new view would look like objects left behind."""
        for ended in self.tracker.finish():
            self.rules.track_ended(ended.track_id, t)
        self.rules.scene_cut()
        if self.abandoned is not None:
            self.abandoned.reset()

    def process(self, image: np.ndarray, index: int, t: float) -> SafetyFrame:
        h, w = image.shape[:2]
        dets: list[PersonDetection] = self.detector.detect(image)
        boxes = np.array([d.box for d in dets], dtype=np.float64).reshape(-1, 4)
        scores = np.array([d.score for d in dets], dtype=np.float64)
        states = self.tracker.update(boxes, scores, index, t)
        # Rules see the detection itself, not the tracker's smoothed box: a fall changes a
        # box's shape within a few frames, faster than a constant-velocity filter follows.
        people = [
            PersonTrack(st.track_id, dets[st.det_index].box, dets[st.det_index].keypoints, st.score)
            if st.det_index is not None
            else PersonTrack(st.track_id, st.box, None, st.score)
            for st in states
        ]
        out = SafetyFrame(people=[(p.track_id, p.box) for p in people])
        out.events.extend(self.rules.update(t, (w, h), people))
        for ended in self.tracker.drain_ended():
            self.rules.track_ended(ended.track_id, t)
        if self.abandoned is not None:
            for ev in self.abandoned.update(image, t, out.people):
                out.events.append(
                    SafetyEvent(
                        type="abandoned_object",
                        rule="abandoned_object",
                        severity="warning",
                        zone=None,
                        line=None,
                        tracks=(ev.owner_track,) if ev.owner_track is not None else (),
                        started_at=ev.first_seen,
                        at=ev.at,
                        detail={
                            "object": ev.object_id,
                            "box": [round(v, 1) for v in ev.box],
                            "unattended_since": round(ev.unattended_since, 3),
                            "owner_track": ev.owner_track,
                        },
                    )
                )
        return out
