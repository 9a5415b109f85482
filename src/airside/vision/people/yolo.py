"""YOLO-family person detectors the operator brings as ONNX files (family ``yolo``, ``yolox``).

Only the person class is kept (COCO class 0 unless ``person_class`` says otherwise; a
one-class person model works too). Boxes are letterboxed into the model's input, decoded
on that canvas, mapped back to the image exactly, and thinned by NMS.

``yolo``: Ultralytics exports (``yolo export format=onnx``), one output:

- YOLOv8 / YOLO11 (and v9/v10-non-end2end heads of the same shape): (1, 4 + nc, N),
  rows cx, cy, w, h in input pixels then nc class scores (already sigmoided);
- YOLOv5 (and v7): (1, N, 5 + nc): cx, cy, w, h, objectness, nc class probabilities; the
  score is objectness x class probability.

Which one a file is follows from the output's shape: the axis that holds the N candidates
(N = the cells of strides 8, 16, 32 for v8, three anchors per cell for v5, when the input
size is known; otherwise the longer axis) and whether the attributes come first (v8) or
last (v5; a v8 export transposed to (1, N, 4 + nc) is recognised by N). Input: RGB,
pixels / 255, NCHW, letterboxed centred on grey 114 (Ultralytics' ``LetterBox``).

``yolox``: Megvii YOLOX exports (``tools/export_onnx.py``), one output (1, N, 5 + nc) over
the cells of strides 8, 16, 32 (row-major, level by level), objectness and classes already
sigmoided. The default export leaves the boxes raw (``--decode_in_inference`` off): here
cx, cy = (offset + cell) x stride and w, h = exp(raw) x stride. A graph that decodes
itself (an Exp on the output's path) is taken as it is. Input: BGR, raw 0..255 (YOLOX
0.2+; older releases normalised with ImageNet mean/std and are not supported), NCHW,
letterboxed at the top left on grey 114.

End-to-end exports with NMS inside (YOLOv10/YOLO26 ``end2end``, (1, 300, 6)) and
segmentation or pose exports (two outputs, or 56 attributes) are refused or not decoded
as such; export the plain detection head.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from airside.errors import AirsideError
from airside.vision.detectors.base import MODEL_MISMATCH, input_canvas, upstream_ops
from airside.vision.detectors.geometry import cell_grid, nms, plan_canvas
from airside.vision.onnx_runtime import Device, OnnxModel, open_model
from airside.vision.people import PersonDetection, check_image

STRIDES = (8, 16, 32)
PAD_VALUE = 114


@dataclass(frozen=True)
class Placement:
    """Where the image went on the model's canvas: scaled by ``fx``/``fy`` (resized over
    original width/height) and shifted by ``left``/``top`` pixels of padding."""

    width: int
    height: int
    fx: float
    fy: float
    left: int
    top: int

    def boxes_to_image(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) x0, y0, x1, y1 on the canvas → the same in original image pixels."""
        b = np.asarray(boxes, dtype=np.float64)
        off = np.array([self.left, self.top, self.left, self.top], dtype=np.float64)
        scale = np.array([self.fx, self.fy, self.fx, self.fy], dtype=np.float64)
        out: np.ndarray = (b - off) / scale
        return out


def plan_letterbox(
    width: int,
    height: int,
    *,
    fixed: tuple[int, int] | None,
    max_side: int,
    centre: bool,
    divisor: int = 32,
) -> tuple[tuple[int, int], Placement]:
    """((resized w, h), placement) for an image of ``width`` x ``height``.

    A fixed canvas (w, h) takes the image scaled to fit inside it (up or down); a free one
    is the image scaled down to at most ``max_side`` and padded to a multiple of
    ``divisor``. ``centre`` splits the padding as Ultralytics does (left = round(pad / 2 -
    0.1)), else it all goes right and below (YOLOX).
    """
    (rw, rh), (cw, ch) = plan_canvas(width, height, fixed=fixed, max_side=max_side, divisor=divisor)
    left = round((cw - rw) / 2 - 0.1) if centre else 0
    top = round((ch - rh) / 2 - 0.1) if centre else 0
    return (rw, rh), Placement(cw, ch, rw / width, rh / height, max(0, left), max(0, top))


def cells(width: int, height: int, strides: tuple[int, ...] = STRIDES) -> int:
    """Grid cells over all ``strides`` for a ``width`` x ``height`` input."""
    return sum(math.ceil(height / s) * math.ceil(width / s) for s in strides)


