"""Multi-object tracking: stable ids for the boxes a detector finds frame after frame.

Two trackers share one small interface (:class:`Tracker`):

* :class:`ByteTrackTracker`: ByteTrack (Zhang et al., ECCV 2022), written here from the
  published algorithm and its reference code: a constant-velocity Kalman filter per track,
  a first association of confident detections to tracks (IoU fused with the score), a second
  association of the leftover tracks to the low-score detections (so a person half hidden
  behind another keeps the id), tentative tracks confirmed on their second hit, and lost
  tracks kept for a buffer of frames so that an id survives a short occlusion.
* :class:`IouTracker`: a plain greedy IoU tracker, the baseline it is measured against.

Why not ``supervision.ByteTrack``: supervision 0.27+ no longer ships a tracker (it moved to
the ``trackers`` package, which requires ``opencv-python`` without an upper bound, i.e.
OpenCV 5 today); supervision 0.26 also requires ``opencv-python``, and its
``update_with_detections`` maps tracks back to detections by re-matching the Kalman boxes
to the input boxes at IoU >= 0.5, which is approximate (a track can lose its detection, two
people close together can swap). The pipeline attaches face crops by detection index, so
here the index is carried through the association itself and is exact by construction.

Frames and time: ``frame_index`` is the video frame number and must increase. Detection may
run on every k-th frame only; the pipeline simply calls :meth:`Tracker.update` on the frames
it detected on. The Kalman filter predicts across the gap (one step per video frame) and the
lost buffer is counted in *video* frames, so it means the same time whatever the detection
rate. :meth:`Tracker.predict_only` gives the predicted boxes on a skipped frame (for
drawing) without changing any state.

Track ends: a confirmed track lost for longer than the buffer ends; :meth:`Tracker.drain_ended`
hands each ended track over exactly once (the pipeline then discards an unknown track's crops
or finalises its events), and :meth:`Tracker.finish` ends every track at the end of a stream.
Tentative tracks (seen once, never confirmed) never reach the caller, so they never end either.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class TrackState:
    """One track as the tracker sees it at a frame.

    ``box`` is the tracker's estimate (x0, y0, x1, y1): the Kalman posterior for ByteTrack,
    the matched detection's box for the IoU tracker, a prediction in :meth:`predict_only`.
    ``det_index`` is the index of the input detection matched to this track in this
    :meth:`Tracker.update` call (``None`` when the track was not matched, e.g. from
    :meth:`Tracker.predict_only`). ``age`` is frames since the track was first seen;
    ``hits`` the number of detections matched to it; ``time_since_update`` frames since the
    last match.
    """

    track_id: int
    box: Box
    score: float
    age: int
    hits: int
    time_since_update: int
    det_index: int | None
    first_frame: int
    first_t: float

    @property
    def matched(self) -> bool:
        return self.det_index is not None


@dataclass(frozen=True)
class EndedTrack:
    """A confirmed track that ended: lost for longer than the buffer, or the stream ended."""

    track_id: int
    first_frame: int
    last_frame: int  # the last frame a detection was matched to it
    first_t: float
    last_t: float
    hits: int
    reason: str  # "lost" | "finished" | "duplicate"


class Tracker(Protocol):
    name: str

    def update(
        self, boxes: np.ndarray, scores: np.ndarray, frame_index: int, t: float
    ) -> list[TrackState]:
        """Associate this frame's detections ((N, 4) xyxy, (N,) scores); return the confirmed
        tracks matched in this frame, each with the index of its detection."""
        ...

    def predict_only(self, frame_index: int, t: float) -> list[TrackState]:
        """Where the live confirmed tracks are expected at ``frame_index``; changes nothing."""
        ...

    def ended(self) -> list[EndedTrack]:
        """Tracks that ended and have not been drained yet (does not clear them)."""
        ...

    def drain_ended(self) -> list[EndedTrack]:
        """Tracks that ended since the last call, each reported once."""
        ...

    def finish(self) -> list[EndedTrack]:
        """End every live track (end of stream) and drain."""
        ...

    def reset(self) -> None: ...


class _Followed(Protocol):
    """What either tracker keeps of a track, as far as ending it is concerned."""

    @property
    def track_id(self) -> int | None: ...
    @property
    def first_frame(self) -> int: ...
    @property
    def last_frame(self) -> int: ...
    @property
    def first_t(self) -> float: ...
    @property
    def last_t(self) -> float: ...
    @property
    def hits(self) -> int: ...


class _EndedTracks:
    """The ended-track hand-over both trackers share: :meth:`_end` notes a track's end,
    :meth:`ended` shows what is pending and :meth:`drain_ended` hands it over once."""

    _ended: list[EndedTrack]

    def ended(self) -> list[EndedTrack]:
        return list(self._ended)

    def drain_ended(self) -> list[EndedTrack]:
        out, self._ended = self._ended, []
        return out

    def _end(self, tr: _Followed, reason: str) -> None:
        """Note that ``tr`` ended; a track never confirmed (no id) never reaches the caller."""
        if tr.track_id is None:
            return
        self._ended.append(
            EndedTrack(
                tr.track_id, tr.first_frame, tr.last_frame, tr.first_t, tr.last_t, tr.hits, reason
            )
        )


# --------------------------------------------------------------------------- helpers


def _check_inputs(
    boxes: np.ndarray, scores: np.ndarray, frame_index: int, last_frame: int | None
) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(boxes, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) x0,y0,x1,y1, got shape {b.shape}")
    if s.ndim != 1 or s.shape[0] != b.shape[0]:
        raise ValueError(f"scores must be ({b.shape[0]},), got shape {s.shape}")
    if not (np.isfinite(b).all() and np.isfinite(s).all()):
        raise ValueError("boxes and scores must be finite")
    if last_frame is not None and frame_index <= last_frame:
        raise ValueError(f"frame_index must increase: {frame_index} after {last_frame}")
    return b, s


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (M, 4) with every box in ``b`` (N, 4), xyxy, plain areas."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    out: np.ndarray = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return out


def _assign(cost: np.ndarray, thresh: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Minimum-cost assignment keeping only pairs with cost <= ``thresh``.

    Costs above the threshold are clipped first (as ByteTrack's reference code does) so that
    an impossible pair cannot pull the optimum away from the possible ones.
    """
    rows, cols = cost.shape
    if cost.size == 0:
        return [], list(range(rows)), list(range(cols))
    c = np.where(cost > thresh, thresh + 1e-4, cost)
    r, k = linear_sum_assignment(c)
    matches = [(int(i), int(j)) for i, j in zip(r, k, strict=True) if c[i, j] <= thresh]
    mr = {i for i, _ in matches}
    mc = {j for _, j in matches}
    return matches, [i for i in range(rows) if i not in mr], [j for j in range(cols) if j not in mc]


