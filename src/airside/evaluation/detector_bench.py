"""Face detectors side by side: latency per 640x480 frame and recall of the labelled face.

Every detector runs in one process, on one thread (ONNX Runtime intra-op threads 1;
dlib's HOG is single-threaded; ``OMP_NUM_THREADS=1`` is set before the run), on the same
frames and images, interleaved frame by frame so that a noisy machine slows them alike.

Latency: frames of 640x480 made from dataset faces (each image scaled to 480 px high and
centred on a mid-grey 640x480 canvas, so every frame holds a real face); each detector
runs each frame ``repeats`` times after one warm-up call; p50/p99 are over all calls.

Recall of the one labelled face per image (LFW development images, 250x250
deep-funneled, the face centred; Yale faces, 320x243, one face near the centre), by one
rule for every detector: the image's face counts as found when **some** detection has

1. its box centre inside the central region: the middle half of the image in each
   direction (|cx - W/2| <= W/4 and |cy - H/2| <= H/4);
2. a box that overlaps the central box, a square of side 0.4 x the image's shorter side
   centred on the image (any overlap);
3. a face-sized box: its width between 0.2 and 0.9 x the image's shorter side, so neither
   a box on an eye nor one round the whole image counts.

No IoU against a fixed box: detectors draw boxes of different extents (YuNet's and
UltraFace's include forehead and chin, dlib's do not), and some Yale faces sit well off
the centre. Detections that do not count are reported per image as ``other``: mostly
background faces in LFW (real faces, not the labelled one), or false detections.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from airside.vision.imageio import load_image
from airside.vision.protocols import Detection, FaceDetector

FRAME_SIZE = (640, 480)  # (width, height)
CENTRAL_REGION = 0.25  # the centre may be off the image centre by this fraction of W, H
CENTRAL_BOX = 0.4  # side of the central box, as a fraction of the shorter image side
FACE_WIDTH = (0.2, 0.9)  # a face-sized box's width, as fractions of the shorter side

HERE = Path(__file__).resolve()
SHARED_FACES = HERE.parents[3].parent / "shared" / "data" / "faces"
DATASETS = {
    "LFW development (250x250)": SHARED_FACES / "lfw_view1",
    "Yale faces (320x243)": SHARED_FACES / "yale",
}


def central_box(width: int, height: int) -> tuple[float, float, float, float]:
    half = CENTRAL_BOX * min(width, height) / 2
    cx, cy = width / 2, height / 2
    return (cx - half, cy - half, cx + half, cy + half)


def is_labelled_face(det: Detection, width: int, height: int) -> bool:
    """The module's rule: centre in the central region, overlapping the central box, and
    face-sized."""
    cx, cy = det.center
    if abs(cx - width / 2) > CENTRAL_REGION * width:
        return False
    if abs(cy - height / 2) > CENTRAL_REGION * height:
        return False
    c = central_box(width, height)
    x0, y0, x1, y1 = det.box
    if x1 <= c[0] or x0 >= c[2] or y1 <= c[1] or y0 >= c[3]:
        return False
    short = min(width, height)
    return FACE_WIDTH[0] * short <= det.width <= FACE_WIDTH[1] * short


@dataclass
class DetectorResult:
    name: str
    provider: str
    latency_ms: list[float] = field(default_factory=list)
    recall: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.latency_ms) if self.latency_ms else np.zeros(1)
        return {
            "detector": self.name,
            "provider": self.provider,
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 2),
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 2),
            "latency_calls": len(self.latency_ms),
            "recall": self.recall,
        }


@dataclass
class BenchResult:
    detectors: list[DetectorResult]
    datasets: dict[str, int]  # name -> images used
    skipped: dict[str, str]  # name -> why
    frames: int
    repeats: int
    rule: str = field(
        default=(
            "found = a detection with its box centre in the middle half of the image, "
            f"overlapping the centred square of side {CENTRAL_BOX} x the shorter image side, "
            f"and {FACE_WIDTH[0]}-{FACE_WIDTH[1]} x the shorter side wide"
        )
    )

    def as_dict(self) -> dict[str, Any]:
        rows = [d.as_dict() for d in self.detectors]
        base = next((r for r in rows if r["detector"].startswith("dlib-hog")), None)
        for r in rows:
            if base is not None and r["latency_p50_ms"] > 0:
                r["speedup_vs_hog_p50"] = round(base["latency_p50_ms"] / r["latency_p50_ms"], 2)
        return {
            "frame": f"{FRAME_SIZE[0]}x{FRAME_SIZE[1]}",
            "threads": 1,
            "frames": self.frames,
            "repeats": self.repeats,
            "rule": self.rule,
            "datasets": self.datasets,
            "skipped": self.skipped,
            "detectors": rows,
        }


def dataset_images(folder: Path, limit: int | None) -> list[str]:
    """Image paths from ``folder/identities.csv``, evenly spread when ``limit`` is smaller."""
    with (folder / "identities.csv").open(newline="", encoding="utf-8-sig") as f:
        rows = [r["image"] for r in csv.DictReader(f)]
    if limit is not None and limit < len(rows):
        idx = np.linspace(0, len(rows) - 1, limit).round().astype(int)
        rows = [rows[i] for i in idx]
    return [str(folder / r) for r in rows]


def make_frame(image: np.ndarray) -> np.ndarray:
    """``image`` scaled to the frame's height and centred on a mid-grey 640x480 canvas."""
    w, h = FRAME_SIZE
    scale = h / image.shape[0]
    new_w = min(w, max(1, round(image.shape[1] * scale)))
    resized = np.asarray(
        Image.fromarray(image).resize((new_w, h), Image.Resampling.BILINEAR), dtype=np.uint8
    )
    frame = np.full((h, w, 3), 128, dtype=np.uint8)
    x0 = (w - new_w) // 2
    frame[:, x0 : x0 + new_w] = resized
    return frame