class OnnxPersonDetector(ABC):
    """A person detector run by ONNX Runtime; satisfies ``PersonDetector``.

    ``score_threshold``/``nms_iou`` None take the family's defaults. A model with a fixed
    input size gets the image letterboxed into it; a free-size one gets it scaled down to
    at most ``max_side`` (padded to a multiple of 32), or letterboxed into ``input_size``.
    """

    family: ClassVar[str]
    default_score_threshold: ClassVar[float]
    default_nms_iou: ClassVar[float] = 0.45
    bgr: ClassVar[bool] = False
    scale: ClassVar[float] = 1.0  # pixels are multiplied by this
    centre: ClassVar[bool] = False
    max_candidates: ClassVar[int] = 10000  # best first, before NMS
    max_detections: ClassVar[int] = 300

    def __init__(
        self,
        model_path: Path | str,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
        *,
        person_class: int = 0,
        max_side: int = 640,
        input_size: tuple[int, int] | None = None,
        threads: int = 1,
        device: Device = "cpu",
    ) -> None:
        self.path = Path(model_path)
        self.model: OnnxModel = open_model(self.path, threads=threads, device=device)
        self.name = f"{self.family}:{self.path.stem}"
        self.score_threshold = (
            self.default_score_threshold if score_threshold is None else score_threshold
        )
        self.nms_iou = self.default_nms_iou if nms_iou is None else nms_iou
        if person_class < 0:
            raise ValueError(f"person_class must be >= 0, got {person_class}")
        self.person_class = person_class
        self.max_side = max_side
        self.fixed_size = self._input_size(input_size)
        outputs = self.model.session.get_outputs()
        if len(outputs) != 1:
            raise self._mismatch(
                f"{len(outputs)} outputs ({', '.join(o.name for o in outputs)}), expected one "
                "detection tensor (export the plain detection head)"
            )
        shape = tuple(outputs[0].shape)
        if len(shape) != 3:
            raise self._mismatch(f"output of shape {list(shape)}, expected 3 dims (1, A, N)")
        self._bind(shape)

    @property
    def provider(self) -> str:
        return self.model.provider

    def _mismatch(self, why: str) -> AirsideError:
        return AirsideError(
            f"{self.path.name} is not a {self.family} person detector model: {why}",
            code=MODEL_MISMATCH,
        )

    def _input_size(self, wanted: tuple[int, int] | None) -> tuple[int, int] | None:
        return input_canvas(self.model, wanted, 32, self._mismatch)

    @abstractmethod
    def _bind(self, shape: tuple[Any, ...]) -> None:
        """Check the declared output shape (dims may be names when free)."""

    @abstractmethod
    def _decode(self, output: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw output → (boxes (K, 4) x0, y0, x1, y1 on the canvas, person scores (K,))
        for candidates scoring at least ``score_threshold``."""

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Placement]:
        """The model's input blob (1, 3, H, W) float32 for ``image``, and where it went."""
        image = check_image(image)
        h, w = image.shape[:2]
        (rw, rh), place = plan_letterbox(
            w, h, fixed=self.fixed_size, max_side=self.max_side, centre=self.centre
        )
        if (rw, rh) != (w, h):
            image = np.asarray(
                Image.fromarray(np.ascontiguousarray(image)).resize(
                    (rw, rh), Image.Resampling.BILINEAR
                )
            )
        blob = np.full((1, 3, place.height, place.width), PAD_VALUE * self.scale, np.float32)
        chw = image.transpose(2, 0, 1).astype(np.float32)
        if self.bgr:
            chw = chw[::-1]
        blob[0, :, place.top : place.top + rh, place.left : place.left + rw] = chw * self.scale
        return blob, place

    def _output(self, output: np.ndarray, attrs_first: bool) -> np.ndarray:
        """(N, A) candidates from a (1, A, N) or (1, N, A) output."""
        arr = np.asarray(output, dtype=np.float64)
        if arr.ndim != 3 or arr.shape[0] != 1:
            raise self._mismatch(f"output of shape {list(arr.shape)}, expected (1, A, N)")
        out: np.ndarray = arr[0].T if attrs_first else arr[0]
        return out

    def _classes(self, attrs: int, fixed: int) -> int:
        nc = attrs - fixed
        if nc <= self.person_class:
            raise self._mismatch(
                f"{attrs} values per candidate leave {nc} classes, no class {self.person_class}"
            )
        return nc

    def detect(self, image: np.ndarray) -> list[PersonDetection]:
        if 0 in check_image(image).shape[:2]:
            return []
        h, w = image.shape[:2]
        blob, place = self.prepare(image)
        (output,) = self.model.run(blob)
        boxes, scores = self._decode(np.asarray(output), place.width, place.height)
        if scores.size == 0:
            return []
        order = np.argsort(-scores, kind="stable")[: self.max_candidates]
        boxes, scores = boxes[order], scores[order]
        keep = nms(boxes, scores, self.nms_iou)[: self.max_detections]
        mapped = place.boxes_to_image(boxes[keep])
        mapped[:, [0, 2]] = np.clip(mapped[:, [0, 2]], 0, w)
        mapped[:, [1, 3]] = np.clip(mapped[:, [1, 3]], 0, h)
        return [
            PersonDetection(
                (float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(s), None, self.name
            )
            for b, s in zip(mapped, scores[keep], strict=True)
            if b[2] > b[0] and b[3] > b[1]
        ]


def _corners(cxcywh: np.ndarray) -> np.ndarray:
    half = cxcywh[:, 2:4] / 2
    return np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)


class UltralyticsYoloDetector(OnnxPersonDetector):
    """Ultralytics YOLOv5 / v8 / 11 exports (family ``yolo``)."""

    family = "yolo"
    default_score_threshold = 0.25
    scale = 1 / 255
    centre = True

    def _bind(self, shape: tuple[Any, ...]) -> None:
        dims = [d if isinstance(d, int) else None for d in shape[1:]]
        if all(d is not None and d < 5 for d in dims):
            raise self._mismatch(f"output of shape {list(shape)}: too few values per candidate")

    def layout(self, shape: tuple[int, ...], width: int, height: int) -> tuple[bool, bool]:
        """(attributes first, has objectness) for an output of ``shape`` on a canvas."""
        a, b = shape[1], shape[2]
        v8 = cells(width, height)
        if b == v8 and a != v8:
            return True, False  # (1, 4 + nc, N): v8 / 11
        if a == v8 and b != v8:
            return False, False  # (1, N, 4 + nc): v8 transposed
        if a == 3 * v8 and b != 3 * v8:
            return False, True  # (1, N, 5 + nc): v5
        if b == 3 * v8 and a != 3 * v8:
            return True, True  # (1, 5 + nc, N): v5 transposed
        # Another stride set (e.g. P6 models): the candidates are the longer axis.
        return (True, False) if b > a else (False, True)

    def _decode(self, output: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        attrs_first, objectness = self.layout(tuple(output.shape), width, height)
        rows = self._output(output, attrs_first)
        fixed = 5 if objectness else 4
        self._classes(rows.shape[1], fixed)
        score = rows[:, fixed + self.person_class]
        if objectness:
            score = score * rows[:, 4]
        keep = np.flatnonzero(score >= self.score_threshold)
        return _corners(rows[keep, :4]), score[keep]


class YoloxDetector(OnnxPersonDetector):
    """Megvii YOLOX exports (family ``yolox``)."""

    family = "yolox"
    default_score_threshold = 0.3
    bgr = True
    scale = 1.0
    centre = False

    def _bind(self, shape: tuple[Any, ...]) -> None:
        attrs = shape[2]
        if isinstance(attrs, int) and attrs < 6:
            raise self._mismatch(
                f"output of shape {list(shape)}, expected (1, N, 5 + classes) with classes >= 1"
            )
        ops = upstream_ops(self.path, [self.model.output_names[0]])[0]
        self.decoded = "Exp" in ops

    def _decode(self, output: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._output(output, attrs_first=False)
        self._classes(rows.shape[1], 5)
        score = rows[:, 4] * rows[:, 5 + self.person_class]
        keep = np.flatnonzero(score >= self.score_threshold)
        if self.decoded:
            return _corners(rows[keep, :4]), score[keep]
        grids, strides = _yolox_grid(width, height)
        if len(grids) != len(rows):
            raise self._mismatch(
                f"{len(rows)} candidates for a {width}x{height} input, expected {len(grids)} "
                f"cells of strides {', '.join(map(str, STRIDES))}"
            )
        r, g, s = rows[keep], grids[keep], strides[keep]
        xy = (r[:, :2] + g) * s
        wh = np.exp(np.minimum(r[:, 2:4], 20.0)) * s
        return _corners(np.concatenate([xy, wh], axis=1)), score[keep]


def _yolox_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Every cell's (col, row) and stride, level by level, row-major (YOLOX's order)."""
    grids, strides = [], []
    for s in STRIDES:
        rows, cols = math.ceil(height / s), math.ceil(width / s)
        grids.append(cell_grid(rows, cols))
        strides.append(np.full((rows * cols, 1), float(s)))
    return np.concatenate(grids), np.concatenate(strides)


PERSON_FAMILIES: dict[str, type[OnnxPersonDetector]] = {
    cls.family: cls for cls in (UltralyticsYoloDetector, YoloxDetector)
}


def build_person_model(family: str, path: Path | str, **opts: Any) -> OnnxPersonDetector:
    """The ``family`` person detector for the ONNX model at ``path``; ``opts`` go to its
    constructor (score_threshold, nms_iou, person_class, max_side, input_size, threads,
    device).

    Raises AirsideError: ``unknown_family``, ``model_missing``, ``model_invalid`` (not an
    ONNX model) or ``model_mismatch`` (an ONNX model of another format).
    """
    cls = PERSON_FAMILIES.get(family.strip().lower())
    if cls is None:
        raise AirsideError(
            f"unknown person detector family {family!r}; known: "
            f"{', '.join(sorted(PERSON_FAMILIES))}",
            code="unknown_family",
        )
    return cls(path, **opts)
