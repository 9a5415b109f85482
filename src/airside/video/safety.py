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
from airside.video.people_gate import MotionGate
from airside.video.tracking import ByteTrackConfig, ByteTrackTracker, Tracker
from airside.vision.people import PersonDetection, PersonDetector

Box = tuple[float, float, float, float]
# The top of a person's box blurred in snapshots: the head, generously.
HEAD_FRACTION = 0.3


@dataclass
class SafetyFrame:
    """What one frame produced. ``detected``: people were detected on this frame (else
    the tracker carried them: ``people`` are predictions and no rule ran);
    ``zone_counts``: people per zone, on detection frames."""

    events: list[SafetyEvent] = field(default_factory=list)
    people: list[tuple[int, Box]] = field(default_factory=list)
    detected: bool = True
    zone_counts: dict[str, int] = field(default_factory=dict)


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
        interval_s: float = 0.0,
        gate: MotionGate | None = None,
    ) -> None:
        """``interval_s``: detect people at most this often (stream seconds), the tracker
        carrying them in between; ``gate``: on detection frames look again only where
        the view changed (video/people_gate.py)."""
        if not interval_s >= 0:
            raise ValueError(f"interval_s must be >= 0, not {interval_s}")
        self.scene = scene
        self.detector = detector
        self.interval_s = interval_s
        self.gate = gate
        self._last_detect_t: float | None = None
        self.last_detections: list[PersonDetection] = []  # of the last detection frame
        self._in_view: set[int] = set()
        # The person detector already dropped what it doubts (its scores are on its own
        # scale: motion blobs rarely exceed 0.6), so every detection may start a track.
        # A 2 s lost buffer carries people through short occlusions; matching accepts a
        # small overlap, since a falling person's box turns from tall to wide in ~0.5 s.
        # With detections ``interval_s`` apart (several frames), people move further between
        # two looks: association takes IoU alone (a crowd detector's scores are modest, and
        # fusing them would halve every overlap), a new track confirms at IoU >= 0.15, and
        # who walked off their own box is paired by distance (up to 0.6 of their height).
        sparse = interval_s > 0
        self.tracker = tracker or ByteTrackTracker(
            ByteTrackConfig(high_thresh=0.25, low_thresh=0.05, new_track_thresh=0.25,
                            match_thresh=0.9, second_match_thresh=0.8, lost_buffer=50,
                            unconfirmed_match_thresh=0.85 if sparse else 0.7,
                            fuse_score=not sparse,
                            max_center_distance=0.6 if sparse else None,
                            confirm_new=sparse)
        )  # fmt: skip
        self.hold_looks = 2 if sparse else 0
        self._looks = 0
        self._seen: dict[int, int] = {}  # track -> the look that last matched it
        self.rules = RuleEngine(scene, origin=origin)
        self.abandoned = AbandonedObjectDetector(abandoned) if abandoned is not None else None

    def scene_cut(self, t: float) -> None:
        """The view changed (video/cuts.py): every person track ends, rules forget their
        episodes (line counts and cooldowns stay), and the abandoned-object background
        is learnt anew, or the whole new view would look like objects left behind."""
        for ended in self.tracker.finish():
            self.rules.track_ended(ended.track_id, t)
        self.rules.scene_cut()
        self._last_detect_t = None
        self._in_view = set()
        if self.gate is not None:
            self.gate.reset()
        if self.abandoned is not None:
            self.abandoned.reset()

    def due(self, t: float) -> bool:
        """Whether the frame at stream second ``t`` is a detection frame."""
        last = self._last_detect_t
        return last is None or t < last or t - last >= self.interval_s - 1e-6

    def process(self, image: np.ndarray, index: int, t: float) -> SafetyFrame:
        h, w = image.shape[:2]
        if not self.due(t):  # the people in view at the last look, where they are now
            states = self.tracker.predict_only(index, t)
            carried = [(st.track_id, st.box) for st in states if st.track_id in self._in_view]
            return SafetyFrame(people=carried, detected=False)
        self._last_detect_t = t
        dets: list[PersonDetection] = (
            self.gate.detect(self.detector, image)
            if self.gate is not None
            else self.detector.detect(image)
        )
        self.last_detections = dets
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
        self._in_view = {p.track_id for p in people}
        out = SafetyFrame(people=[(p.track_id, p.box) for p in people])
        out.events.extend(self.rules.update(t, (w, h), people))
        out.zone_counts = self.rules.zone_counts
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
