"""UltraFace (Ultra-Light-Fast-Generic-Face-Detector-1MB: version-RFB-320/640, slim-320).

Outputs scores (1, N, 2) and boxes (1, N, 4). The standard exports bake the decoding in:
boxes are normalised x0, y0, x1, y1. The ``_without_postprocessing`` and ``_simplified``
exports output raw SSD offsets, decoded here against the UltraFace priors (min_boxes
[[10, 16, 24], [32, 48], [64, 96], [128, 192, 256]], strides [8, 16, 32, 64], centred on
the cells of each ceil(size / stride) map as the training config does, clipped to [0, 1])
with centre variance 0.1 and size variance 0.2. Which one a file is, is read from
its graph: decoded boxes pass through an Exp. Input: RGB, (x - 127) / 128, NCHW.
Boxes only: landmarks are None.
"""

from __future__ import annotations

import numpy as np

from airside.vision.detectors.base import Candidates, OnnxFaceDetector, OutputSpec, upstream_ops
from airside.vision.detectors.geometry import softmax, ssd_priors

MIN_BOXES = ((10, 16, 24), (32, 48), (64, 96), (128, 192, 256))
STRIDES = (8, 16, 32, 64)
CENTER_VARIANCE = 0.1
SIZE_VARIANCE = 0.2


class UltraFaceDetector(OnnxFaceDetector):
    family = "ultraface"
    gives_landmarks = False
    default_score_threshold = 0.7
    default_nms_iou = 0.3
    default_confident_score = 0.95
    mean = (127.0, 127.0, 127.0)
    std = 128.0

    def _bind(self, outputs: list[OutputSpec]) -> None:
        widths = [o.dim(-1) for o in outputs]
        known = [w for w in widths if w is not None]
        if len(outputs) != 2 or any(w not in (2, 4) for w in known) or len(set(known)) < len(known):
            raise self._mismatch(
                "expected 2 outputs scores (1, N, 2) and boxes (1, N, 4), got "
                + ", ".join(f"{o.name} {o.shape}" for o in outputs)
            )
        ops = upstream_ops(self.path, [o.name for o in outputs])
        # Softmax ahead of the scores; an Exp ahead of the boxes means they are decoded
        self._softmaxed = ["Softmax" in o for o in ops]
        self._decoded = ["Exp" in o for o in ops]
        boxes = next((i for i, w in enumerate(widths) if w != 2), 1)
        self.decoded = self._decoded[boxes]  # as far as the declared shapes tell

    def _decode(self, outputs: list[np.ndarray], width: int, height: int) -> Candidates:
        i_scores, i_boxes = self._by_last_dim(outputs, (2, 4))
        scores, boxes = outputs[i_scores].reshape(-1, 2), outputs[i_boxes].reshape(-1, 4)
        score = (scores if self._softmaxed[i_scores] else softmax(scores))[:, 1]
        keep = np.flatnonzero(score >= self.score_threshold)
        scale = np.array([width, height, width, height], dtype=np.float64)
        if self._decoded[i_boxes]:
            return Candidates(boxes[keep] * scale, score[keep], None)
        priors = ssd_priors(width, height, MIN_BOXES, STRIDES, clip=True, centre_on_cells=True)
        if len(priors) != len(boxes):
            raise self._mismatch(
                f"{len(boxes)} boxes for a {width}x{height} input, expected {len(priors)} priors"
            )
        p, d = priors[keep], boxes[keep]
        centre = d[:, :2] * CENTER_VARIANCE * p[:, 2:] + p[:, :2]
        half = np.exp(d[:, 2:] * SIZE_VARIANCE) * p[:, 2:] / 2
        corners = np.concatenate([centre - half, centre + half], axis=1)
        return Candidates(corners * scale, score[keep], None)
