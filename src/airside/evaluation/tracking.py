"""Tracker accuracy on MOTChallenge sequences: MOTA, IDF1, id switches and friends.

Reads ``gt.txt`` and ``det.txt`` (``frame,id,x,y,w,h,conf,...``, 1-based frames, boxes as
top-left corner + size in pixels), runs each tracker over the public detections, and scores
its output against the ground truth with ``motmetrics`` (IoU distance, a pair counts as a
match at IoU >= 0.5, as in the MOTChallenge devkit).

Ground-truth conventions (as TrackEval applies them):

* ``mot15`` (TUD, PETS, ...): columns 8-10 are world coordinates, not classes; rows whose
  ``conf`` column is 0 are dropped, every other row is a pedestrian to track.
* ``mot16`` (MOT16/17/20): column 8 is the class and only class 1 (pedestrian) with a
  non-zero ``conf`` is evaluated; tracker boxes that match (IoU >= 0.5, one-to-one) a
  distractor (2 person on vehicle, 7 static person, 8 distractor, 12 reflection) are removed
  before scoring, other classes are ignored.
"""

from __future__ import annotations

import configparser
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from airside.video.tracking import (
    ByteTrackConfig,
    ByteTrackTracker,
    IouTracker,
    Tracker,
    iou_matrix,
)

GtFormat = Literal["mot15", "mot16"]
DISTRACTOR_CLASSES = (2, 7, 8, 12)
PEDESTRIAN = 1
MATCH_IOU = 0.5  # a tracker box must overlap a ground-truth box this much to count

TRACKER_NAMES = ("bytetrack", "iou")


@dataclass(frozen=True)
class FrameRows:
    """The rows of one frame: ids (-1 in detection files), boxes (N, 4) x, y, w, h, conf
    and class (-1 when the file has none)."""

    ids: np.ndarray
    boxes: np.ndarray
    conf: np.ndarray
    cls: np.ndarray


@dataclass(frozen=True)
class MotFile:
    path: Path
    frames: dict[int, FrameRows]
    rows: int

    @property
    def last_frame(self) -> int:
        return max(self.frames) if self.frames else 0

    def at(self, frame: int) -> FrameRows:
        return self.frames.get(frame, _EMPTY)


_EMPTY = FrameRows(
    np.zeros(0, dtype=np.int64), np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)
)


@dataclass(frozen=True)
class Sequence:
    name: str
    gt: Path
    det: Path
    frames: int | None = None  # from seqinfo.ini when present; else the files' last frame


