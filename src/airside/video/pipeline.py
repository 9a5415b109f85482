"""The camera pipeline: decode -> schedule -> detect -> track -> identify -> emit.

Decoding runs in its own thread and hands frames over through :class:`FrameQueue`. For a
live source the queue keeps the newest frames and drops the oldest when processing falls
behind (the decoder never waits); for a file it waits instead, so every frame is seen.
System events (stream lost, restored, ...) go through the same queue and are never dropped.

Each tracked face is identified at most a few times (when a crop passes the gallery's
quality bar, then only for a clearly better crop), and its identity is decided by
quality-weighted votes (:mod:`airside.video.track_identity`). A track that ends without a
decided identity leaves nothing behind: its crops and votes are discarded and no event is
written.

A frame's faces are detected once (safety snapshots blur those same faces), and the crops
one frame asks to identify go to the identifier together, as one batch.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from airside.analytics.rules import SafetyEvent
from airside.video.annotate import H264Writer, TrackDraw, annotate
from airside.video.cuts import CutDetector
from airside.video.safety import SafetyAnalytics, head_boxes, snapshot_jpeg
from airside.video.sources import Frame, SystemEvent, VideoSource
from airside.video.track_identity import IdentityConfig, TrackIdentity
from airside.video.tracking import EndedTrack, Tracker, TrackState, make_tracker
from airside.vision.protocols import Box, Detection, FaceCrop, FrameFaceEngine


@dataclass(frozen=True)
class Match:
    subject: str | None
    score: float
    gallery: str | None = None
    review_case: int | None = None


class Identifier(Protocol):
    """Embeds crops and searches the camera's galleries (audited by the service layer)."""

    def identify_many(
        self, crops: Sequence[tuple[FaceCrop, int]], t: float
    ) -> Sequence[Match | None]:
        """One match per (crop, track id), for the crops of the frame at ``t``, together;
        None for a crop that could not be searched (a search service out of reach): it is
        no vote, for the subject or against."""
        ...


@dataclass
class IdentityEvent:
    camera: str
    track: int
    subject: str
    gallery: str | None
    score: float
    first_seen: float
    last_seen: float
    review_case: int | None = None
    crop: FaceCrop | None = None
    # Set by the sink that stores it (so the end of the track can update the same row).
    event_id: int | None = None
    type: str = "identity"
    # Set by a sink that names events itself (a camera worker on another machine).
    client_key: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "type": self.type,
            "camera": self.camera,
            "subject": self.subject,
            "gallery": self.gallery,
            "score": round(self.score, 6),
            "track": self.track,
            "first_seen": round(self.first_seen, 3),
            "last_seen": round(self.last_seen, 3),
            "review_case": self.review_case,
        }


class EventSink(Protocol):
    def decided(self, event: IdentityEvent) -> None:
        """A track's identity was decided (or changed): the real-time moment."""

    def ended(self, event: IdentityEvent) -> None:
        """A known track ended: ``last_seen`` is final."""

    def retracted(self, event: IdentityEvent, replaced_by: IdentityEvent | None) -> None:
        """The track's votes overturned ``event``: another subject (``replaced_by``, already
        decided) or *unknown* (None). The event never reaches :meth:`ended`."""

    def system(self, event: SystemEvent) -> None: ...

    def safety(self, event: SafetyEvent, snapshot_jpeg: bytes | None) -> None:
        """A scene rule fired; the snapshot has every head and face blurred."""


# System events after which no track can be followed: nothing was seen during an outage
# (someone else may stand where a tracked face stood), boxes changed scale with the
# resolution, or the stream is over (its tracks' events come before "stream_ended").
TRACK_BREAKS = frozenset({"stream_lost", "resolution_changed", "stream_ended"})


@dataclass
class WatchConfig:
    camera: str = "camera"
    # Detect on every n-th frame (by source frame index); tracks are predicted in between.
    detect_every: int = 1
    # None: drop frames under load for live sources only; True/False forces it.
    realtime: bool | None = None
    queue_frames: int = 8
    tracker: str = "bytetrack"
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    redact: bool = False
    # End every track at a hard cut (video/cuts.py) whose content score reaches this;
    # None: never (a fixed camera that cannot cut, and the cost of a thumbnail per frame).
    cut_threshold: float | None = 27.0

    def __post_init__(self) -> None:
        if self.detect_every < 1:
            raise ValueError("detect_every must be at least 1")
        if self.queue_frames < 1:
            raise ValueError("queue_frames must be at least 1")


