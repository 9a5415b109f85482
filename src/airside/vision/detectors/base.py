"""What every ONNX face detector shares: opening and checking the model, letterboxing the
image into the model's input, NMS, and mapping boxes and landmarks back to the image.

A family supplies only its preprocessing constants, a check of the model's outputs
(``_bind``) and the decoding of its raw outputs into canvas coordinates (``_decode``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from airside.errors import AirsideError
from airside.vision.detectors.geometry import Letterbox, letterbox, nms, plan_canvas
from airside.vision.onnx_runtime import Device, OnnxModel, open_model
from airside.vision.protocols import Detection, check_image

MODEL_MISMATCH = "model_mismatch"


def input_canvas(
    model: OnnxModel,
    wanted: tuple[int, int] | None,
    divisor: int,
    mismatch: Callable[[str], AirsideError],
) -> tuple[int, int] | None:
    """A detector's canvas size (w, h) when fixed, by the model or by ``wanted``; None when
    the model takes any size. The model must take one NCHW 3-channel image."""
    shape = model.input_shape
    if len(shape) != 4:
        raise mismatch(f"input has shape {shape}, expected (1, 3, H, W)")
    batch, channels, height, width = shape
    if isinstance(channels, int) and channels != 3:
        raise mismatch(f"input has shape {shape}, expected NCHW with 3 channels")
    if isinstance(batch, int) and batch != 1:
        raise mismatch(f"input batch is fixed at {batch}, expected 1 or free")
    if isinstance(height, int) and isinstance(width, int):
        if wanted is not None and tuple(wanted) != (width, height):
            raise mismatch(
                f"it takes only {width}x{height} images, not the requested {wanted[0]}x{wanted[1]}"
            )
        return (width, height)
    if wanted is not None:
        w, h = wanted
        if w % divisor or h % divisor:
            raise ValueError(f"input_size must be multiples of {divisor}, got {wanted}")
        return (int(w), int(h))
    return None


def mismatch(path: Path, family: str, why: str) -> AirsideError:
    """The error for a model whose inputs or outputs are not the family's format."""
    return AirsideError(
        f"{path.name} is not a {family} face detector model: {why}", code=MODEL_MISMATCH
    )


@dataclass(frozen=True)
class OutputSpec:
    """A model output as declared in the graph: dims are ints, or names/None when free."""

    name: str
    shape: tuple[int | str | None, ...]

    def dim(self, axis: int) -> int | None:
        """The size along ``axis`` when the graph fixes it, else None."""
        try:
            d = self.shape[axis]
        except IndexError:
            return None
        return d if isinstance(d, int) else None


@dataclass(frozen=True)
class Candidates:
    """Decoded faces on the canvas, before NMS."""

    boxes: np.ndarray  # (N, 4) x0, y0, x1, y1
    scores: np.ndarray  # (N,)
    landmarks: np.ndarray | None  # (N, 5, 2) x, y

    def take(self, index: np.ndarray) -> Candidates:
        return Candidates(
            self.boxes[index],
            self.scores[index],
            None if self.landmarks is None else self.landmarks[index],
        )

    @staticmethod
    def concat(parts: list[Candidates], with_landmarks: bool) -> Candidates:
        if not parts:
            return Candidates(
                np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)) if with_landmarks else None
            )
        lms = [p.landmarks for p in parts if p.landmarks is not None]
        return Candidates(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate(lms) if with_landmarks and lms else None,
        )


def upstream_ops(path: Path, outputs: list[str]) -> list[frozenset[str]]:
    """For each of ``outputs``, the operator types the graph runs to compute it.

    Tells apart exports of one architecture that differ in what they bake in, e.g. an
    UltraFace graph that decodes its boxes (has Exp) from one that outputs raw offsets.
    Empty sets when the file cannot be read as a graph.
    """
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # open_model has already loaded it; a failure here only loses a hint
        return [frozenset() for _ in outputs]
    producer = {name: node for node in graph.node for name in node.output}

    def ops_for(output: str) -> frozenset[str]:
        ops: set[str] = set()
        seen = {output}
        todo = deque([output])
        while todo:
            node = producer.get(todo.popleft())
            if node is None:
                continue
            ops.add(node.op_type)
            for name in node.input:
                if name and name not in seen:
                    seen.add(name)
                    todo.append(name)
        return frozenset(ops)

    return [ops_for(name) for name in outputs]


