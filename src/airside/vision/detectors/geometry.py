"""Geometry shared by the ONNX face detectors: letterboxing, anchor grids, priors and NMS.

Everything is vectorised over anchors; the only Python loops run over pyramid levels (3-5)
and, in NMS, over the boxes that are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Letterbox:
    """An image resized into the top-left corner of a ``width`` x ``height`` canvas, the
    rest of which is black padding.

    ``fx``/``fy`` are the resized width/height over the original ones, so a canvas
    coordinate maps back to the image exactly by dividing by them (padding lies to the
    right and below, so it never shifts coordinates).
    """

    resized: np.ndarray  # (h, w, 3) uint8, h <= height, w <= width
    width: int
    height: int
    fx: float
    fy: float

    def boxes_to_image(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) x0, y0, x1, y1 on the canvas → the same in original image pixels."""
        scale = np.array([self.fx, self.fy, self.fx, self.fy], dtype=np.float64)
        out: np.ndarray = np.asarray(boxes, dtype=np.float64) / scale
        return out

    def points_to_image(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) x, y on the canvas → the same in original image pixels."""
        out: np.ndarray = np.asarray(points, dtype=np.float64) / np.array([self.fx, self.fy])
        return out


def plan_canvas(
    width: int,
    height: int,
    *,
    fixed: tuple[int, int] | None,
    max_side: int,
    divisor: int,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where an image of ``width`` x ``height`` goes: ((resized w, h), (canvas w, h)).

    ``fixed`` (w, h): the model takes only that size; the image is scaled (up or down) to
    fit inside it, keeping its aspect ratio. Otherwise the image is scaled down so that its
    longer side is at most ``max_side`` and the canvas is padded up to a multiple of
    ``divisor`` (the detector's largest stride).
    """
    if fixed is not None:
        cw, ch = fixed
        scale = min(cw / width, ch / height)
        rw = min(cw, max(1, round(width * scale)))
        rh = min(ch, max(1, round(height * scale)))
        return (rw, rh), (cw, ch)
    scale = min(1.0, max_side / max(width, height))
    rw = max(1, round(width * scale))
    rh = max(1, round(height * scale))
    cw = math.ceil(rw / divisor) * divisor
    ch = math.ceil(rh / divisor) * divisor
    return (rw, rh), (cw, ch)


def letterbox(image: np.ndarray, resized: tuple[int, int], canvas: tuple[int, int]) -> Letterbox:
    """Resize ``image`` (H, W, 3) uint8 to ``resized`` (w, h), bilinear, for ``canvas``."""
    h, w = image.shape[:2]
    rw, rh = resized
    if (rw, rh) != (w, h):
        small = np.asarray(
            Image.fromarray(np.ascontiguousarray(image)).resize((rw, rh), Image.Resampling.BILINEAR)
        )
    else:
        small = image
    return Letterbox(resized=small, width=canvas[0], height=canvas[1], fx=rw / w, fy=rh / h)


@lru_cache(maxsize=64)
def cell_grid(rows: int, cols: int) -> np.ndarray:
    """(rows * cols, 2) float64 (col, row) of every cell of a feature map, row-major."""
    xs, ys = np.meshgrid(np.arange(cols, dtype=np.float64), np.arange(rows, dtype=np.float64))
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
    grid.flags.writeable = False
    return grid


@lru_cache(maxsize=32)
def ssd_priors(
    width: int,
    height: int,
    min_sizes: tuple[tuple[int, ...], ...],
    steps: tuple[int, ...],
    *,
    clip: bool,
    centre_on_cells: bool,
) -> np.ndarray:
    """SSD-style prior boxes (N, 4) as normalised cx, cy, w, h.

    The order is the one RetinaFace (biubug6) and UltraFace generate: level by level, cells
    row-major, then each of the level's sizes. A level of step ``s`` has ceil(H/s) x
    ceil(W/s) cells. A cell (col, row) is centred at ((col + 0.5) s / W, (row + 0.5) s / H)
    (RetinaFace), or with ``centre_on_cells`` at ((col + 0.5) / cols, (row + 0.5) / rows)
    (UltraFace's training config, whose shrinkage is size / cells): the two differ where a
    side is not a multiple of the step, e.g. 240 / 32.
    """
    levels = []
    for sizes, step in zip(min_sizes, steps, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        span = np.array([cols, rows]) if centre_on_cells else np.array([width, height]) / step
        centres = (cell_grid(rows, cols) + 0.5) / span
        wh = np.array([[s / width, s / height] for s in sizes], dtype=np.float64)
        levels.append(
            np.concatenate(
                [np.repeat(centres, len(sizes), axis=0), np.tile(wh, (rows * cols, 1))], axis=1
            )
        )
    priors = np.concatenate(levels, axis=0)
    if clip:
        priors = np.clip(priors, 0.0, 1.0)
    priors.flags.writeable = False
    return priors


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) against many (N, 4), all x0, y0, x1, y1; 0 where the union is 0."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area = max(0.0, float(box[2] - box[0])) * max(0.0, float(box[3] - box[1]))
    wh = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None)
    areas = wh[:, 0] * wh[:, 1]
    union = area + areas - inter
    out: np.ndarray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first.

    A box is suppressed when its IoU with a better-scoring kept box exceeds
    ``iou_threshold``; ties in score keep the earlier box.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    boxes = np.asarray(boxes, dtype=np.float64)
    keep: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