@dataclass
class WatchStats:
    frames_read: int = 0
    frames_processed: int = 0
    frames_skipped: int = 0
    detections: int = 0
    tracks: int = 0
    active_tracks: int = 0
    embedding_calls: int = 0
    events: int = 0
    safety_events: int = 0
    scene_cuts: int = 0
    people: int = 0
    lag_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    # Decode of the frame that decided an identity -> the decision emitted, in seconds.
    latencies: list[float] = field(default_factory=list)
    # People per safety detection frame, in all and per zone: (frames, sum, max).
    people_frames: int = 0
    people_sum: int = 0
    people_max: int = 0
    zone_sum: dict[str, int] = field(default_factory=dict)
    zone_max: dict[str, int] = field(default_factory=dict)
    lines: dict[str, dict[str, int]] = field(default_factory=dict)  # crossings "in", "out"
    zones_now: dict[str, int] = field(default_factory=dict)  # at the last detection frame

    def count_people(self, people: int, zones: dict[str, int]) -> None:
        self.zones_now = dict(zones)
        self.people_frames += 1
        self.people_sum += people
        self.people_max = max(self.people_max, people)
        for name, n in zones.items():
            self.zone_sum[name] = self.zone_sum.get(name, 0) + n
            self.zone_max[name] = max(self.zone_max.get(name, 0), n)

    def people_summary(self) -> dict[str, object] | None:
        """People per detection frame (mean, max), in all and per zone; None without
        safety analytics."""
        n = self.people_frames
        if not n:
            return None
        return {
            "frames": n,
            "mean": round(self.people_sum / n, 2),
            "max": self.people_max,
            "zones": {
                z: {"mean": round(total / n, 2), "max": self.zone_max[z]}
                for z, total in sorted(self.zone_sum.items())
            },
            "lines": dict(sorted(self.lines.items())),
        }

    def rates(self) -> tuple[float, float]:
        dt = max(1e-9, time.monotonic() - self.started)
        return self.frames_read / dt, self.frames_processed / dt


@dataclass
class WatchSummary:
    stats: WatchStats
    events: list[IdentityEvent]
    system_events: list[SystemEvent]
    safety_events: list[SafetyEvent]
    stream_time_s: float
    wall_s: float

    def as_dict(self) -> dict[str, object]:
        s = self.stats
        lat = np.array(s.latencies) if s.latencies else None
        return {
            "frames_read": s.frames_read,
            "frames_processed": s.frames_processed,
            "frames_skipped": s.frames_skipped,
            "tracks": s.tracks,
            "embedding_calls": s.embedding_calls,
            "detections": s.detections,
            "scene_cuts": s.scene_cuts,
            "people": s.people_summary(),
            "stream_time_s": round(self.stream_time_s, 3),
            "wall_s": round(self.wall_s, 3),
            "realtime_factor": round(self.stream_time_s / self.wall_s, 3) if self.wall_s else None,
            "event_latency_ms": None
            if lat is None
            else {
                "p50": round(float(np.percentile(lat, 50)) * 1000, 1),
                "p99": round(float(np.percentile(lat, 99)) * 1000, 1),
            },
            "events": [e.as_dict() for e in self.events]
            + [_safety_dict(e) for e in self.safety_events],
            "system_events": [
                {"type": e.type, "at": round(e.at, 3), "detail": e.detail}
                for e in self.system_events
            ],
        }


def _safety_dict(e: SafetyEvent) -> dict[str, object]:
    """A safety event in the summary's event shape (no subject, no score)."""
    return {
        "camera": None,
        "subject": None,
        "score": None,
        "track": e.tracks[0] if e.tracks else None,
        "first_seen": round(e.started_at, 3),
        "last_seen": round(e.at, 3),
        **e.as_dict(),
    }


_END = object()