def _number(text: str, path: Path, line: int, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{path}, line {line}: {what} {text.strip()!r} is not a number") from None
    if not np.isfinite(v):
        raise ValueError(f"{path}, line {line}: {what} must be finite, got {text.strip()!r}")
    return v


def read_mot(path: Path, kind: Literal["gt", "det"], gt_format: GtFormat = "mot15") -> MotFile:
    """Read a MOTChallenge ``gt.txt`` or ``det.txt``; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    raw: dict[int, list[tuple[int, float, float, float, float, float, int]]] = {}
    seen: set[tuple[int, int]] = set()
    n = 0
    with path.open(encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            fields = [x.strip() for x in text.split(",")]
            if len(fields) < 7:
                raise ValueError(
                    f"{path}, line {line_no}: expected at least 7 comma-separated fields "
                    f"(frame,id,x,y,w,h,conf), got {len(fields)}"
                )
            frame_f = _number(fields[0], path, line_no, "frame")
            ident_f = _number(fields[1], path, line_no, "id")
            if frame_f != int(frame_f) or frame_f < 1:
                raise ValueError(f"{path}, line {line_no}: frame must be an integer >= 1")
            if ident_f != int(ident_f):
                raise ValueError(f"{path}, line {line_no}: id must be an integer")
            x, y, w, h, conf = (
                _number(v, path, line_no, name)
                for v, name in zip(fields[2:7], ("x", "y", "width", "height", "conf"), strict=True)
            )
            if w <= 0 or h <= 0:
                raise ValueError(f"{path}, line {line_no}: width and height must be > 0")
            frame, ident = int(frame_f), int(ident_f)
            cls = -1
            if kind == "gt":
                if ident < 0:
                    raise ValueError(f"{path}, line {line_no}: ground-truth id must be >= 0")
                if (frame, ident) in seen:
                    raise ValueError(f"{path}, line {line_no}: id {ident} twice in frame {frame}")
                seen.add((frame, ident))
                if gt_format == "mot16":
                    if len(fields) < 8:
                        raise ValueError(
                            f"{path}, line {line_no}: mot16 ground truth needs a class"
                        )
                    cls = int(_number(fields[7], path, line_no, "class"))
            raw.setdefault(frame, []).append((ident, x, y, w, h, conf, cls))
            n += 1
    if n == 0:
        raise ValueError(f"{path}: no rows")
    frames = {}
    for frame, rows in raw.items():
        a = np.array([r[:6] for r in rows], dtype=np.float64)
        frames[frame] = FrameRows(
            a[:, 0].astype(np.int64),
            a[:, 1:5],
            a[:, 5],
            np.array([r[6] for r in rows], dtype=np.int64),
        )
    return MotFile(path, frames, n)


def _xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.c_[b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]]
    return out


def _seq_length(folder: Path) -> int | None:
    ini = folder / "seqinfo.ini"
    if not ini.is_file():
        return None
    cp = configparser.ConfigParser()
    try:
        cp.read(ini, encoding="utf-8")
        value = cp.get("Sequence", "seqLength", fallback=None)
        return int(value) if value else None
    except (configparser.Error, ValueError):
        raise ValueError(f"{ini}: seqLength must be an integer") from None


def sequence(gt: Path, det: Path, name: str | None = None) -> Sequence:
    """A sequence from its two files; the name and length come from the MOTChallenge layout
    (``NAME/gt/gt.txt`` next to ``NAME/seqinfo.ini``) when the files sit in one."""
    gt, det = Path(gt), Path(det)
    root = gt.parent.parent if gt.parent.name == "gt" else gt.parent
    return Sequence(name or root.name or gt.stem, gt, det, _seq_length(root))


def sequences_in(folder: Path) -> list[Sequence]:
    """Every ``NAME/gt/gt.txt`` + ``NAME/det/det.txt`` under ``folder`` (e.g. the TUD set)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder")
    out = [
        sequence(d / "gt" / "gt.txt", d / "det" / "det.txt", d.name)
        for d in sorted(folder.iterdir())
        if (d / "gt" / "gt.txt").is_file() and (d / "det" / "det.txt").is_file()
    ]
    if not out:
        raise ValueError(f"{folder}: no sequences (NAME/gt/gt.txt with NAME/det/det.txt)")
    return out


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class TrackerOutput:
    """Per frame, the ids and boxes (x, y, w, h) a tracker reported, and its running time."""

    frames: dict[int, tuple[np.ndarray, np.ndarray]]
    seconds: float

    @property
    def track_ids(self) -> set[int]:
        return {int(i) for ids, _ in self.frames.values() for i in ids}


BoxSource = Literal["track", "detection"]


def run_tracker(
    tracker: Tracker,
    det: MotFile,
    n_frames: int,
    min_score: float = 0.0,
    boxes: BoxSource = "track",
) -> TrackerOutput:
    """Feed every frame 1..n_frames (empty ones too, so that tracks age) to ``tracker``.

    ``boxes``: report the tracker's own estimate (``track``: ByteTrack's Kalman posterior)
    or the matched input detection (``detection``) for each matched track.
    """
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    tracker.reset()
    start = time.perf_counter()
    for frame in range(1, n_frames + 1):
        rows = det.at(frame)
        keep = rows.conf >= min_score
        xyxy = _xywh_to_xyxy(rows.boxes[keep])
        states = tracker.update(xyxy, rows.conf[keep], frame, t=float(frame))
        matched = [s for s in states if s.det_index is not None]
        ids = np.array([s.track_id for s in matched], dtype=np.int64)
        if boxes == "detection":
            b = xyxy[[s.det_index for s in matched if s.det_index is not None]].reshape(-1, 4)
        else:
            b = np.array([s.box for s in matched], dtype=np.float64).reshape(-1, 4)
        out[frame] = (ids, np.c_[b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]])
    tracker.finish()
    return TrackerOutput(out, time.perf_counter() - start)


