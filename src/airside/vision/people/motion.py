"""Moving blobs by background subtraction: the person detector of last resort.

No model, no dependency beyond NumPy and SciPy, a few milliseconds per frame. It finds
whatever moves (people, but also trolleys, doors and shadows) and loses a person who
stands still long enough to be learnt into the background, so it is a fallback when no
person model is installed, and a way to see people-shaped figures in generated test
videos. It is stateful: call ``detect`` on consecutive frames of one camera.

Each frame is scaled down to ``work_side`` on its longer side and turned to grey. A pixel
is foreground when it differs from the running-average background by more than
``threshold`` grey levels, after the frame's overall brightness is matched to the
background's (so a light dimming does not light up the whole frame). Foreground is
cleaned (opened, then closed with a tall 9x5 element and dilated so a person's head, body
and legs join), cut into connected
blobs, and each blob larger than ``min_area`` (a fraction of the frame) is a detection.
The background learns at rate ``alpha`` per frame where there is no foreground and at
``alpha * stopped_rate`` under it, so something that stops moving fades in slowly.
When more than ``reset_fraction`` of the frame changes at once (a camera cut, the lights
switched), the background restarts from that frame.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from airside.vision.people import PersonDetection, check_image


def grey_small(image: np.ndarray, work_side: int) -> tuple[np.ndarray, float]:
    """``image`` in grey (float32, 0..255) scaled down to at most ``work_side`` on its longer
    side, and the scale applied (small / original)."""
    h, w = image.shape[:2]
    scale = min(1.0, work_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = np.asarray(
            Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.Resampling.BOX)
        )
    rgb = image.astype(np.float32)
    grey = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    return grey, scale


def brightness_gain(frame: np.ndarray, background: np.ndarray) -> float:
    """The factor that best matches ``background``'s overall brightness to ``frame``'s
    (median of the per-pixel ratio over pixels bright enough to measure), clipped to a
    plausible range."""
    lit = background > 16
    if lit.sum() < 16:
        return 1.0
    ratio = np.median(frame[lit] / background[lit])
    return float(np.clip(ratio, 0.25, 4.0))


class MotionBlobDetector:
    """Moving blobs as person detections (no keypoints); satisfies ``PersonDetector``."""

    def __init__(
        self,
        *,
        work_side: int = 320,
        threshold: float = 25.0,
        alpha: float = 0.05,
        stopped_rate: float = 0.1,
        min_area: float = 0.002,
        reset_fraction: float = 0.6,
    ) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if threshold <= 0 or work_side < 32 or not 0 <= min_area < 1:
            raise ValueError("threshold > 0, work_side >= 32 and 0 <= min_area < 1 required")
        self.name = "motion-blobs"
        self.work_side = work_side
        self.threshold = threshold
        self.alpha = alpha
        self.stopped_rate = stopped_rate
        self.min_area = min_area
        self.reset_fraction = reset_fraction
        self.background: np.ndarray | None = None
        self.foreground: np.ndarray | None = None  # the last frame's cleaned mask

    def reset(self) -> None:
        self.background = None
        self.foreground = None

    def detect(self, image: np.ndarray) -> list[PersonDetection]:
        image = check_image(image)
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            return []
        grey, scale = grey_small(image, self.work_side)
        bg = self.background
        if bg is None or bg.shape != grey.shape:
            self.background = grey
            self.foreground = np.zeros(grey.shape, dtype=bool)
            return []
        diff = np.abs(grey - bg * brightness_gain(grey, bg))
        raw = diff > self.threshold
        if raw.mean() > self.reset_fraction:
            self.background = grey
            self.foreground = np.zeros(grey.shape, dtype=bool)
            return []
        mask = ndimage.binary_opening(raw, structure=np.ones((3, 3), dtype=bool))
        # Tall closing: a person's head, body and legs are stacked, and thin limbs break up.
        mask = ndimage.binary_closing(mask, structure=np.ones((9, 5), dtype=bool))
        joined = ndimage.binary_dilation(mask, structure=np.ones((3, 3), dtype=bool))
        rate = np.where(joined, self.alpha * self.stopped_rate, self.alpha).astype(np.float32)
        self.background = bg + rate * (grey - bg)
        self.foreground = joined
        labels, n = ndimage.label(joined)
        if n == 0:
            return []
        min_px = self.min_area * grey.size
        out: list[PersonDetection] = []
        for i, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is None:
                continue
            blob = labels[sl] == i
            if blob.sum() < max(min_px, 4):
                continue
            ys, xs = sl
            strength = float(diff[sl][blob].mean())
            score = min(1.0, strength / (4 * self.threshold))
            box = (xs.start / scale, ys.start / scale, xs.stop / scale, ys.stop / scale)
            box = (min(box[0], w), min(box[1], h), min(box[2], w), min(box[3], h))
            out.append(PersonDetection(box, score, None, self.name))
        out.sort(key=lambda d: -d.score)
        return out
