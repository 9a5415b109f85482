"""SCRFD (InsightFace det_500m / det_2.5g / det_10g exports).

Format as decoded by insightface's ``model_zoo/scrfd.py``: per stride s, anchors at
(col s, row s) of each feature-map cell, row-major, ``A`` anchors per cell (2 for the
3-stride exports, 1 for the 5-stride ones) listed consecutively. Outputs: scores (N, 1,
already sigmoid), box distances (N, 4) left/top/right/bottom, keypoint offsets (N, 10),
both in units of the stride. Input: RGB, (x - 127.5) / 128, NCHW.

Exports name and order their outputs differently (score_8..kps_32, or numbers; grouped by
kind or by stride; (1, N, k) or (N, k)); they are told apart by last dim and count.
"""

from __future__ import annotations

import numpy as np

from airside.vision.detectors.base import Candidates, OnnxFaceDetector, OutputSpec
from airside.vision.detectors.geometry import cell_grid

# outputs → (strides, with keypoints), as insightface reads them
_LAYOUTS = {
    6: ((8, 16, 32), False),
    9: ((8, 16, 32), True),
    10: ((8, 16, 32, 64, 128), False),
    15: ((8, 16, 32, 64, 128), True),
}


class ScrfdDetector(OnnxFaceDetector):
    """Landmarks: the eye on the image's left, the other eye, nose tip, the mouth corner on
    the image's left, the other mouth corner (None for exports without keypoints)."""

    family = "scrfd"
    default_score_threshold = 0.5
    default_nms_iou = 0.4
    default_confident_score = 0.8
    mean = (127.5, 127.5, 127.5)
    std = 128.0

    def _bind(self, outputs: list[OutputSpec]) -> None:
        if len(outputs) not in _LAYOUTS:
            raise self._mismatch(
                f"it has {len(outputs)} outputs; SCRFD exports have 6, 9, 10 or 15"
            )
        self.strides, self.use_kps = _LAYOUTS[len(outputs)]
        self.gives_landmarks = self.use_kps
        self.divisor = max(self.strides)
        self._widths = (1, 4, 10) if self.use_kps else (1, 4)
        for spec in outputs:
            if spec.dim(-1) not in (None, *self._widths):
                raise self._mismatch(
                    f"output {spec.name} has shape {spec.shape}; SCRFD outputs end in "
                    f"{' or '.join(map(str, self._widths))}"
                )
        for width in self._widths:
            count = sum(spec.dim(-1) == width for spec in outputs)
            if count > len(self.strides):
                raise self._mismatch(f"{count} outputs end in {width}, one per stride expected")

    def _by_kind(
        self, outputs: list[np.ndarray], widths: tuple[int, ...]
    ) -> dict[int, list[np.ndarray]]:
        """Group outputs by their last dim, each flattened to (N, width), largest N first.

        Exports of one architecture list their outputs in different orders and with or
        without a batch dim; the last dim (1 score, 4 box, 10 keypoints...) and the count
        (the finest stride has the most anchors) identify them all the same.
        """
        groups: dict[int, list[np.ndarray]] = {w: [] for w in widths}
        for out in outputs:
            width = out.shape[-1] if out.ndim else 0
            if width not in groups:
                raise self._mismatch(
                    f"an output of shape {out.shape} has none of the last dims {widths}"
                )
            groups[width].append(out.reshape(-1, width))
        for group in groups.values():
            group.sort(key=lambda a: -a.shape[0])
        return groups

    def _decode(self, outputs: list[np.ndarray], width: int, height: int) -> Candidates:
        groups = self._by_kind(outputs, self._widths)
        n = len(self.strides)
        if any(len(g) != n for g in groups.values()):
            raise self._mismatch(f"expected {n} outputs of each kind")
        kps_levels: list[np.ndarray | None] = list(groups[10]) if self.use_kps else [None] * n
        parts = []
        for stride, scores, dist, kps in zip(
            self.strides, groups[1], groups[4], kps_levels, strict=True
        ):
            rows, cols = height // stride, width // stride
            anchors = len(scores) // (rows * cols) if rows * cols else 0
            if anchors < 1 or anchors * rows * cols != len(scores) or len(dist) != len(scores):
                raise self._mismatch(
                    f"stride {stride} gave {len(scores)} scores for a {width}x{height} input "
                    f"({rows}x{cols} cells)"
                )
            score = scores[:, 0]
            keep = np.flatnonzero(score >= self.score_threshold)
            centre = cell_grid(rows, cols)[keep // anchors] * stride
            d = dist[keep] * stride
            boxes = np.concatenate([centre - d[:, :2], centre + d[:, 2:]], axis=1)
            landmarks = (
                None if kps is None else centre[:, None, :] + kps[keep].reshape(-1, 5, 2) * stride
            )
            parts.append(Candidates(boxes, score[keep], landmarks))
        return Candidates.concat(parts, with_landmarks=self.use_kps)
