"""When and where to look for people again: detection every N seconds, motion gated.

A crowd detector costs ~0.2 s per 720p frame on one core, eight frames of a 25 fps
camera. So people are detected at ``interval_s`` (the tracker carries them in between),
and on a detection frame only the part of the view that changed since the people there
were last detected is looked at again (``MotionGate``): people standing still, an empty
corridor or a static false alarm are not re-detected every time. A person on the edge of
the changed part is looked at whole (the region widens over the boxes it cuts), so a
region never splits a person into two halves.

Motion is measured on a small grey copy of the frame (1/``DOWNSCALE``), per cell of
``CELL`` px of it: the mean absolute change above ``threshold`` grey levels against the
frame at which that cell was last detected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from airside.vision.people import PersonDetection, PersonDetector

DOWNSCALE = 8
CELL = 4  # cells of 4x4 small pixels: 32x32 frame pixels
Region = tuple[int, int, int, int]


class RegionDetector(PersonDetector, Protocol):
    """A person detector that can look at part of a frame at the full frame's scale."""

    def detect_region(self, image: np.ndarray, region: Region) -> list[PersonDetection]: ...


def _grey_small(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    hs, ws = h // DOWNSCALE, w // DOWNSCALE
    crop = image[: hs * DOWNSCALE, : ws * DOWNSCALE].astype(np.float32)
    grey = crop @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    out: np.ndarray = grey.reshape(hs, DOWNSCALE, ws, DOWNSCALE).mean(axis=(1, 3))
    return out


@dataclass
class GateStats:
    """What the gate decided, for the watch summary."""

    full: int = 0  # detection frames looked at whole
    regions: int = 0  # looked at in part
    reused: int = 0  # nothing changed: the last detections stand
    pixels_looked: float = 0.0  # fraction of the frame, summed over detection frames


class MotionGate:
    """Decides, per detection frame, what to run the detector on (see module doc)."""

    def __init__(self, *, threshold: float = 6.0, max_region: float = 0.6) -> None:
        self.threshold = threshold
        self.max_region = max_region  # beyond this fraction of the frame, look at it whole
        self._reference: np.ndarray | None = None
        self._people: list[PersonDetection] = []
        self.stats = GateStats()

    def reset(self) -> None:
        self._reference = None
        self._people = []

    def detect(self, detector: PersonDetector, image: np.ndarray) -> list[PersonDetection]:
        """The people in ``image``, looking again only where it changed."""
        grey = _grey_small(image)
        h, w = image.shape[:2]
        region = self._changed(grey, w, h)
        region_capable = hasattr(detector, "detect_region")
        if region is None and self._reference is not None:
            self.stats.reused += 1
            return list(self._people)
        if (
            region is None
            or self._reference is None
            or not region_capable
            or region == (0, 0, w, h)
            or _area(region) > self.max_region * w * h
        ):
            self.stats.full += 1
            self.stats.pixels_looked += 1.0
            self._people = detector.detect(image)
            self._reference = grey
            return list(self._people)
        region = self._widen(region, w, h)
        kept = [p for p in self._people if not _overlaps(p.box, region)]
        found = detector.detect_region(image, region)  # type: ignore[attr-defined]
        self.stats.regions += 1
        self.stats.pixels_looked += _area(region) / (w * h)
        self._people = kept + list(found)
        x0, y0, x1, y1 = (v // DOWNSCALE for v in region)
        assert self._reference is not None
        self._reference[y0 : y1 + 1, x0 : x1 + 1] = grey[y0 : y1 + 1, x0 : x1 + 1]
        return list(self._people)

    def _changed(self, grey: np.ndarray, w: int, h: int) -> Region | None:
        """The frame-pixel box around every cell that changed, or None."""
        if self._reference is None or self._reference.shape != grey.shape:
            self._reference = None
            return (0, 0, w, h)
        diff = np.abs(grey - self._reference)
        hs, ws = diff.shape
        ch, cw = -(-hs // CELL), -(-ws // CELL)
        padded = np.zeros((ch * CELL, cw * CELL), dtype=np.float32)
        padded[:hs, :ws] = diff
        cells = padded.reshape(ch, CELL, cw, CELL).mean(axis=(1, 3)) > self.threshold
        if not cells.any():
            return None
        rows, cols = np.flatnonzero(cells.any(axis=1)), np.flatnonzero(cells.any(axis=0))
        step = CELL * DOWNSCALE
        margin = step  # one cell around what moved
        return (
            max(0, int(cols[0]) * step - margin),
            max(0, int(rows[0]) * step - margin),
            min(w, (int(cols[-1]) + 1) * step + margin),
            min(h, (int(rows[-1]) + 1) * step + margin),
        )

    def _widen(self, region: Region, w: int, h: int) -> Region:
        """The region grown over every known person it cuts (until none is cut)."""
        x0, y0, x1, y1 = region
        changed = True
        while changed:
            changed = False
            for p in self._people:
                bx0, by0, bx1, by1 = p.box
                if not _overlaps(p.box, (x0, y0, x1, y1)):
                    continue
                nx0, ny0 = min(x0, int(bx0) - 8), min(y0, int(by0) - 8)
                nx1, ny1 = max(x1, int(bx1) + 9), max(y1, int(by1) + 9)
                if (nx0, ny0, nx1, ny1) != (x0, y0, x1, y1):
                    x0, y0, x1, y1 = nx0, ny0, nx1, ny1
                    changed = True
        return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def _area(r: Region) -> float:
    return float(max(0, r[2] - r[0]) * max(0, r[3] - r[1]))


def _overlaps(box: tuple[float, float, float, float], r: Region) -> bool:
    return box[0] < r[2] and box[2] > r[0] and box[1] < r[3] and box[3] > r[1]