class FrameQueue:
    """Decoder -> processor hand-over. Frames are bounded; system events never dropped.

    With ``drop_oldest`` (live sources) a full queue discards its oldest frame to make
    room, so the decoder never waits; otherwise ``put`` waits for room (files)."""

    def __init__(self, max_frames: int, drop_oldest: bool) -> None:
        self._items: deque[object] = deque()
        self._frames = 0
        self._max = max_frames
        self._drop = drop_oldest
        self._cv = threading.Condition()
        self.dropped = 0
        self._closed = False

    def put(self, item: object) -> None:
        with self._cv:
            if isinstance(item, Frame):
                if self._drop:
                    while self._frames >= self._max:
                        self._drop_oldest_frame()
                else:
                    while self._frames >= self._max and not self._closed:
                        self._cv.wait(0.1)
                self._frames += 1
            self._items.append(item)
            self._cv.notify_all()

    def _drop_oldest_frame(self) -> None:
        for i, it in enumerate(self._items):
            if isinstance(it, Frame):
                del self._items[i]
                self._frames -= 1
                self.dropped += 1
                return

    def get(self) -> object:
        with self._cv:
            while not self._items:
                self._cv.wait(0.1)
            item = self._items.popleft()
            if isinstance(item, Frame):
                self._frames -= 1
            self._cv.notify_all()
            return item

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


@dataclass(frozen=True)
class _Wanted:
    """A track's crop to identify in this frame."""

    state: TrackState
    identity: TrackIdentity[FaceCrop, str]
    crop: FaceCrop


