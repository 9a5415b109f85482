"""Counts people can trust: a person detector, tracker and scene rules measured on a crowd
view with known people (``airside.synthetic.crowd``: TUD's ground-truth tracks worn by real
people cut from the street_night frame, 1280x720, 25 fps, ~50 people 60-155 px tall).

``python -m airside.evaluation.crowd_counts [--frames N] [--json PATH]`` runs each
candidate through ``SafetyAnalytics`` exactly as ``airside watch`` does (detection cadence,
motion gate, ByteTrack, rules) and reports, against the truth:

- detection recall and precision on detection frames: the boxes handed to the tracker
  against the people at least 60 px tall and at most half hidden, IoU >= 0.5, greedy by
  score; a box on a smaller or more hidden person is neither a hit nor a false alarm;
- people per frame (tracks in view, every frame) and per zone (two halves of the view),
  mean against the truth's mean, and the mean absolute per-frame error in percent;
- crossings of a counting line down the middle, against the truth's;
- MOTA and IDF1 of the tracks (every frame, predictions included): what loitering and
  line counting rest on, since a broken track restarts a dwell and can count twice;
- processing milliseconds per frame on one thread (decoding and rendering excluded) and
  the real-time factor that gives at 25 fps.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from airside.analytics.scene import parse_scene
from airside.synthetic.crowd import (
    CrowdClip,
    build_crowd_clip,
    inside_polygon,
    line_crossings,
    person_crops,
)
from airside.video.people_gate import MotionGate
from airside.video.safety import SafetyAnalytics
from airside.video.tracking import iou_matrix
from airside.vision.people import PersonDetection, PersonDetector

MIN_HEIGHT = 60.0
MAX_OCCLUDED = 0.5
MATCH_IOU = 0.5
Point = tuple[float, float]
Box = tuple[float, float, float, float]


@dataclass
class CrowdResult:
    name: str
    frames: int
    detection_frames: int
    recall: float
    precision: float
    people_truth_mean: float
    people_mean: float
    people_error_pct: float  # mean absolute per-frame error, % of the truth
    zones: dict[str, dict[str, float]] = field(default_factory=dict)
    line_truth: int = 0
    line_counted: int = 0
    mota: float = float("nan")
    idf1: float = float("nan")
    ms_per_frame: float = 0.0
    realtime_factor: float = 0.0


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score_detections(
    dets: Sequence[PersonDetection],
    targets: Sequence[Sequence[float]],
    others: Sequence[Sequence[float]],
) -> tuple[int, int]:
    """(targets found, false alarms): greedy by score at IoU >= 0.5; a detection on one of
    ``others`` (people too small or too hidden to be expected) counts as neither."""
    taken: set[int] = set()
    false_alarms = 0
    for d in sorted(dets, key=lambda d: -d.score):
        best, best_j = MATCH_IOU, -1
        for j, t in enumerate(targets):
            v = _iou(d.box, t)
            if j not in taken and v >= best:
                best, best_j = v, j
        if best_j >= 0:
            taken.add(best_j)
        elif not any(_iou(d.box, o) >= MATCH_IOU for o in others):
            false_alarms += 1
    return len(taken), false_alarms


def crowd_scene(size: tuple[int, int]) -> tuple[str, dict[str, list[Point]], tuple[Point, Point]]:
    """The scene (TOML), its zones in pixels, and its counting line in pixels."""
    w, h = size
    zones = {
        "left": [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)],
        "right": [(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)],
    }
    text = 'camera = "crowd"\n' + "".join(
        f"[zones.{z}]\npoints = {[list(p) for p in pts]}\n" for z, pts in zones.items()
    )
    text += '[lines.middle]\npoints = [[0.5, 0.0], [0.5, 1.0]]\nin = "right"\n'
    text += '[[rules]]\ntype = "crowding"\nzone = "left"\nmax_count = 1000\n'
    px = {z: [(x * w, y * h) for x, y in pts] for z, pts in zones.items()}
    return text, px, ((0.5 * w, 0.0), (0.5 * w, float(h)))


def evaluate_crowd(
    clip: CrowdClip,
    detector: PersonDetector,
    *,
    interval_s: float = 0.0,
    gate: bool = False,
    name: str | None = None,
) -> CrowdResult:
    """Run ``detector`` as ``airside watch`` would over ``clip`` and score it (module doc)."""
    import motmetrics as mm

    text, zones, (a, b) = crowd_scene(clip.size)
    analytics = SafetyAnalytics(
        parse_scene(text), detector, interval_s=interval_s, gate=MotionGate() if gate else None
    )
    acc = mm.MOTAccumulator(auto_id=False)
    found = alarms = expected = det_frames = 0
    truth_counts: list[int] = []
    counts: list[int] = []
    zone_truth: dict[str, list[int]] = {z: [] for z in zones}
    zone_est: dict[str, list[int]] = {z: [] for z in zones}
    spent = 0.0
    truth_ids: dict[str, int] = {}
    for i in range(clip.frames):
        image = clip.frame(i)
        t0 = time.perf_counter()
        out = analytics.process(image, i, i / clip.fps)
        spent += time.perf_counter() - t0
        truth = clip.truth(i)
        visible = [p for p in truth if p.height >= MIN_HEIGHT and p.occluded <= MAX_OCCLUDED]
        if out.detected:
            det_frames += 1
            others = [p.box for p in truth if p not in visible]
            f, fa = score_detections(analytics.last_detections, [p.box for p in visible], others)
            found, alarms, expected = found + f, alarms + fa, expected + len(visible)
        truth_counts.append(len(visible))
        counts.append(len(out.people))
        for z, poly in zones.items():
            zone_truth[z].append(sum(inside_polygon(p.foot, poly) for p in visible))
            zone_est[z].append(
                sum(inside_polygon(((bx[0] + bx[2]) / 2, bx[3]), poly) for _, bx in out.people)
            )
        gt_boxes = np.array([p.box for p in truth], dtype=np.float64).reshape(-1, 4)
        hyp = np.array([bx for _, bx in out.people], dtype=np.float64).reshape(-1, 4)
        dist = 1.0 - iou_matrix(gt_boxes, hyp)
        dist[dist > 1.0 - MATCH_IOU] = np.nan
        ids = [truth_ids.setdefault(p.track, len(truth_ids)) for p in truth]
        acc.update(ids, [tid for tid, _ in out.people], dist, frameid=i)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1"], name="crowd")
    truth_arr, est_arr = np.array(truth_counts, float), np.array(counts, float)
    crossings = analytics.rules.line_counts["middle"]
    return CrowdResult(
        name=name or detector.name,
        frames=clip.frames,
        detection_frames=det_frames,
        recall=round(found / expected, 4) if expected else float("nan"),
        precision=round(found / (found + alarms), 4) if found + alarms else float("nan"),
        people_truth_mean=round(float(truth_arr.mean()), 2),
        people_mean=round(float(est_arr.mean()), 2),
        people_error_pct=round(_mape(truth_arr, est_arr), 1),
        zones={
            z: {
                "truth_mean": round(float(np.mean(zone_truth[z])), 2),
                "mean": round(float(np.mean(zone_est[z])), 2),
                "error_pct": round(
                    _mape(np.array(zone_truth[z], float), np.array(zone_est[z], float)), 1
                ),
            }
            for z in zones
        },
        line_truth=line_crossings(clip, a, b),
        line_counted=crossings.crossed_in + crossings.crossed_out,
        mota=round(float(summary["mota"].iloc[0]), 4),
        idf1=round(float(summary["idf1"].iloc[0]), 4),
        ms_per_frame=round(spent / clip.frames * 1000, 1),
        realtime_factor=round((clip.frames / clip.fps) / spent, 2) if spent else 0.0,
    )


def _mape(truth: np.ndarray, est: np.ndarray) -> float:
    ok = truth > 0
    if not ok.any():
        return float("nan")
    return float(np.mean(np.abs(est[ok] - truth[ok]) / truth[ok]) * 100)


def street720(data: Path, labels_csv: Path) -> tuple[np.ndarray, list[Box], list[Box]]:
    """street_night frame 0 at 1280x720 (a hall camera's size), with the people at least
    60 px tall and the rest (smaller people, ignored regions) scaled with it."""
    from PIL import Image

    from airside.evaluation.people_detection import decode_frames, read_labels

    (_, frame), *_ = decode_frames(data / "street_night" / "demo.mp4", 0)
    small = np.asarray(Image.fromarray(frame).resize((1280, 720), Image.Resampling.BILINEAR))
    labels = read_labels(labels_csv)[("street_night/demo.mp4", 0)]
    s = 1280 / frame.shape[1]
    people = [_scaled(b, s) for b in labels.people]
    tall = [b for b in people if b[3] - b[1] >= MIN_HEIGHT]
    rest = [b for b in people if b[3] - b[1] < MIN_HEIGHT] + [_scaled(b, s) for b in labels.ignore]
    return small, tall, rest


def _scaled(b: Sequence[float], s: float) -> Box:
    return (b[0] * s, b[1] * s, b[2] * s, b[3] * s)


def candidates() -> dict[str, tuple[Callable[[], PersonDetector], float, bool]]:
    """name -> (detector factory, detection interval s, motion gate)."""
    from airside.vision.people.movenet import MoveNetDetector, movenet_available
    from airside.vision.people.nanodet import NanoDetDetector, nanodet_available

    out: dict[str, tuple[Callable[[], PersonDetector], float, bool]] = {}
    if movenet_available():
        out["MoveNet 256, every frame"] = (lambda: MoveNetDetector(threads=1), 0.0, False)
        out["MoveNet 256 tiles 4x3, every frame"] = (
            lambda: MoveNetDetector(tiles=(4, 3), threads=1),
            0.0,
            False,
        )
    if nanodet_available():
        out["NanoDet 1024, every frame"] = (lambda: NanoDetDetector(threads=1), 0.0, False)
        out["NanoDet 1024, every 0.32 s + gate (default)"] = (
            lambda: NanoDetDetector(threads=1),
            0.32,
            True,
        )
        out["NanoDet 1024 + tiles 2x2, every 0.32 s + gate"] = (
            lambda: NanoDetDetector(tiles=(2, 2), tile_side=640, threads=1),
            0.32,
            True,
        )
    return out


def people_bench(data: Path, labels_csv: Path, frames: int) -> list[dict[str, Any]]:
    """One row per candidate: the street frame at 720p (recall, precision, ms per frame on
    one thread) and the crowd clip (``evaluate_crowd``); the default also on the clip with
    two thirds of its people standing still, with and without the motion gate."""
    from statistics import median

    from airside.synthetic.crowd import with_still_part

    crops = person_crops(data / "street_night" / "demo.mp4", labels_csv)
    clip = build_crowd_clip(data / "tud", crops, frames=frames)
    frame, tall, rest = street720(data, labels_csv)
    rows: list[dict[str, Any]] = []
    for name, (make, every, gate) in candidates().items():
        det = make()
        det.detect(frame)  # allocation, not steady-state cost
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            dets = det.detect(frame)
            times.append((time.perf_counter() - t0) * 1000)
        found, alarms = score_detections(dets, tall, rest)
        r = evaluate_crowd(clip, make(), interval_s=every, gate=gate, name=name)
        row = asdict(r)
        row.update(
            clip="crowd",
            street_recall=round(found / len(tall), 4),
            street_precision=round(found / (found + alarms), 4) if found + alarms else None,
            street_ms=round(median(times), 1),
        )
        rows.append(row)
    if any(r["name"].endswith("(default)") for r in rows):
        from airside.vision.people.nanodet import NanoDetDetector

        still = with_still_part(clip, clip.size[0] / 3)
        for gate in (False, True):
            label = "NanoDet 1024, every 0.32 s" + (" + gate" if gate else ", no gate")
            r = evaluate_crowd(
                still, NanoDetDetector(threads=1), interval_s=0.32, gate=gate, name=label
            )
            rows.append(asdict(r) | {"clip": "crowd, 2/3 standing still"})
    return rows


def people_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (docs/people.md prints the same)."""

    def pct(v: Any) -> str:
        return "n/a" if v is None or v != v else f"{v:.0%}"

    out = [
        "| detector | clip | street 720p recall / precision | ms (street) "
        "| crowd recall / precision | people/frame (truth) | zones L / R (truth) "
        "| line (truth) | MOTA / IDF1 | ms/frame | x real time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        z = r["zones"]
        street = (
            f"{pct(r['street_recall'])} / {pct(r['street_precision'])} | {r['street_ms']}"
            if "street_recall" in r
            else "n/a | n/a"
        )
        out.append(
            f"| {r['name']} | {r['clip']} | {street} | "
            f"{pct(r['recall'])} / {pct(r['precision'])} | "
            f"{r['people_mean']} ({r['people_truth_mean']}) | {z['left']['mean']} / "
            f"{z['right']['mean']} ({z['left']['truth_mean']} / {z['right']['truth_mean']}) | "
            f"{r['line_counted']} ({r['line_truth']}) | {r['mota']:.2f} / {r['idf1']:.2f} | "
            f"{r['ms_per_frame']} | {r['realtime_factor']} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = Path(__file__).resolve().parents[3]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=root.parent / "shared" / "data" / "video")
    p.add_argument("--frames", type=int, default=175)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rows = people_bench(args.data, root / "tests" / "data" / "people_counts.csv", args.frames)
    print(people_table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
