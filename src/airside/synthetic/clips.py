"""Synthetic videos with known ground truth, built from the faces registry packages ship.

The tests and ``make bench`` use it (no camera footage of real people is needed). The two
faces are the scikit-image astronaut (Eileen Collins) and matplotlib's Grace Hopper sample
photo; each :class:`Sprite` pastes one of them onto a plain, slightly textured
background and moves it along a path of way-points, so it can enter and leave the frame, turn
(mirror) and tilt (rotate a few degrees).  :func:`make_video` encodes the clip with PyAV and
returns, per frame, the box of every sprite (``None`` while it is off-screen).

Everything is deterministic (no random numbers without a fixed seed) and kept small: tests
should ask for a handful of frames at 160x120 or 320x240 unless they need more.

Example::

    truth = make_video(tmp_path / "clip.mp4", frames=20, size=(320, 240), sprites=[
        Sprite("a", face="astronaut", size=(60, 72), path=[(-40, 120), (360, 120)]),
        Sprite("h", face="hopper", size=(64, 64), path=[(160, 60)], turn=True),
    ])
    assert truth[0]["a"] is None          # still off the left edge
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import av
import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` in pixels, x1/y1 exclusive, clipped to the frame."""

FaceName = Literal["astronaut", "hopper"]

#: Face crops (x0, y0, x1, y1) in the original sample images: the whole head, a little margin.
FACE_CROPS: dict[str, Box] = {
    "astronaut": (175, 60, 270, 175),
    "hopper": (150, 110, 375, 345),
}

#: Codec used per container when the caller does not name one.
_DEFAULT_CODECS: dict[str, tuple[str, ...]] = {
    "mp4": ("libx264", "mpeg4"),
    "mkv": ("libx264", "mpeg4"),
    "ts": ("libx264", "mpeg2video"),
    "avi": ("mpeg4",),
    "mov": ("libx264", "mpeg4"),
}
_FORMATS = {"mp4": "mp4", "mkv": "matroska", "ts": "mpegts", "avi": "avi", "mov": "mov"}


@functools.cache
def face_image(name: FaceName) -> np.ndarray:
    """The RGB crop of one sample face (cached; treat as read-only)."""
    if name == "astronaut":
        from skimage import data

        src = np.asarray(data.astronaut())
    elif name == "hopper":
        import matplotlib.cbook as cbook

        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        src = np.asarray(Image.open(path).convert("RGB"))
    else:  # pragma: no cover - Literal guards this
        raise ValueError(f"unknown face {name!r}")
    x0, y0, x1, y1 = FACE_CROPS[name]
    crop = np.ascontiguousarray(src[y0:y1, x0:x1])
    crop.setflags(write=False)
    return crop


@dataclass(frozen=True)
class Sprite:
    """One face moving through the clip.

    ``path`` holds way-points for the sprite's *centre*, in pixels; they are spread evenly over
    the frames ``start``..``end`` (``end`` exclusive, default: the last frame) and joined by
    straight lines, so a way-point outside the frame makes the face enter or leave.  One
    way-point keeps it still.  ``turn`` mirrors the face (a head turning to the other side)
    from the middle of its life on; ``tilt_deg`` rocks it by up to that many degrees.
    """

    id: str
    face: FaceName = "astronaut"
    size: tuple[int, int] = (64, 78)
    path: Sequence[tuple[float, float]] = ((80.0, 60.0),)
    start: int = 0
    end: int | None = None
    turn: bool = False
    tilt_deg: float = 0.0

    def centre(self, i: int, frames: int) -> tuple[float, float] | None:
        end = frames if self.end is None else min(self.end, frames)
        if i < self.start or i >= end:
            return None
        pts = list(self.path)
        if len(pts) == 1 or end - self.start <= 1:
            return pts[0]
        t = (i - self.start) / (end - self.start - 1) * (len(pts) - 1)
        k = min(int(t), len(pts) - 2)
        f = t - k
        (xa, ya), (xb, yb) = pts[k], pts[k + 1]
        return xa + (xb - xa) * f, ya + (yb - ya) * f

    def pixels(self, i: int, frames: int) -> np.ndarray:
        img = Image.fromarray(face_image(self.face)).resize(self.size, Image.Resampling.BILINEAR)
        end = frames if self.end is None else min(self.end, frames)
        if self.turn and i >= (self.start + end) // 2:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.tilt_deg:
            angle = self.tilt_deg * math.sin(2 * math.pi * (i - self.start) / 12.0)
            img = img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(90, 110, 130))
        return np.asarray(img)


@dataclass
class Clip:
    """Rendered frames and their ground truth (what :func:`render` returns)."""

    images: list[np.ndarray] = field(default_factory=list)
    truth: list[dict[str, Box | None]] = field(default_factory=list)


