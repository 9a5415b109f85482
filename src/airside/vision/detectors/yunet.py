"""YuNet (libfacedetection; OpenCV Zoo ``face_detection_yunet_2023mar.onnx``).

Format as decoded by OpenCV's ``FaceDetectorYN`` (modules/objdetect/src/face_detect.cpp):
anchor-free, strides 8/16/32, one prediction per feature-map cell (row-major), outputs
``cls_S``, ``obj_S`` (N, 1), ``bbox_S`` (N, 4), ``kps_S`` (N, 10) for each stride S.
Score = sqrt(clip(cls) * clip(obj)); for cell (col, row) of stride s:
cx = (col + bbox0) s, cy = (row + bbox1) s, w = exp(bbox2) s, h = exp(bbox3) s, and each
keypoint is ((kx + col) s, (ky + row) s). Input: BGR 0..255 float, no normalisation.
"""

from __future__ import annotations

import numpy as np

from airside.vision.detectors.base import Candidates, OnnxFaceDetector, OutputSpec
from airside.vision.detectors.geometry import cell_grid

STRIDES = (8, 16, 32)
_WIDTHS = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}


class YuNetDetector(OnnxFaceDetector):
    """Landmarks: the eye on the image's left, the other eye, nose tip, the mouth corner on
    the image's left, the other mouth corner."""

    family = "yunet"
    default_score_threshold = 0.6
    default_nms_iou = 0.3
    default_confident_score = 0.9
    bgr = True

    def _bind(self, outputs: list[OutputSpec]) -> None:
        by_name = {o.name: (i, o) for i, o in enumerate(outputs)}
        self._index: dict[tuple[str, int], int] = {}
        missing = []
        for kind, width in _WIDTHS.items():
            for stride in STRIDES:
                name = f"{kind}_{stride}"
                if name not in by_name:
                    missing.append(name)
                    continue
                i, spec = by_name[name]
                if spec.dim(-1) not in (None, width):
                    raise self._mismatch(f"{name} has shape {spec.shape}, not (1, N, {width})")
                self._index[kind, stride] = i
        if missing:
            raise self._mismatch(
                f"outputs {', '.join(missing)} are missing (it has {[o.name for o in outputs]})"
            )

    def _decode(self, outputs: list[np.ndarray], width: int, height: int) -> Candidates:
        parts = []
        for stride in STRIDES:
            rows, cols = height // stride, width // stride
            cls, obj, bbox, kps = (
                outputs[self._index[kind, stride]].reshape(-1, w) for kind, w in _WIDTHS.items()
            )
            if not (len(cls) == len(obj) == len(bbox) == len(kps) == rows * cols):
                raise self._mismatch(
                    f"stride {stride} gave {len(cls)} cells for a {width}x{height} input, "
                    f"expected {rows * cols}"
                )
            score = np.sqrt(np.clip(cls[:, 0], 0, 1) * np.clip(obj[:, 0], 0, 1))
            keep = np.flatnonzero(score >= self.score_threshold)
            cell = cell_grid(rows, cols)[keep]
            b = bbox[keep]
            centre = (cell + b[:, :2]) * stride
            half = np.exp(b[:, 2:]) * stride / 2
            landmarks = (kps[keep].reshape(-1, 5, 2) + cell[:, None, :]) * stride
            parts.append(
                Candidates(
                    np.concatenate([centre - half, centre + half], axis=1), score[keep], landmarks
                )
            )
        return Candidates.concat(parts, with_landmarks=True)
