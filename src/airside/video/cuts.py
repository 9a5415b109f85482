"""Hard cuts: the picture jumps to another view between two frames.

A camera multiplexer switching inputs, a PTZ camera jumping to a preset, or an edited clip
(a broadcast, the Hamilton test clip) puts different people where the tracked ones were.
A tracker that matches boxes by position then carries a track, and the identity decided
for it, onto a stranger: the stranger is labelled with someone else's name and, with
``--redact``, left unblurred as "matched". The pipeline ends every track at a cut.

The score is PySceneDetect's content score: the mean absolute change of hue, saturation
and value between two small thumbnails, 0-255 per channel. Its default threshold (27) is
kept. Written by hand because PySceneDetect would bring OpenCV's build into the core
install for what is a few lines of NumPy on a 64x36 thumbnail, and its detectors expect
its own frame-and-timecode stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

THUMB = (64, 36)


def content_thumbnail(image: np.ndarray) -> np.ndarray:
    """The frame as a 64x36 HSV thumbnail (int16, so differences do not wrap)."""
    im = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    small = im.resize(THUMB, Image.Resampling.BOX, reducing_gap=2.0)
    return np.asarray(small.convert("HSV"), dtype=np.int16)


def content_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute HSV change between two thumbnails (0-255)."""
    return float(np.abs(a - b).mean())


@dataclass
class CutDetector:
    """Feed every processed frame in order; ``update`` says whether it starts a new shot.

    ``min_gap_s``: a second jump within this time of a cut is not another cut (a flash
    lights one frame and is gone; the tracks were already ended at its first frame)."""

    threshold: float = 27.0
    min_gap_s: float = 0.5
    _prev: np.ndarray | None = field(default=None, init=False, repr=False)
    _last_cut: float | None = field(default=None, init=False, repr=False)
    last_score: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 255:
            raise ValueError("threshold must be in (0, 255]")
        if self.min_gap_s < 0:
            raise ValueError("min_gap_s must be >= 0")

    def update(self, image: np.ndarray, t: float) -> bool:
        thumb = content_thumbnail(image)
        prev, self._prev = self._prev, thumb
        if prev is None:
            return False
        self.last_score = content_change(prev, thumb)
        if self.last_score < self.threshold:
            return False
        if self._last_cut is not None and t - self._last_cut < self.min_gap_s:
            return False
        self._last_cut = t
        return True