def background(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A smooth gradient with mild fixed texture: cheap to encode, not flat."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    bg = np.empty((h, w, 3), dtype=np.float32)
    bg[..., 0] = 60 + 80 * xs / max(w - 1, 1)
    bg[..., 1] = 90 + 60 * ys / max(h - 1, 1)
    bg[..., 2] = 140 - 40 * xs / max(w - 1, 1)
    bg += rng.normal(0, 4, size=(h, w, 1))
    return np.clip(bg, 0, 255).astype(np.uint8)


def render(
    frames: int,
    size: tuple[int, int] = (640, 480),
    sprites: Sequence[Sprite] = (),
    *,
    seed: int = 0,
) -> Clip:
    """Draw ``frames`` RGB images of ``size`` (width, height) with the sprites pasted in.

    A frame counter is drawn as a dark bar in the top-left corner (bar length = index mod 32)
    so consecutive frames always differ, even without sprites.
    """
    w, h = size
    bg = background(size, seed)
    clip = Clip()
    for i in range(frames):
        img = bg.copy()
        img[2:6, 2 : 2 + 4 * (i % 32)] = 20
        boxes: dict[str, Box | None] = {}
        for sp in sprites:
            c = sp.centre(i, frames)
            if c is None:
                boxes[sp.id] = None
                continue
            sw, sh = sp.size
            x0, y0 = round(c[0] - sw / 2), round(c[1] - sh / 2)
            cx0, cy0 = max(x0, 0), max(y0, 0)
            cx1, cy1 = min(x0 + sw, w), min(y0 + sh, h)
            if cx1 <= cx0 or cy1 <= cy0:
                boxes[sp.id] = None
                continue
            px = sp.pixels(i, frames)
            img[cy0:cy1, cx0:cx1] = px[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
            boxes[sp.id] = (cx0, cy0, cx1, cy1)
        clip.images.append(img)
        clip.truth.append(boxes)
    return clip


def pick_codec(container: str, codec: str | None = None) -> str:
    """``codec`` if given, else the first encoder this PyAV build has for ``container``."""
    if codec is not None:
        return codec
    for name in _DEFAULT_CODECS.get(container, ("mpeg4",)):
        if name in av.codecs_available:
            return name
    return "mpeg4"


def encode(
    target: str | Path | BinaryIO,
    images: Sequence[np.ndarray],
    *,
    fps: int = 25,
    container: str = "mp4",
    codec: str | None = None,
    gop: int = 12,
    pts: Sequence[int] | None = None,
) -> str:
    """Encode RGB ``images`` (all one size) into ``target``; returns the codec used.

    ``container`` is a file extension (``mp4``, ``mkv``, ``avi``, ``ts``, ``mov``).  ``pts``
    overrides the frame timestamps (in units of 1/fps); by default frame i has pts i.
    """
    if not images:
        raise ValueError("no images to encode")
    codec = pick_codec(container, codec)
    h, w = images[0].shape[:2]
    fmt = _FORMATS.get(container, container)
    target_arg = str(target) if isinstance(target, Path) else target
    with av.open(target_arg, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        ctx = stream.codec_context
        assert isinstance(ctx, av.VideoCodecContext)
        ctx.gop_size = gop
        if codec == "libx264":
            stream.codec_context.options = {"preset": "ultrafast", "tune": "zerolatency"}
        else:
            stream.codec_context.bit_rate = 2_000_000
        for i, arr in enumerate(images):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            frame.pts = i if pts is None else pts[i]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return codec


def make_video(
    path: str | Path,
    frames: int,
    size: tuple[int, int] = (640, 480),
    fps: int = 25,
    sprites: Sequence[Sprite] = (),
    *,
    codec: str | None = None,
    gop: int = 12,
    seed: int = 0,
) -> list[dict[str, Box | None]]:
    """Write a clip to ``path`` (container from the extension) and return its ground truth:
    for each frame, sprite id -> box ``(x0, y0, x1, y1)`` clipped to the frame, or ``None``."""
    path = Path(path)
    clip = render(frames, size, sprites, seed=seed)
    encode(
        path, clip.images, fps=fps, container=path.suffix.lstrip(".").lower(), codec=codec, gop=gop
    )
    return clip.truth


def ts_bytes(
    frames: int,
    size: tuple[int, int] = (160, 120),
    fps: int = 25,
    sprites: Sequence[Sprite] = (),
    *,
    gop: int = 5,
    seed: int = 0,
) -> bytes:
    """An MPEG-TS clip in memory (what a live HTTP/UDP camera would send)."""
    clip = render(frames, size, sprites, seed=seed)
    buf = io.BytesIO()
    encode(buf, clip.images, fps=fps, container="ts", gop=gop)
    return buf.getvalue()


def make_image_folder(
    folder: str | Path,
    frames: int,
    size: tuple[int, int] = (160, 120),
    sprites: Sequence[Sprite] = (),
    *,
    ext: str = "png",
) -> list[dict[str, Box | None]]:
    """Write the clip as numbered images ``000000.png``... into ``folder``; returns the truth."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clip = render(frames, size, sprites)
    for i, img in enumerate(clip.images):
        Image.fromarray(img).save(folder / f"{i:06d}.{ext}")
    return clip.truth
