"""Turning untrusted image inputs into assessed faces, with a reason for every refusal."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from airside.errors import AirsideError
from airside.vision.analyzer import FaceAnalyzer, FaceObservation, FacePolicy
from airside.vision.imageio import ImageError, load_image

ImageSource = str | os.PathLike[str] | bytes
T = TypeVar("T")
# The longest side of the image a face analyzer is given: larger photos are reduced right
# after decoding (imageio's ``max_side``). Faces are detected on a copy of at most 1280 px
# and cut into 150 px chips, so 4096 px keeps every face that can be found at full detail,
# while memory and time downstream no longer grow with the photo (a 40 Mpx photo would
# otherwise be carried through detection and alignment at 120 MB a copy).
MAX_ANALYSIS_SIDE = 4096


@dataclass(frozen=True)
class Capture:
    source: str
    sha256: str
    face: FaceObservation


@dataclass(frozen=True)
class Refusal:
    source: str
    code: str
    message: str
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "code": self.code,
            "message": self.message,
            "reasons": self.reasons,
        }


def source_name(src: ImageSource) -> str:
    return "<bytes>" if isinstance(src, bytes) else os.fspath(src)


def capture(
    analyzer: FaceAnalyzer,
    src: ImageSource,
    *,
    max_pixels: int,
    policy: FacePolicy = "single",
    quality_bar: float | None = None,
    max_side: int = MAX_ANALYSIS_SIDE,
) -> Capture | Refusal:
    name = source_name(src)
    try:
        img = load_image(src, max_pixels=max_pixels, max_side=max_side)
    except ImageError as e:
        return Refusal(name, f"image_{e.reason}", str(e))
    try:
        faces = analyzer.observe(img.pixels)
        face = analyzer.select(faces, policy, img.pixels.shape, source=name)
    except AirsideError as e:
        return Refusal(name, e.code, str(e))
    if quality_bar is not None and face.detection.fallback:
        reason = (
            "face not upright and frontal enough for enrolment (only the fallback detector "
            "found it); take a frontal photo"
        )
        return Refusal(name, "quality", f"{name}: {reason}", [reason])
    if quality_bar is not None and face.quality.score < quality_bar:
        reasons = face.quality.reasons or ["overall quality too low"]
        return Refusal(
            name,
            "quality",
            f"{name}: face quality {face.quality.score:.0f} is below the gallery's bar of "
            f"{quality_bar:.0f}: {'; '.join(reasons)}",
            reasons,
        )
    return Capture(name, img.sha256, face)


def capture_many(
    analyzer: FaceAnalyzer,
    sources: Sequence[ImageSource],
    *,
    max_pixels: int,
    policy: FacePolicy = "single",
    quality_bar: float | None = None,
    progress: Callable[[int], None] | None = None,
    threads: int = 1,
) -> list[Capture | Refusal]:
    """Captures in input order. With ``threads`` > 1 images are processed concurrently:
    dlib's detector and ONNX Runtime release the GIL, so threads use the other cores
    within one process (no second copy of the models)."""

    def one(src: ImageSource) -> Capture | Refusal:
        res = capture(analyzer, src, max_pixels=max_pixels, policy=policy, quality_bar=quality_bar)
        if progress:
            progress(1)
        return res

    return _map(one, sources, threads)


def capture_and_embed_many(
    analyzer: FaceAnalyzer,
    sources: Sequence[ImageSource],
    *,
    max_pixels: int,
    policy: FacePolicy = "single",
    quality_bar: float | None = None,
    threads: int = 1,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[Capture | Refusal, np.ndarray | None]]:
    """Like :func:`capture_many`, embedding each accepted face in the same worker, so that
    detection of one image overlaps the embedding of another."""

    def one(src: ImageSource) -> tuple[Capture | Refusal, np.ndarray | None]:
        res = capture(analyzer, src, max_pixels=max_pixels, policy=policy, quality_bar=quality_bar)
        vec = analyzer.embed([res.face])[0] if isinstance(res, Capture) else None
        if progress:
            progress(1)
        return res, vec

    return _map(one, sources, threads)


def _map(fn: Callable[[ImageSource], T], sources: Sequence[ImageSource], threads: int) -> list[T]:
    """``fn`` over ``sources`` in order, in ``threads`` threads when that helps."""
    if threads <= 1 or len(sources) <= 1:
        return [fn(src) for src in sources]
    with ThreadPoolExecutor(threads, thread_name_prefix="capture") as pool:
        return list(pool.map(fn, sources))


def embed_captures(
    analyzer: FaceAnalyzer, captures: Sequence[Capture], batch: int = 32
) -> np.ndarray:
    """Embeddings for the captures, computed in batches."""
    if not captures:
        return np.zeros((0, analyzer.contract.dim), dtype=np.float32)
    parts = [
        analyzer.embed([c.face for c in captures[i : i + batch]])
        for i in range(0, len(captures), batch)
    ]
    return np.concatenate(parts, axis=0)