def output_from_file(result: MotFile) -> TrackerOutput:
    """A tracker's result file (MOTChallenge format, ids in column 2) as a TrackerOutput."""
    return TrackerOutput(
        {f: (rows.ids, rows.boxes) for f, rows in result.frames.items()}, seconds=0.0
    )


def _distances(gt_boxes: np.ndarray, hyp_boxes: np.ndarray) -> np.ndarray:
    d = 1.0 - iou_matrix(_xywh_to_xyxy(gt_boxes), _xywh_to_xyxy(hyp_boxes))
    d[d > 1.0 - MATCH_IOU] = np.nan
    return d


def _gt_and_hyps(
    gt: FrameRows, ids: np.ndarray, boxes: np.ndarray, gt_format: GtFormat
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apply the ground-truth conventions of ``gt_format`` to one frame (see module doc)."""
    if gt_format == "mot16" and len(gt.ids) and len(ids):
        iou = iou_matrix(_xywh_to_xyxy(gt.boxes), _xywh_to_xyxy(boxes))
        rows, cols = linear_sum_assignment(-iou)
        ok = iou[rows, cols] > MATCH_IOU - np.finfo(float).eps
        distractor = np.isin(gt.cls[rows[ok]], DISTRACTOR_CLASSES)
        drop = cols[ok][distractor]
        keep_h = np.setdiff1d(np.arange(len(ids)), drop)
        ids, boxes = ids[keep_h], boxes[keep_h]
    keep = gt.conf != 0
    if gt_format == "mot16":
        keep &= gt.cls == PEDESTRIAN
    return gt.ids[keep], gt.boxes[keep], ids, boxes


def accumulate(
    gt: MotFile, hyp: TrackerOutput, n_frames: int, gt_format: GtFormat = "mot15"
) -> Any:
    """A ``motmetrics.MOTAccumulator`` for one tracker on one sequence."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    empty = (np.zeros(0, dtype=np.int64), np.zeros((0, 4)))
    for frame in range(1, n_frames + 1):
        ids, boxes = hyp.frames.get(frame, empty)
        g_ids, g_boxes, h_ids, h_boxes = _gt_and_hyps(gt.at(frame), ids, boxes, gt_format)
        acc.update(g_ids.tolist(), h_ids.tolist(), _distances(g_boxes, h_boxes), frameid=frame)
    return acc


METRICS = (
    "mota",
    "idf1",
    "num_switches",
    "motp",
    "precision",
    "recall",
    "idp",
    "idr",
    "num_false_positives",
    "num_misses",
    "num_objects",
    "num_unique_objects",
    "mostly_tracked",
    "partially_tracked",
    "mostly_lost",
    "num_fragmentations",
)


def _summary(row: Mapping[str, Any], tracks: int, seconds: float, frames: int) -> dict[str, Any]:
    def r(x: Any) -> float:
        return round(float(x), 4)

    return {
        "mota": r(row["mota"]),
        "idf1": r(row["idf1"]),
        "id_switches": int(row["num_switches"]),
        # MOTChallenge convention: mean IoU of the matched pairs (motmetrics gives 1 - IoU).
        "motp": r(1.0 - row["motp"]) if np.isfinite(row["motp"]) else None,
        "precision": r(row["precision"]),
        "recall": r(row["recall"]),
        "idp": r(row["idp"]),
        "idr": r(row["idr"]),
        "false_positives": int(row["num_false_positives"]),
        "misses": int(row["num_misses"]),
        "gt_boxes": int(row["num_objects"]),
        "gt_tracks": int(row["num_unique_objects"]),
        "tracks": tracks,
        "mostly_tracked": int(row["mostly_tracked"]),
        "partially_tracked": int(row["partially_tracked"]),
        "mostly_lost": int(row["mostly_lost"]),
        "fragmentations": int(row["num_fragmentations"]),
        "frames": frames,
        "tracker_seconds": round(seconds, 4),
    }


TrackerFactory = Callable[[], Tracker]


def default_trackers(
    bytetrack: ByteTrackConfig | None = None, iou: IouTracker | None = None
) -> dict[str, TrackerFactory]:
    bt = bytetrack or TUD_BYTETRACK
    base = iou or IouTracker()
    return {
        "bytetrack": lambda: ByteTrackTracker(bt),
        "iou": lambda: IouTracker(base.iou_threshold, base.max_lost, base.min_score),
    }


def evaluate_tracking(
    sequences: Iterable[Sequence],
    trackers: Mapping[str, TrackerFactory] | None = None,
    *,
    min_score: float = 0.0,
    gt_format: GtFormat = "mot15",
    boxes: BoxSource = "detection",
) -> dict[str, Any]:
    """Run every tracker on every sequence and score it; ``overall`` pools all frames.

    ``boxes="detection"`` (default) scores every tracker on the same boxes, the public
    detections it matched, so that the comparison is about identities (association), not
    box smoothing; ``"track"`` scores ByteTrack's Kalman boxes instead.

    Returns ``{"sequences": {name: {tracker: metrics}}, "overall": {tracker: metrics},
    "settings": {...}}``.
    """
    import motmetrics as mm

    trackers = dict(trackers or default_trackers())
    if not trackers:
        raise ValueError("no tracker to evaluate")
    seqs = list(sequences)
    if not seqs:
        raise ValueError("no sequence to evaluate")
    names = [s.name for s in seqs]
    if len(set(names)) != len(names):
        raise ValueError(f"sequence names must differ: {names}")
    mh = mm.metrics.create()
    per_seq: dict[str, dict[str, Any]] = {s.name: {} for s in seqs}
    overall: dict[str, Any] = {}
    loaded = []
    for s in seqs:
        gt = read_mot(s.gt, "gt", gt_format)
        det = read_mot(s.det, "det")
        n = s.frames or max(gt.last_frame, det.last_frame)
        loaded.append((s, gt, det, n))
    for tname, make in trackers.items():
        accs, tracks, secs, frames = [], [], [], []
        for _s, gt, det, n in loaded:
            out = run_tracker(make(), det, n, min_score, boxes)
            accs.append(accumulate(gt, out, n, gt_format))
            tracks.append(len(out.track_ids))
            secs.append(out.seconds)
            frames.append(n)
        table = mh.compute_many(
            accs, metrics=list(METRICS), names=names, generate_overall=len(accs) > 1
        )
        for i, s in enumerate(seqs):
            per_seq[s.name][tname] = _summary(table.loc[s.name], tracks[i], secs[i], frames[i])
        row = table.loc["OVERALL"] if len(accs) > 1 else table.loc[names[0]]
        overall[tname] = _summary(row, sum(tracks), sum(secs), sum(frames))
    return {
        "sequences": per_seq,
        "overall": overall,
        "settings": {
            "min_score": min_score,
            "gt_format": gt_format,
            "boxes": boxes,
            "match_iou": MATCH_IOU,
        },
    }


# ByteTrack settings for the TUD numbers in docs/tracking.md, tuned on those same two
# sequences (a grid over the thresholds and the lost buffer; see the doc).
TUD_BYTETRACK = ByteTrackConfig(
    high_thresh=0.8, new_track_thresh=0.8, match_thresh=0.8, lost_buffer=30
)