class OnnxFaceDetector(ABC):
    """A face detector run by ONNX Runtime; satisfies ``airside.vision.protocols.FaceDetector``.

    ``score_threshold``/``nms_iou``: None takes the family's default. A model with a fixed
    input size gets the image scaled to fit inside it (letterboxed at the top left); a model
    with a free input size gets the image scaled down to at most ``max_detect_side`` on its
    longer side and padded to a multiple of 32, or letterboxed into ``input_size`` (w, h)
    when that is given.
    """

    family: ClassVar[str]
    default_score_threshold: ClassVar[float]
    default_nms_iou: ClassVar[float]
    default_confident_score: ClassVar[float]
    bgr: ClassVar[bool] = False  # channel order of the model's input
    mean: ClassVar[tuple[float, float, float]] = (0.0, 0.0, 0.0)  # in the model's order
    std: ClassVar[float] = 1.0
    divisor: int = 32  # free input sizes are padded to a multiple of this (largest stride)
    top_k: ClassVar[int] = 5000  # candidates kept (best first) before NMS
    # Whether detections carry 5 landmarks (InsightFace order); set per model where an
    # export may leave them out (SCRFD).
    gives_landmarks: bool = True

    def __init__(
        self,
        model_path: Path | str,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
        *,
        max_detect_side: int = 640,
        input_size: tuple[int, int] | None = None,
        threads: int = 0,
        device: Device = "cpu",
    ) -> None:
        self.path = Path(model_path)
        self.model: OnnxModel = self._open(self.path, threads, device)
        self.name = f"{self.family}:{self.path.stem}"
        self.score_threshold = (
            self.default_score_threshold if score_threshold is None else score_threshold
        )
        self.nms_iou = self.default_nms_iou if nms_iou is None else nms_iou
        self.confident_score = self.default_confident_score
        self.max_detect_side = max_detect_side
        outputs = [OutputSpec(o.name, tuple(o.shape)) for o in self.model.session.get_outputs()]
        self._bind(outputs)
        self.fixed_size = self._input_size(input_size)

    @property
    def provider(self) -> str:
        return self.model.provider

    def _open(self, path: Path, threads: int, device: Device) -> OnnxModel:
        return open_model(path, threads=threads, device=device)

    def _mismatch(self, why: str) -> AirsideError:
        return mismatch(self.path, self.family, why)

    def _input_size(self, wanted: tuple[int, int] | None) -> tuple[int, int] | None:
        return input_canvas(self.model, wanted, self.divisor, self._mismatch)

    @abstractmethod
    def _bind(self, outputs: list[OutputSpec]) -> None:
        """Check the declared outputs are this family's (raise ``_mismatch`` if not)."""

    @abstractmethod
    def _decode(self, outputs: list[np.ndarray], width: int, height: int) -> Candidates:
        """Raw outputs → faces scoring at least ``score_threshold``, on a canvas of that size."""

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """The model's input blob (1, 3, H, W) float32 for ``image``, and where it went."""
        image = check_image(image)
        h, w = image.shape[:2]
        resized, canvas = plan_canvas(
            w, h, fixed=self.fixed_size, max_side=self.max_detect_side, divisor=self.divisor
        )
        box = letterbox(image, resized, canvas)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        blob = np.empty((1, 3, box.height, box.width), dtype=np.float32)
        blob[0] = -mean / np.float32(self.std)  # black padding, normalised
        chw = box.resized.transpose(2, 0, 1)
        inside = blob[0, :, : chw.shape[1], : chw.shape[2]]
        inside[...] = chw[::-1] if self.bgr else chw
        inside -= mean
        inside /= np.float32(self.std)
        return blob, box

    def _by_last_dim(self, outputs: list[np.ndarray], widths: tuple[int, ...]) -> list[int]:
        """Indices of the outputs whose last dims are ``widths``, one each, in that order."""
        have = [o.shape[-1] if o.ndim else 0 for o in outputs]
        if sorted(have) != sorted(widths):
            raise self._mismatch(
                f"outputs of shapes {[o.shape for o in outputs]}, expected last dims {widths}"
            )
        return [have.index(w) for w in widths]

    def detect(self, image: np.ndarray) -> list[Detection]:
        if 0 in check_image(image).shape[:2]:
            return []
        blob, box = self.prepare(image)
        outputs = [np.asarray(o, dtype=np.float64) for o in self.model.run(blob)]
        found = self._decode(outputs, box.width, box.height)
        if found.scores.size == 0:
            return []
        found = found.take(np.argsort(-found.scores, kind="stable")[: self.top_k])
        found = found.take(nms(found.boxes, found.scores, self.nms_iou))
        boxes = box.boxes_to_image(found.boxes)
        lms = None if found.landmarks is None else box.points_to_image(found.landmarks)
        return [
            Detection(
                box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                score=float(s),
                detector=self.name,
                landmarks=None if lms is None else lms[i].astype(np.float32),
            )
            for i, (b, s) in enumerate(zip(boxes, found.scores, strict=True))
        ]