def _load(path: str) -> np.ndarray:
    return load_image(path, max_pixels=40_000_000).pixels


def provider_of(detector: FaceDetector) -> str:
    return str(getattr(detector, "provider", "dlib"))


def available_datasets(
    datasets: dict[str, Path] | None = None,
) -> tuple[dict[str, Path], dict[str, str]]:
    """The datasets present, and why each absent one is skipped."""
    present: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for name, folder in (datasets or DATASETS).items():
        if (folder / "identities.csv").is_file():
            present[name] = folder
        else:
            skipped[name] = f"{folder} is absent (identities.csv not found)"
    return present, skipped


def run_bench(
    detectors: Sequence[FaceDetector],
    *,
    images: int | None = None,
    frames: int = 30,
    repeats: int = 3,
    datasets: dict[str, Path] | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> BenchResult:
    """Latency and recall of ``detectors`` (build them with one thread each).

    ``images`` limits the images per dataset (None: all). ``on_total`` is told the number of
    progress steps before they start. Raises ValueError when no dataset is present.
    """
    os.environ["OMP_NUM_THREADS"] = "1"
    present, skipped = available_datasets(datasets)
    if not present:
        raise ValueError(
            "no face dataset is present: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    lists = {name: dataset_images(folder, images) for name, folder in present.items()}
    frame_sources = next(iter(lists.values()))
    n_frames = min(frames, len(frame_sources))
    step = max(1, len(frame_sources) // max(1, n_frames))
    frame_paths = frame_sources[::step][:n_frames]
    total = len(frame_paths) * len(detectors) + sum(len(v) for v in lists.values()) * len(detectors)
    if on_total is not None:
        on_total(total)
    results = [DetectorResult(d.name, provider_of(d)) for d in detectors]

    # Latency on 640x480 frames, detectors interleaved frame by frame.
    warm = make_frame(_load(frame_paths[0]))
    for d in detectors:
        d.detect(warm)
    for path in frame_paths:
        frame = make_frame(_load(path))
        for d, res in zip(detectors, results, strict=True):
            for _ in range(repeats):
                t = time.perf_counter()
                d.detect(frame)
                res.latency_ms.append((time.perf_counter() - t) * 1000)
            if progress:
                progress(1)

    # Recall of the labelled face, per dataset.
    for name, paths in lists.items():
        found = [0] * len(detectors)
        other = [0] * len(detectors)
        for path in paths:
            image = _load(path)
            h, w = image.shape[:2]
            for i, d in enumerate(detectors):
                dets = d.detect(image)
                hits = [x for x in dets if is_labelled_face(x, w, h)]
                found[i] += bool(hits)
                other[i] += len(dets) - min(1, len(hits))
                if progress:
                    progress(1)
        for i, res in enumerate(results):
            res.recall[name] = {
                "images": len(paths),
                "found": found[i],
                "recall": round(found[i] / len(paths), 4),
                "other_per_image": round(other[i] / len(paths), 3),
            }
    return BenchResult(
        results,
        {k: len(v) for k, v in lists.items()},
        skipped,
        len(frame_paths),
        repeats,
    )


def verdict(result: dict[str, Any], family: str = "yunet") -> list[str]:
    """For each ``family`` detector and each dlib HOG baseline: whether it is at least 3x
    faster (p50) with equal or better recall on every dataset measured, as sentences."""
    rows = result["detectors"]
    out = []
    for base in (r for r in rows if r["detector"].startswith("dlib-hog")):
        for r in rows:
            if not r["detector"].startswith(f"{family}:"):
                continue
            speed = base["latency_p50_ms"] / max(r["latency_p50_ms"], 1e-9)
            recall_ok = all(
                r["recall"][k]["recall"] >= base["recall"][k]["recall"] for k in base["recall"]
            )
            meets = speed >= 3.0 and recall_ok
            out.append(
                f"{r['detector']} vs {base['detector']}: {speed:.1f}x faster at p50, recall "
                f"{'equal or better' if recall_ok else 'lower'} on every dataset: "
                f"{'meets' if meets else 'does not meet'} the 3x target"
            )
    return out


class Named:
    """A detector under another name (two configurations of one class side by side)."""

    def __init__(self, detector: FaceDetector, name: str) -> None:
        self._detector = detector
        self.name = name
        self.confident_score = detector.confident_score
        self.score_threshold = detector.score_threshold
        self.provider = provider_of(detector)

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self._detector.detect(image)


def hog_baselines() -> list[FaceDetector]:
    """dlib HOG as Airside configures it (upsample 1, score >= 0.3), and at upsample 0."""
    from airside.vision.dlib_models import DlibHogDetector

    return [
        Named(DlibHogDetector(1, 0.3, 1280), "dlib-hog (upsample 1, Airside default)"),
        Named(DlibHogDetector(0, 0.3, 1280), "dlib-hog (upsample 0)"),
    ]


def registered_detectors(models_dir: Path) -> tuple[list[FaceDetector], dict[str, str]]:
    """Every registered face detector on one CPU thread, and the refused ones with why
    (a file that no longer matches its manifest is never run)."""
    from airside.errors import AirsideError
    from airside.model_registry import list_models, load_model
    from airside.vision.detectors import build_onnx_detector

    found: list[FaceDetector] = []
    refused: dict[str, str] = {}
    for m in list_models(models_dir):
        if m.kind != "face-detector":
            continue
        try:
            _, path = load_model(models_dir, m.name)
            det = build_onnx_detector(
                m.family, path, input_size=m.input_size, threads=1, device="cpu"
            )
        except AirsideError as e:
            refused[m.name] = str(e)
            continue
        found.append(Named(det, f"{m.family}:{m.name}"))
    return found, refused


def result_table(data: dict[str, Any]) -> Any:
    """``BenchResult.as_dict()`` (plus a verdict) as a Rich table."""
    from rich.markup import escape
    from rich.table import Table

    sets = list(data["datasets"])
    t = Table("detector", "provider", "p50 ms", "p99 ms", "vs HOG", *sets)
    for r in data["detectors"]:
        cells = [
            f"{r['recall'][s]['recall']:.1%} ({r['recall'][s]['found']}/"
            f"{r['recall'][s]['images']}; {r['recall'][s]['other_per_image']:.2f} other)"
            for s in sets
        ]
        t.add_row(
            escape(r["detector"]),
            escape(r["provider"]),
            f"{r['latency_p50_ms']:.1f}",
            f"{r['latency_p99_ms']:.1f}",
            f"{r.get('speedup_vs_hog_p50', 0):.1f}x",
            *cells,
        )
    return t