class Pipeline:
    def __init__(
        self,
        engine: FrameFaceEngine | None,
        identifier: Identifier | None,
        sink: EventSink,
        config: WatchConfig | None = None,
        *,
        safety: SafetyAnalytics | None = None,
        tracker: Tracker | None = None,
        writer_factory: Callable[[int, int, float], H264Writer] | None = None,
        on_status: Callable[[WatchStats], None] | None = None,
        status_every_s: float = 0.5,
    ) -> None:
        if (engine is None) != (identifier is None):
            raise ValueError("identity needs both a face engine and an identifier")
        if engine is None and safety is None:
            raise ValueError("nothing to do: give galleries (identity) or a scene (safety)")
        self.engine = engine
        self.identifier = identifier
        self.safety = safety
        self._safety_events: list[SafetyEvent] = []
        self._people: list[tuple[int, Box]] = []
        self.sink = sink
        self.config = config or WatchConfig()
        self.tracker = tracker or make_tracker(self.config.tracker)
        self.writer_factory = writer_factory
        self.on_status = on_status
        self.status_every_s = status_every_s
        self.stats = WatchStats()
        self._identities: dict[int, TrackIdentity[FaceCrop, str]] = {}
        self._galleries: dict[tuple[int, str], tuple[str | None, int | None]] = {}
        self._open: dict[int, IdentityEvent] = {}
        self._events: list[IdentityEvent] = []
        self._system: list[SystemEvent] = []
        self._writer: H264Writer | None = None
        self._last_detect: int | None = None
        cut = self.config.cut_threshold
        self._cuts = CutDetector(cut) if cut is not None else None
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    # ---------------------------------------------------------------------------- running

    def run(self, source: VideoSource) -> WatchSummary:
        realtime = self.config.realtime if self.config.realtime is not None else source.live
        queue = FrameQueue(self.config.queue_frames, drop_oldest=realtime)
        failure: list[BaseException] = []

        def decode() -> None:
            try:
                for item in source:
                    if self._stop.is_set():
                        source.stop()
                        break
                    if isinstance(item, Frame):
                        self.stats.frames_read += 1
                    queue.put(item)
            except BaseException as e:  # handed to the processing thread, re-raised there
                failure.append(e)
            finally:
                queue.put(_END)

        started = time.monotonic()
        reader = threading.Thread(target=decode, name="airside-decode", daemon=True)
        reader.start()
        last_status = 0.0
        last_pts = 0.0
        try:
            for item in self._items(queue):
                if isinstance(item, SystemEvent):
                    if item.type in TRACK_BREAKS:
                        self._end_all_tracks(item.at)
                    self._system.append(item)
                    self.sink.system(item)
                    continue
                assert isinstance(item, Frame)
                last_pts = item.pts
                self._process(item)
                self.stats.frames_skipped = queue.dropped
                self.stats.lag_s = max(0.0, time.time() - item.wall) if item.wall else 0.0
                now = time.monotonic()
                if self.on_status is not None and now - last_status >= self.status_every_s:
                    last_status = now
                    self.on_status(self.stats)
        finally:
            self._stop.set()
            queue.close()
            source.stop()
            reader.join(timeout=5)
            for ended in self.tracker.finish():
                self._end_track(ended)
            if self._writer is not None:
                self._writer.close()
            source.close()
        if failure:
            raise failure[0]
        self.stats.frames_skipped = queue.dropped
        if self.on_status is not None:
            self.on_status(self.stats)
        return WatchSummary(
            self.stats,
            list(self._events),
            list(self._system),
            list(self._safety_events),
            last_pts,
            time.monotonic() - started,
        )

    def _items(self, queue: FrameQueue) -> Iterator[object]:
        while True:
            item = queue.get()
            if item is _END:
                return
            yield item
            if self._stop.is_set():
                return

    # ------------------------------------------------------------------------ per frame

    def _process(self, frame: Frame) -> None:
        self.stats.frames_processed += 1
        if self._cuts is not None and self._cuts.update(frame.image, frame.pts):
            self._scene_cut(frame.pts)
        due = (
            self._last_detect is None or frame.index - self._last_detect >= self.config.detect_every
        )
        detections: list[Detection] = []
        if due:
            self._last_detect = frame.index
            if self.engine is not None:  # once a frame: safety snapshots blur these faces
                detections = self.engine.detect(frame.image)
        if self.safety is not None:  # every frame: it keeps its own detection cadence
            self._analyse_safety(frame, detections)
        if self.engine is None:
            if self.writer_factory is not None:
                self._write(frame, [], [])
            return
        if due:
            self.stats.detections += len(detections)
            boxes = np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
            scores = np.array([d.score for d in detections], dtype=np.float64)
            states = self.tracker.update(boxes, scores, frame.index, frame.pts)
            wanted: list[_Wanted] = []
            for st in states:
                if st.det_index is not None:
                    w = self._observe(frame, st, detections[st.det_index])
                    if w is not None:
                        wanted.append(w)
            self._identify(frame, wanted)
        else:
            states = self.tracker.predict_only(frame.index, frame.pts)
        for ended in self.tracker.drain_ended():
            self._end_track(ended)
        self.stats.active_tracks = len(self._identities)
        if self.writer_factory is not None:
            self._write(frame, states, detections)

    def _scene_cut(self, t: float) -> None:
        """Another view: nobody tracked before is where their box was."""
        self.stats.scene_cuts += 1
        self._end_all_tracks(t)

    def _end_all_tracks(self, t: float) -> None:
        """Every track ends (identified ones emit their events, unknown ones are wiped) and
        the next frame is detected afresh: after a cut, an outage or a resolution change,
        a box where a tracked face was may be anyone."""
        for ended in self.tracker.finish():
            self._end_track(ended)
        self._last_detect = None
        if self.safety is not None:
            self.safety.scene_cut(t)

    def _analyse_safety(self, frame: Frame, faces: list[Detection]) -> None:
        """Scene rules on ``frame``; ``faces`` (this frame's, already detected) are blurred
        in the snapshot of any event, with every person's head."""
        assert self.safety is not None
        result = self.safety.process(frame.image, frame.index, frame.pts)
        self.stats.people = len(result.people)
        self._people = result.people
        if result.detected:
            self.stats.count_people(len(result.people), result.zone_counts)
            self.stats.lines = {
                name: {"in": c.crossed_in, "out": c.crossed_out}
                for name, c in self.safety.rules.line_counts.items()
            }
        if not result.events:
            return
        snapshot = snapshot_jpeg(frame.image, result.people, [d.box for d in faces])
        for ev in result.events:
            self._safety_events.append(ev)
            self.stats.safety_events += 1
            self.sink.safety(ev, snapshot)

    def _observe(self, frame: Frame, st: TrackState, det: Detection) -> _Wanted | None:
        """Follow the track; a crop of it when one should be identified now."""
        ti = self._identities.get(st.track_id)
        if ti is None:
            ti = TrackIdentity[FaceCrop, str](self.config.identity, st.track_id)
            self._identities[st.track_id] = ti
            self.stats.tracks += 1
        open_event = self._open.get(st.track_id)
        if open_event is not None:
            open_event.last_seen = frame.pts
        if not ti.wants_crops:
            return None  # settled: no crop could be identified again, so none is cut
        assert self.engine is not None
        crop = self.engine.crop(frame.image, det)
        if crop is None or not ti.offer(crop.quality, crop):
            return None
        return _Wanted(st, ti, crop)

    def _identify(self, frame: Frame, wanted: list[_Wanted]) -> None:
        """Identify the frame's wanted crops as one batch, then vote on each track."""
        if not wanted:
            return
        assert self.identifier is not None
        self.stats.embedding_calls += len(wanted)
        matches = self.identifier.identify_many(
            [(w.crop, w.state.track_id) for w in wanted], frame.pts
        )
        for w, match in zip(wanted, matches, strict=True):
            if match is not None:
                self._record(frame, w, match)

    def _record(self, frame: Frame, wanted: _Wanted, match: Match) -> None:
        st, ti, crop = wanted.state, wanted.identity, wanted.crop
        before = ti.identity
        if match.subject is not None:
            self._galleries[(st.track_id, match.subject)] = (match.gallery, match.review_case)
        ti.record(match.subject, match.score, crop.quality)
        after = ti.decision
        overturned = (
            self._open.pop(st.track_id, None)
            if after is not None and before is not None and after.subject != before
            else None
        )
        if after is not None and after.subject is not None and after.subject != before:
            gallery, case = self._galleries.get((st.track_id, after.subject), (None, None))
            event = IdentityEvent(
                camera=self.config.camera,
                track=st.track_id,
                subject=after.subject,
                gallery=gallery,
                score=after.score,
                first_seen=st.first_t,
                last_seen=frame.pts,
                review_case=case,
                crop=ti.crops[0].payload if ti.crops else crop,
                type="watchlist_hit" if case is not None else "identity",
            )
            self._open[st.track_id] = event
            self.sink.decided(event)
            if frame.wall:
                self.stats.latencies.append(max(0.0, time.time() - frame.wall))
        if overturned is not None:
            self.sink.retracted(overturned, self._open.get(st.track_id))

    def _end_track(self, ended: EndedTrack) -> None:
        ti = self._identities.pop(ended.track_id, None)
        event = self._open.pop(ended.track_id, None)
        for key in [k for k in self._galleries if k[0] == ended.track_id]:
            del self._galleries[key]
        if ti is None:
            return
        outcome = ti.end()  # unknown or undecided: crops and votes are wiped, None returned
        if outcome is None or event is None:
            return
        event.subject = outcome.decision.subject or event.subject
        event.score = outcome.decision.score
        event.first_seen = ended.first_t
        event.last_seen = max(event.last_seen, ended.last_t)
        event.crop = outcome.crops[0].payload if outcome.crops else event.crop
        self._events.append(event)
        self.stats.events += 1
        self.sink.ended(event)
        event.crop = None  # the sink stored what retention allows; nothing more is kept

    def _write(self, frame: Frame, states: list[TrackState], detections: list[Detection]) -> None:
        if self._writer is None:
            assert self.writer_factory is not None
            fps = 25.0
            self._writer = self.writer_factory(frame.width, frame.height, fps)
        draws = []
        tracked = {st.det_index for st in states if st.det_index is not None}
        for st in states:
            ti = self._identities.get(st.track_id)
            who = ti.identity if ti is not None else None
            draws.append(TrackDraw(st.box, st.track_id, who, matched=who is not None))
        untracked = [d.box for i, d in enumerate(detections) if i not in tracked]
        if self.engine is None:  # no face detection: the heads of all people stand in
            untracked = head_boxes(self._people)
        img = annotate(
            frame.image, draws, redact_unmatched=self.config.redact, extra_faces=untracked
        )
        self._writer.write(img, pts=frame.pts)
