"""RetinaFace (mobilenet0.25 / resnet50 exports of the PyTorch port biubug6/Pytorch_Retinaface).

Priors: min_sizes [[16, 32], [64, 128], [256, 512]] at steps [8, 16, 32], not clipped,
normalised cx, cy, w, h (see ``ssd_priors``). Outputs: loc (1, N, 4), conf (1, N, 2) and
landms (1, N, 10). Decoding with variances (0.1, 0.2): centre = prior_c + loc_xy 0.1
prior_wh, size = prior_wh exp(loc_wh 0.2), landmark = prior_c + l 0.1 prior_wh, all times
the input size. The repo's export (phase "test") softmaxes conf; a graph without a Softmax
gets one applied here. Input: BGR minus the mean (104, 117, 123), NCHW.
"""

from __future__ import annotations

import numpy as np

from airside.vision.detectors.base import Candidates, OnnxFaceDetector, OutputSpec, upstream_ops
from airside.vision.detectors.geometry import softmax, ssd_priors

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)


class RetinaFaceDetector(OnnxFaceDetector):
    """Landmarks: the eye on the image's left, the other eye, nose tip, the mouth corner on
    the image's left, the other mouth corner."""

    family = "retinaface"
    default_score_threshold = 0.6
    default_nms_iou = 0.4
    default_confident_score = 0.95
    bgr = True
    mean = (104.0, 117.0, 123.0)

    def _bind(self, outputs: list[OutputSpec]) -> None:
        widths = sorted(o.dim(-1) or 0 for o in outputs)
        if len(outputs) != 3 or any(w not in (0, 2, 4, 10) for w in widths):
            raise self._mismatch(
                "expected 3 outputs loc (1, N, 4), conf (1, N, 2), landms (1, N, 10), got "
                + ", ".join(f"{o.name} {o.shape}" for o in outputs)
            )
        self._softmaxed = [
            "Softmax" in ops for ops in upstream_ops(self.path, self.model.output_names)
        ]

    def _decode(self, outputs: list[np.ndarray], width: int, height: int) -> Candidates:
        ic, il, im = self._by_last_dim(outputs, (2, 4, 10))
        conf, loc, landms = (outputs[i].reshape(-1, w) for i, w in ((ic, 2), (il, 4), (im, 10)))
        priors = ssd_priors(width, height, MIN_SIZES, STEPS, clip=False, centre_on_cells=False)
        if not (len(loc) == len(conf) == len(landms) == len(priors)):
            raise self._mismatch(
                f"{len(loc)} boxes for a {width}x{height} input, expected {len(priors)} priors"
            )
        score = (conf if self._softmaxed[ic] else softmax(conf))[:, 1]
        keep = np.flatnonzero(score >= self.score_threshold)
        p, d = priors[keep], loc[keep]
        centre = p[:, :2] + d[:, :2] * VARIANCE[0] * p[:, 2:]
        half = p[:, 2:] * np.exp(d[:, 2:] * VARIANCE[1]) / 2
        size = np.array([width, height], dtype=np.float64)
        boxes = np.concatenate([centre - half, centre + half], axis=1) * np.tile(size, 2)
        lms = p[:, None, :2] + landms[keep].reshape(-1, 5, 2) * VARIANCE[0] * p[:, None, 2:]
        return Candidates(boxes, score[keep], lms * size)