# --------------------------------------------------------------------------- Kalman filter


class KalmanXYAH:
    """Constant-velocity Kalman filter on (cx, cy, aspect w/h, h) as in SORT/DeepSORT/ByteTrack.

    Noise scales with the box height (the reference code's weights 1/20 and 1/160).
    """

    std_position = 1.0 / 20
    std_velocity = 1.0 / 160

    def __init__(self) -> None:
        self.F = np.eye(8)
        for i in range(4):
            self.F[i, 4 + i] = 1.0
        self.H = np.eye(4, 8)

    def initiate(self, xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = np.r_[xyah, np.zeros(4)]
        h = xyah[3]
        sp, sv = self.std_position, self.std_velocity
        std = [
            2 * sp * h,
            2 * sp * h,
            1e-2,
            2 * sp * h,
            10 * sv * h,
            10 * sv * h,
            1e-5,
            10 * sv * h,
        ]
        return mean, np.diag(np.square(std))

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = mean[3]
        sp, sv = self.std_position, self.std_velocity
        q = np.diag(np.square([sp * h, sp * h, 1e-2, sp * h, sv * h, sv * h, 1e-5, sv * h]))
        return self.F @ mean, self.F @ cov @ self.F.T + q

    def update(
        self, mean: np.ndarray, cov: np.ndarray, xyah: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        h = mean[3]
        sp = self.std_position
        r = np.diag(np.square([sp * h, sp * h, 1e-1, sp * h]))
        s = self.H @ cov @ self.H.T + r
        gain = np.linalg.solve(s, (cov @ self.H.T).T).T
        new_mean = mean + gain @ (xyah - self.H @ mean)
        new_cov = cov - gain @ s @ gain.T
        return new_mean, new_cov


def _xyxy_to_xyah(b: np.ndarray) -> np.ndarray:
    w, h = b[2] - b[0], b[3] - b[1]
    return np.array([b[0] + w / 2, b[1] + h / 2, w / max(h, 1e-6), h])


def _xyah_to_xyxy(m: np.ndarray) -> Box:
    cx, cy, a, h = (float(v) for v in m[:4])
    w = a * h
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


# --------------------------------------------------------------------------- ByteTrack


@dataclass(frozen=True)
class ByteTrackConfig:
    """ByteTrack's parameters; defaults are the reference code's (MOT17 settings).

    ``high_thresh``: detections scoring above it take part in the first association and can
    start tracks; those in (``low_thresh``, ``high_thresh``] only in the second.
    ``new_track_thresh``: a detection left over needs this score to start a track (the
    reference uses ``high_thresh + 0.1``). ``match_thresh``/``second_match_thresh``/
    ``unconfirmed_match_thresh``: maximum association cost (1 - IoU, fused with the score in
    the first and unconfirmed stages when ``fuse_score``). ``lost_buffer``: video frames a
    lost track is kept before it ends (the reference's ``track_buffer * frame_rate / 30``).
    """

    high_thresh: float = 0.5
    low_thresh: float = 0.1
    new_track_thresh: float = 0.6
    match_thresh: float = 0.8
    second_match_thresh: float = 0.5
    unconfirmed_match_thresh: float = 0.7
    lost_buffer: int = 30
    fuse_score: bool = True
    # Detections several frames apart (a crowd detector run every N frames): a person who
    # walked more than their own width no longer overlaps their track. Tracks and
    # confident detections left after each IoU stage are then paired by the distance of
    # their centres, in box heights, up to this value (and heights within a factor 1.5);
    # None: IoU only, as the reference.
    max_center_distance: float | None = None
    # Confirm a track at its first detection (the reference confirms only on the first
    # frame): with looks several frames apart, waiting for a second look hides a newcomer
    # for that long, and every count in between misses them.
    confirm_new: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.low_thresh <= self.high_thresh <= 1:
            raise ValueError("need 0 <= low_thresh <= high_thresh <= 1")
        if self.lost_buffer < 0:
            raise ValueError("lost_buffer must be >= 0 frames")
        for name in ("match_thresh", "second_match_thresh", "unconfirmed_match_thresh"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1]")

    @staticmethod
    def lost_buffer_for(frame_rate: float, seconds: float = 1.0) -> int:
        """Lost buffer in frames for ``seconds`` of video at ``frame_rate``."""
        if frame_rate <= 0 or seconds < 0:
            raise ValueError("frame_rate must be > 0 and seconds >= 0")
        return round(frame_rate * seconds)


class _State(Enum):
    TRACKED = 1
    LOST = 2


@dataclass(eq=False)
class _BTrack:
    mean: np.ndarray
    cov: np.ndarray
    score: float
    first_frame: int
    first_t: float
    last_frame: int
    last_t: float
    state: _State = _State.TRACKED
    confirmed: bool = False
    track_id: int | None = None
    hits: int = 1
    det_index: int | None = None
    predicted_to: int = 0  # the frame the mean/cov refer to

    @property
    def box(self) -> Box:
        return _xyah_to_xyxy(self.mean)


@dataclass
class ByteTrackTracker(_EndedTracks):
    """ByteTrack with exact detection-index mapping, frame gaps and ended-track reporting."""

    config: ByteTrackConfig = field(default_factory=ByteTrackConfig)
    name: str = "bytetrack"

    def __post_init__(self) -> None:
        self._kf = KalmanXYAH()
        self.reset()

    def reset(self) -> None:
        self._tracked: list[_BTrack] = []
        self._lost: list[_BTrack] = []
        self._ended = []
        self._next_id = 1
        self._frame: int | None = None
        self._t = 0.0

    # -- public API

    def update(
        self, boxes: np.ndarray, scores: np.ndarray, frame_index: int, t: float
    ) -> list[TrackState]:
        b, s = _check_inputs(boxes, scores, frame_index, self._frame)
        first_update = self._frame is None
        self._frame, self._t = frame_index, t
        cfg = self.config
        for tr in self._tracked + self._lost:
            tr.det_index = None

        idx_high = np.flatnonzero(s > cfg.high_thresh)
        idx_low = np.flatnonzero((s > cfg.low_thresh) & (s <= cfg.high_thresh))

        unconfirmed = [tr for tr in self._tracked if not tr.confirmed]
        pool = [tr for tr in self._tracked if tr.confirmed] + self._lost
        for tr in pool:
            self._predict(tr, frame_index)

        # First association: confirmed and lost tracks with the confident detections.
        cost = self._cost(pool, b[idx_high], s[idx_high], cfg.fuse_score)
        matches, u_pool, u_high = _assign(cost, cfg.match_thresh)
        for i, j in matches:
            self._hit(pool[i], b[idx_high[j]], s[idx_high[j]], int(idx_high[j]), frame_index, t)
        u_pool, u_high = self._by_distance(pool, u_pool, idx_high, u_high, b, s, frame_index, t)

        # Second association: tracks still tracked (not lost ones) with the low-score boxes.
        remaining = [pool[i] for i in u_pool if pool[i].state is _State.TRACKED]
        cost = self._cost(remaining, b[idx_low], s[idx_low], fuse=False)
        matches, u_rem, _ = _assign(cost, cfg.second_match_thresh)
        for i, j in matches:
            self._hit(remaining[i], b[idx_low[j]], s[idx_low[j]], int(idx_low[j]), frame_index, t)
        for i in u_rem:
            remaining[i].state = _State.LOST

        # Tentative tracks (one hit so far) with the confident detections left over.
        left = idx_high[u_high]
        cost = self._cost(unconfirmed, b[left], s[left], cfg.fuse_score)
        matches, u_unconf, u_left = _assign(cost, cfg.unconfirmed_match_thresh)
        for i, j in matches:
            self._predict(unconfirmed[i], frame_index, steps=0)
            self._hit(unconfirmed[i], b[left[j]], s[left[j]], int(left[j]), frame_index, t)
        u_unconf, u_left = self._by_distance(
            unconfirmed, u_unconf, left, u_left, b, s, frame_index, t
        )
        dropped = {id(unconfirmed[i]) for i in u_unconf}  # never confirmed: vanish silently

        # New tracks from the confident detections nobody took.
        new: list[_BTrack] = []
        for j in u_left:
            k = int(left[j])
            if s[k] < cfg.new_track_thresh:
                continue
            mean, cov = self._kf.initiate(_xyxy_to_xyah(b[k]))
            tr = _BTrack(mean, cov, float(s[k]), frame_index, t, frame_index, t)
            tr.det_index, tr.predicted_to = k, frame_index
            if first_update or cfg.confirm_new:  # the reference: on the first frame only
                self._confirm(tr)
            new.append(tr)

        tracked_now = [tr for tr in self._tracked + self._lost if tr.state is _State.TRACKED]
        tracked_now = [tr for tr in tracked_now if id(tr) not in dropped] + new
        lost_now = [tr for tr in self._tracked + self._lost if tr.state is _State.LOST]
        kept_lost = []
        for tr in lost_now:
            if frame_index - tr.last_frame > cfg.lost_buffer:
                self._end(tr, "lost")
            else:
                kept_lost.append(tr)
        self._tracked, self._lost = self._remove_duplicates(tracked_now, kept_lost)

        out = [self._state(tr, frame_index) for tr in self._tracked if tr.confirmed]
        return sorted(out, key=lambda st: st.track_id)

    def predict_only(self, frame_index: int, t: float) -> list[TrackState]:
        if self._frame is not None and frame_index < self._frame:
            raise ValueError(f"frame_index must not go back: {frame_index} < {self._frame}")
        out = []
        for tr in self._tracked + self._lost:
            if not tr.confirmed or frame_index - tr.last_frame > self.config.lost_buffer:
                continue
            mean, cov = tr.mean, tr.cov
            if tr.state is not _State.TRACKED:
                mean = mean.copy()
                mean[7] = 0.0
            for _ in range(frame_index - tr.predicted_to):
                mean, cov = self._kf.predict(mean, cov)
            st = self._state(tr, frame_index)
            out.append(
                TrackState(
                    st.track_id,
                    _xyah_to_xyxy(mean),
                    st.score,
                    st.age,
                    st.hits,
                    st.time_since_update,
                    None,
                    st.first_frame,
                    st.first_t,
                )
            )
        return sorted(out, key=lambda st: st.track_id)

    def finish(self) -> list[EndedTrack]:
        for tr in self._tracked + self._lost:
            self._end(tr, "finished")
        self._tracked, self._lost = [], []
        return self.drain_ended()

    def live_ids(self) -> list[int]:
        """Ids of the confirmed tracks still alive (tracked or within the lost buffer)."""
        return sorted(tr.track_id for tr in self._tracked + self._lost if tr.track_id is not None)

    # -- internals

    def _predict(self, tr: _BTrack, frame_index: int, steps: int | None = None) -> None:
        n = frame_index - tr.predicted_to if steps is None else steps
        if tr.state is not _State.TRACKED:
            tr.mean = tr.mean.copy()
            tr.mean[7] = 0.0  # a lost track keeps moving but stops growing/shrinking
        for _ in range(n):
            tr.mean, tr.cov = self._kf.predict(tr.mean, tr.cov)
        tr.predicted_to = frame_index

    def _by_distance(
        self,
        tracks: list[_BTrack],
        free_tracks: list[int],
        det_index: np.ndarray,
        free_dets: list[int],
        b: np.ndarray,
        s: np.ndarray,
        frame_index: int,
        t: float,
    ) -> tuple[list[int], list[int]]:
        """Pair what IoU left unpaired by centre distance (``max_center_distance``); the
        tracks and detections still free, as indices into ``tracks`` and ``det_index``."""
        limit = self.config.max_center_distance
        if limit is None or not free_tracks or not free_dets:
            return free_tracks, free_dets
        tb = np.array([tracks[i].box for i in free_tracks]).reshape(-1, 4)
        db = b[det_index[free_dets]].reshape(-1, 4)
        tc, dc = (tb[:, :2] + tb[:, 2:]) / 2, (db[:, :2] + db[:, 2:]) / 2
        th, dh = tb[:, 3] - tb[:, 1], db[:, 3] - db[:, 1]
        scale = np.maximum(th[:, None], dh[None, :])
        dist = np.linalg.norm(tc[:, None, :] - dc[None, :, :], axis=2) / np.maximum(scale, 1e-9)
        ratio = np.maximum(th[:, None], dh[None, :]) / np.maximum(
            np.minimum(th[:, None], dh[None, :]), 1e-9
        )
        cost = np.where(ratio <= 1.5, dist / limit, np.inf)
        matches, rest_t, rest_d = _assign(cost, 1.0)
        for i, j in matches:
            k = int(det_index[free_dets[j]])
            tr = tracks[free_tracks[i]]
            if not tr.confirmed:
                self._predict(tr, frame_index, steps=0)
            self._hit(tr, b[k], s[k], k, frame_index, t)
        return [free_tracks[i] for i in rest_t], [free_dets[j] for j in rest_d]

    def _cost(
        self, tracks: list[_BTrack], boxes: np.ndarray, scores: np.ndarray, fuse: bool
    ) -> np.ndarray:
        tb = np.array([tr.box for tr in tracks]).reshape(-1, 4)
        iou = iou_matrix(tb, boxes)
        if fuse and iou.size:
            iou = iou * scores[None, :]
        out: np.ndarray = 1.0 - iou
        return out

    def _hit(
        self, tr: _BTrack, box: np.ndarray, score: float, k: int, frame_index: int, t: float
    ) -> None:
        tr.mean, tr.cov = self._kf.update(tr.mean, tr.cov, _xyxy_to_xyah(box))
        tr.state = _State.TRACKED
        tr.score = float(score)
        tr.last_frame, tr.last_t = frame_index, t
        tr.hits += 1
        tr.det_index = k
        if not tr.confirmed:
            self._confirm(tr)

    def _confirm(self, tr: _BTrack) -> None:
        tr.confirmed = True
        tr.track_id = self._next_id
        self._next_id += 1

    def _remove_duplicates(
        self, tracked: list[_BTrack], lost: list[_BTrack]
    ) -> tuple[list[_BTrack], list[_BTrack]]:
        """A lost track that now sits on a tracked one (IoU > 0.85) is the same object: keep
        the one followed longer (the reference code's remove_duplicate_stracks)."""
        if not tracked or not lost:
            return tracked, lost
        iou = iou_matrix(np.array([t.box for t in tracked]), np.array([t.box for t in lost]))
        drop_t: set[int] = set()
        drop_l: set[int] = set()
        for i, j in zip(*np.nonzero(1.0 - iou < 0.15), strict=True):
            a, b = tracked[i], lost[j]
            if a.last_frame - a.first_frame > b.last_frame - b.first_frame:
                drop_l.add(int(j))
            else:
                drop_t.add(int(i))
        for i in drop_t:
            self._end(tracked[i], "duplicate")
        for j in drop_l:
            self._end(lost[j], "duplicate")
        return (
            [t for i, t in enumerate(tracked) if i not in drop_t],
            [t for j, t in enumerate(lost) if j not in drop_l],
        )

    @staticmethod
    def _state(tr: _BTrack, frame_index: int) -> TrackState:
        assert tr.track_id is not None
        return _track_state(tr, tr.track_id, tr.box, frame_index)


# --------------------------------------------------------------------------- IoU baseline


@dataclass(eq=False)
class _ITrack:
    track_id: int
    box: np.ndarray
    score: float
    first_frame: int
    first_t: float
    last_frame: int
    last_t: float
    hits: int = 1
    det_index: int | None = None


@dataclass
class IouTracker(_EndedTracks):
    """The baseline: greedy IoU association of detections to the tracks' last boxes.

    Pairs are taken in order of decreasing IoU while IoU >= ``iou_threshold``; no motion
    model, no second stage. A detection with ``score >= min_score`` nobody took starts a
    track at once; a track unmatched for more than ``max_lost`` video frames ends.
    """

    iou_threshold: float = 0.3
    max_lost: int = 2
    min_score: float = 0.0
    name: str = "iou"

    def __post_init__(self) -> None:
        if not 0 < self.iou_threshold <= 1:
            raise ValueError("iou_threshold must be in (0, 1]")
        if self.max_lost < 0:
            raise ValueError("max_lost must be >= 0 frames")
        self.reset()

    def reset(self) -> None:
        self._tracks: list[_ITrack] = []
        self._ended = []
        self._next_id = 1
        self._frame: int | None = None

    def update(
        self, boxes: np.ndarray, scores: np.ndarray, frame_index: int, t: float
    ) -> list[TrackState]:
        b, s = _check_inputs(boxes, scores, frame_index, self._frame)
        self._frame = frame_index
        keep = np.flatnonzero(s >= self.min_score)
        for tr in self._tracks:
            tr.det_index = None
        iou = iou_matrix(np.array([tr.box for tr in self._tracks]).reshape(-1, 4), b[keep])
        taken_t: set[int] = set()
        taken_d: set[int] = set()
        if iou.size:
            order = np.argsort(-iou, axis=None, kind="stable")
            for flat in order:
                i, j = divmod(int(flat), iou.shape[1])
                if iou[i, j] < self.iou_threshold:
                    break
                if i in taken_t or j in taken_d:
                    continue
                taken_t.add(i)
                taken_d.add(j)
                tr, k = self._tracks[i], int(keep[j])
                tr.box, tr.score, tr.det_index = b[k].copy(), float(s[k]), k
                tr.last_frame, tr.last_t = frame_index, t
                tr.hits += 1
        for j, kk in enumerate(keep.tolist()):
            if j not in taken_d:
                k = int(kk)
                tr = _ITrack(
                    self._next_id, b[k].copy(), float(s[k]), frame_index, t, frame_index, t
                )
                tr.det_index = k
                self._next_id += 1
                self._tracks.append(tr)
        alive = []
        for tr in self._tracks:
            if frame_index - tr.last_frame > self.max_lost:
                self._end(tr, "lost")
            else:
                alive.append(tr)
        self._tracks = alive
        return [self._state(tr, frame_index) for tr in self._tracks if tr.det_index is not None]

    def predict_only(self, frame_index: int, t: float) -> list[TrackState]:
        if self._frame is not None and frame_index < self._frame:
            raise ValueError(f"frame_index must not go back: {frame_index} < {self._frame}")
        out = []
        for tr in self._tracks:
            if frame_index - tr.last_frame <= self.max_lost:
                st = self._state(tr, frame_index)
                out.append(replace(st, det_index=None))
        return out

    def finish(self) -> list[EndedTrack]:
        for tr in self._tracks:
            self._end(tr, "finished")
        self._tracks = []
        return self.drain_ended()

    @staticmethod
    def _state(tr: _ITrack, frame_index: int) -> TrackState:
        x0, y0, x1, y1 = (float(v) for v in tr.box)
        return _track_state(tr, tr.track_id, (x0, y0, x1, y1), frame_index)


def _track_state(tr: _BTrack | _ITrack, track_id: int, box: Box, frame_index: int) -> TrackState:
    """What either tracker reports of ``tr`` at ``frame_index``, with its id and box."""
    return TrackState(
        track_id=track_id,
        box=box,
        score=tr.score,
        age=frame_index - tr.first_frame,
        hits=tr.hits,
        time_since_update=frame_index - tr.last_frame,
        det_index=tr.det_index,
        first_frame=tr.first_frame,
        first_t=tr.first_t,
    )


def make_tracker(name: str, **params: object) -> Tracker:
    """``"bytetrack"`` or ``"iou"``; ``params`` go to ByteTrackConfig / IouTracker."""
    if name == "bytetrack":
        return ByteTrackTracker(ByteTrackConfig(**params))  # type: ignore[arg-type]
    if name == "iou":
        return IouTracker(**params)  # type: ignore[arg-type]
    raise ValueError(f"unknown tracker {name!r}: use bytetrack or iou")
