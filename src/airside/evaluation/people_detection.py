"""Measuring person detectors on real frames against hand labels (docs/people.md).

``python -m airside.evaluation.people_detection [--data ../shared/data/video] [--labels CSV]``
prints, per candidate, the recall of labelled people, false alarms per frame and the
latency per frame on one thread. Labels are a CSV ``video,frame,kind,x0,y0,x1,y1``
(``tests/data/people_counts.csv``: our own hand labels, approximate): ``person`` rows are
people a viewer can count, ``ignore`` rows are regions (blurred or cut-off people) where
a detection is neither a hit nor a false alarm.

Matching, the same for every detector: detections are taken best score first, each
matching the unmatched labelled person it overlaps most, when IoU >= 0.3 or the overlap
covers at least 70% of the smaller box (close-ups: a pose model's box may hold the upper
body only). An unmatched detection is a false alarm unless 50% of it lies inside an
``ignore`` region; a second box on a person already matched is a false alarm.

Candidates: MoveNet MultiPose (LiteRT, one thread) at input sides 256 and 512, OpenCV's
HOG people detector (when ``opencv-python-headless`` is installed, the ``people-eval``
extra; OpenCV threads 1), and motion blobs (fed every frame of the clip up to each
labelled one). Latency: the median of 3 timed calls per labelled frame after one
untimed call (allocation); motion blobs: one call per frame of the clip.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from airside.vision.people import PersonDetection, PersonDetector, check_image

Box = tuple[float, float, float, float]
IOU_MATCH = 0.3
COVER_MATCH = 0.7
IGNORE_COVER = 0.5


@dataclass
class FrameLabels:
    people: list[Box] = field(default_factory=list)
    ignore: list[Box] = field(default_factory=list)


def read_labels(path: Path) -> dict[tuple[str, int], FrameLabels]:
    """(video, frame) → labels, from the CSV (``#`` lines are comments)."""
    out: dict[tuple[str, int], FrameLabels] = defaultdict(FrameLabels)
    with path.open(encoding="utf-8") as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        for row in rows:
            box = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
            labels = out[(row["video"], int(row["frame"]))]
            if row["kind"] == "person":
                labels.people.append(box)  # type: ignore[arg-type]
            elif row["kind"] == "ignore":
                labels.ignore.append(box)  # type: ignore[arg-type]
            else:
                raise ValueError(f"{path}: unknown kind {row['kind']!r}")
    return dict(out)


def _area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _inter(a: Box, b: Box) -> float:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def matches(det: Box, truth: Box) -> float:
    """How well ``det`` matches ``truth``: its IoU when the boxes count as the same person
    (IoU >= 0.3, or 70% of the smaller box covered), else 0."""
    inter = _inter(det, truth)
    if inter <= 0:
        return 0.0
    iou = inter / (_area(det) + _area(truth) - inter)
    cover = inter / max(1e-9, min(_area(det), _area(truth)))
    return iou if iou >= IOU_MATCH or cover >= COVER_MATCH else 0.0


@dataclass
class Score:
    people: int = 0
    found: int = 0
    false_alarms: int = 0
    frames: int = 0
    ms: list[float] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.found / self.people if self.people else float("nan")

    @property
    def false_per_frame(self) -> float:
        return self.false_alarms / self.frames if self.frames else float("nan")


def score_frame(dets: list[PersonDetection], labels: FrameLabels) -> tuple[int, int]:
    """(people found, false alarms) of one frame's detections."""
    taken: set[int] = set()
    false_alarms = 0
    for d in sorted(dets, key=lambda d: -d.score):
        best, best_j = 0.0, -1
        for j, truth in enumerate(labels.people):
            m = matches(d.box, truth)
            if j not in taken and m > best:
                best, best_j = m, j
        if best_j >= 0:
            taken.add(best_j)
            continue
        area = max(1e-9, _area(d.box))
        if any(_inter(d.box, ig) / area >= IGNORE_COVER for ig in labels.ignore):
            continue
        false_alarms += 1
    return len(taken), false_alarms


def decode_frames(path: Path, last: int) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame) for frames 0..last of a video file."""
    import av

    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i > last:
                break
            yield i, frame.to_ndarray(format="rgb24")


class HogPeopleDetector:
    """OpenCV's HOG + linear SVM people detector (Dalal-Triggs, 64x128 window), for
    comparison; needs ``opencv-python-headless<5``."""

    def __init__(self, max_side: int = 1280, hit_threshold: float = 0.0) -> None:
        import cv2

        cv2.setNumThreads(1)
        self._cv2 = cv2
        self.hog: Any = cv2.HOGDescriptor()
        svm = np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), dtype=np.float32)
        self.hog.setSVMDetector(svm)
        self.max_side = max_side
        self.hit_threshold = hit_threshold
        self.name = f"opencv-hog:{max_side}"

    def detect(self, image: np.ndarray) -> list[PersonDetection]:
        image = check_image(image)
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        small = image
        if scale < 1.0:
            size = (round(w * scale), round(h * scale))
            small = self._cv2.resize(image, size, interpolation=self._cv2.INTER_AREA)
        rects, weights = self.hog.detectMultiScale(
            small,
            hitThreshold=self.hit_threshold,
            winStride=(8, 8),
            padding=(8, 8),
            scale=1.05,
        )
        out = []
        for (x, y, rw, rh), s in zip(rects, np.ravel(weights), strict=True):
            box = (x / scale, y / scale, (x + rw) / scale, (y + rh) / scale)
            out.append(PersonDetection(box, float(s), None, self.name))
        return out


def evaluate(
    make: Callable[[], PersonDetector],
    labels: dict[tuple[str, int], FrameLabels],
    data: Path,
    *,
    sequential: bool = False,
    repeats: int = 3,
) -> dict[str, Score]:
    """Score per video of a fresh detector from ``make()``. ``sequential``: the detector
    sees every frame of the clip (motion blobs), timed on all of them."""
    by_video: dict[str, dict[int, FrameLabels]] = defaultdict(dict)
    for (video, frame), lab in labels.items():
        by_video[video][frame] = lab
    out: dict[str, Score] = {}
    for video, frames in sorted(by_video.items()):
        det = make()
        score = Score()
        warm = sequential
        for i, image in decode_frames(data / video, max(frames)):
            if not sequential and i not in frames:
                continue
            if not warm:
                det.detect(image)  # first call: allocation, not steady-state cost
                warm = True
            for _ in range(1 if sequential else repeats):
                t0 = time.perf_counter()
                dets = det.detect(image)
                score.ms.append((time.perf_counter() - t0) * 1000)
            if i in frames:
                found, fa = score_frame(dets, frames[i])
                score.people += len(frames[i].people)
                score.found += found
                score.false_alarms += fa
                score.frames += 1
        out[video] = score
    return out


def candidates() -> dict[str, tuple[Callable[[], PersonDetector], bool]]:
    from airside.vision.people.motion import MotionBlobDetector
    from airside.vision.people.movenet import MoveNetDetector, movenet_available

    out: dict[str, tuple[Callable[[], PersonDetector], bool]] = {}
    if movenet_available():
        for side, tiles in ((256, (1, 1)), (512, (1, 1)), (256, (4, 3))):
            label = "" if tiles == (1, 1) else f", {tiles[0]}x{tiles[1]} tiles"
            out[f"MoveNet MultiPose, {side} px{label}"] = (
                lambda side=side, tiles=tiles: MoveNetDetector(  # type: ignore[misc]
                    max_side=side, tiles=tiles, threads=1
                ),
                False,
            )
    try:
        import cv2  # noqa: F401

        out["OpenCV HOG, 1280 px"] = (lambda: HogPeopleDetector(1280), False)
        out["OpenCV HOG, 640 px"] = (lambda: HogPeopleDetector(640), False)
    except ImportError:
        pass
    out["motion blobs"] = (MotionBlobDetector, True)
    return out


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = Path(__file__).resolve().parents[3]  # the repository
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=root.parent / "shared" / "data" / "video")
    p.add_argument("--labels", type=Path, default=root / "tests" / "data" / "people_counts.csv")
    args = p.parse_args(argv)
    labels = read_labels(args.labels)
    print("| detector | video | frames | people | recall | false alarms / frame | ms p50 |")
    print("|---|---|---|---|---|---|---|")
    for name, (make, sequential) in candidates().items():
        for video, s in evaluate(make, labels, args.data, sequential=sequential).items():
            print(
                f"| {name} | {video.split('/')[0]} | {s.frames} | {s.people} | "
                f"{s.recall:.0%} ({s.found}) | {s.false_per_frame:.2f} | "
                f"{statistics.median(s.ms):.1f} |"
            )


if __name__ == "__main__":
    main()
