"""Annotated output: boxes, track ids and names drawn on frames, faces redacted, H.264 written.

* :func:`draw` draws each track's box with ``#id`` and, for a matched person, the name (green
  for matched, amber otherwise).  It returns a new array; the input is never modified.
* :func:`redact` pixelates and then Gaussian-blurs boxes (each grown a little, so hair and jaw
  line go too).  :func:`annotate` combines both: with ``redact_unmatched`` every face that is not
  matched is blurred *before* anything is drawn.  Pixelating first means the blur cannot be
  undone by deconvolution: the detail is averaged away, not just spread out.
* :class:`H264Writer` encodes RGB frames with PyAV: libx264 (or libopenh264) when this build has
  it, else MPEG-4 Part 2 with a :class:`RuntimeWarning` (``cv2.VideoWriter`` cannot write
  H.264 at all).  Output is fragmented MP4 (``frag_keyframe+empty_moov+default_base_moof``:
  a fragment per key frame, one key frame a second) or Matroska, chosen by the file extension,
  so a process that dies mid-way leaves a file that plays up to its last complete fragment.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final

import av
import av.container
import av.video.stream
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from airside.private_files import create_private
from airside.video.closing import ClosesOnExit

__all__ = [
    "H264_ENCODERS",
    "MATCHED_COLOUR",
    "UNMATCHED_COLOUR",
    "H264Writer",
    "TrackDraw",
    "annotate",
    "draw",
    "grow_box",
    "pick_encoder",
    "redact",
]

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in pixels."""

MATCHED_COLOUR: Final = (46, 204, 64)
UNMATCHED_COLOUR: Final = (255, 176, 0)
#: H.264 encoders tried in order; the first that opens wins.
H264_ENCODERS: Final[tuple[str, ...]] = ("libx264", "libopenh264")
_FALLBACK_ENCODER: Final = "mpeg4"
_CONTAINERS: Final[dict[str, str]] = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mp4",
    ".mkv": "matroska",
}


@dataclass(frozen=True, slots=True)
class TrackDraw:
    """What to draw for one track. ``face_box`` (if known) is what redaction blurs; without it
    the track's ``box`` is taken to be the face."""

    box: Box
    track_id: int | str
    label: str | None = None
    matched: bool = False
    face_box: Box | None = None


# ------------------------------------------------------------------------------------ drawing


def _check_frame(frame: NDArray[np.uint8]) -> None:
    if not (
        isinstance(frame, np.ndarray)
        and frame.dtype == np.uint8
        and frame.ndim == 3
        and frame.shape[2] == 3
    ):
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {dtype} {shape}")


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def _clip_box(box: Box, width: int, height: int) -> tuple[int, int, int, int] | None:
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return None
    ix0, iy0 = max(0, math.floor(min(x0, x1))), max(0, math.floor(min(y0, y1)))
    ix1, iy1 = min(width, math.ceil(max(x0, x1))), min(height, math.ceil(max(y0, y1)))
    if ix1 <= ix0 or iy1 <= iy0:
        return None
    return ix0, iy0, ix1, iy1


def grow_box(box: Box, fraction: float) -> Box:
    """``box`` enlarged by ``fraction`` of its width/height on every side."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * fraction, (y1 - y0) * fraction
    return x0 - dx, y0 - dy, x1 + dx, y1 + dy


def draw(
    frame_rgb: NDArray[np.uint8],
    tracks: Sequence[TrackDraw],
    *,
    thickness: int | None = None,
    font_size: int | None = None,
) -> NDArray[np.uint8]:
    """A copy of ``frame_rgb`` with each track's box, ``#id`` and (if any) name drawn on it.

    Boxes partly outside the frame are clipped; boxes wholly outside are skipped.  Line width
    and text size scale with the frame unless given.
    """
    _check_frame(frame_rgb)
    h, w = frame_rgb.shape[:2]
    img = Image.fromarray(np.ascontiguousarray(frame_rgb))
    if not tracks:
        return np.asarray(img).copy()
    pen = thickness or max(2, round(min(w, h) / 240))
    font = _font(font_size or max(10, round(min(w, h) / 36)))
    canvas = ImageDraw.Draw(img)
    for t in tracks:
        clipped = _clip_box(t.box, w, h)
        if clipped is None:
            continue
        x0, y0, x1, y1 = clipped
        colour = MATCHED_COLOUR if t.matched else UNMATCHED_COLOUR
        canvas.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=pen)
        text = f"#{t.track_id}" + (f" {t.label}" if t.label else "")
        try:
            tb = canvas.textbbox((0, 0), text, font=font)
        except UnicodeEncodeError:  # pragma: no cover - bitmap font without FreeType
            text = text.encode("ascii", "replace").decode()
            tb = canvas.textbbox((0, 0), text, font=font)
        tw, th = tb[2] - tb[0] + 4, tb[3] - tb[1] + 4
        ty = y0 - th if y0 - th >= 0 else min(y0 + pen, h - th)
        tx = min(max(0, x0), max(0, w - tw))
        canvas.rectangle((tx, ty, tx + tw, ty + th), fill=colour)
        canvas.text((tx + 2 - tb[0], ty + 2 - tb[1]), text, fill=(0, 0, 0), font=font)
    return np.asarray(img).copy()


def redact(
    frame: NDArray[np.uint8],
    boxes: Iterable[Box],
    *,
    grow: float = 0.15,
    blocks: int = 8,
) -> NDArray[np.uint8]:
    """A copy of ``frame`` with every box (grown by ``grow`` on each side) made unrecognisable.

    Each region is pixelated to about ``blocks`` cells across its shorter side, then Gaussian
    blurred to hide the cell edges.  Pixels outside the (grown) boxes are untouched.
    """
    _check_frame(frame)
    if blocks < 1:
        raise ValueError("blocks must be at least 1")
    out = np.array(frame, copy=True)
    h, w = out.shape[:2]
    for box in boxes:
        clipped = _clip_box(grow_box(box, grow), w, h)
        if clipped is None:
            continue
        x0, y0, x1, y1 = clipped
        rw, rh = x1 - x0, y1 - y0
        cell = max(1, min(rw, rh) // blocks)
        region = Image.fromarray(out[y0:y1, x0:x1])
        small = region.resize((max(1, rw // cell), max(1, rh // cell)), Image.Resampling.BOX)
        coarse = small.resize((rw, rh), Image.Resampling.NEAREST)
        blurred = coarse.filter(ImageFilter.GaussianBlur(radius=max(1.0, cell / 2)))
        out[y0:y1, x0:x1] = np.asarray(blurred)
    return out


def annotate(
    frame: NDArray[np.uint8],
    tracks: Sequence[TrackDraw],
    *,
    redact_unmatched: bool = False,
    extra_faces: Iterable[Box] = (),
) -> NDArray[np.uint8]:
    """Redact (optionally) then draw.  With ``redact_unmatched``, the face of every unmatched
    track and every box in ``extra_faces`` (faces detected but not tracked) is blurred first."""
    if redact_unmatched:
        faces = [t.face_box or t.box for t in tracks if not t.matched]
        faces.extend(extra_faces)
        frame = redact(frame, faces)
    return draw(frame, tracks)


# ------------------------------------------------------------------------------------ writing


@functools.cache
def _encoder_opens(name: str) -> bool:
    if name not in av.codecs_available:
        return False
    try:
        ctx = av.CodecContext.create(name, "w")
        if not isinstance(ctx, av.VideoCodecContext):
            return False
        ctx.width, ctx.height = 64, 64
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.open()
    except (av.FFmpegError, ValueError, OSError):
        return False
    return True


def pick_encoder(preferred: str | None = None) -> str:
    """``preferred`` if given, else the first working H.264 encoder, else ``mpeg4``."""
    if preferred is not None:
        return preferred
    for name in H264_ENCODERS:
        if _encoder_opens(name):
            return name
    return _FALLBACK_ENCODER


def _letterbox(image: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """``image`` scaled to fit width x height, centred on black."""
    ih, iw = image.shape[:2]
    scale = min(width / iw, height / ih)
    nw, nh = max(1, round(iw * scale)), max(1, round(ih * scale))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    out = np.zeros((height, width, 3), dtype=np.uint8)
    ox, oy = (width - nw) // 2, (height - nh) // 2
    out[oy : oy + nh, ox : ox + nw] = resized
    return out


class H264Writer(ClosesOnExit):
    """Write RGB frames to ``path`` (``.mp4``/``.m4v``/``.mov`` as fragmented MP4, or ``.mkv``).

    ``fps`` is the nominal rate (0 < fps <= 1000; it sets the key-frame interval, one second,
    and the timestamps of frames written without ``pts``).  ``width``/``height`` are the
    frame size callers pass; odd sizes are padded by one edge-replicated row/column (4:2:0
    needs even sizes).  Frames of another size (a source that changed resolution) are
    letter-boxed into this size.  ``write(image, pts)`` takes the source's stream time in
    seconds; timestamps are written relative to the first frame's and forced strictly
    increasing.  Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        width: int,
        height: int,
        *,
        codec: str | None = None,
        crf: int = 23,
        preset: str = "veryfast",
    ) -> None:
        try:
            fps_f = float(fps)
        except (TypeError, ValueError):
            fps_f = math.nan
        if not (math.isfinite(fps_f) and 0 < fps_f <= 1000):
            raise ValueError(f"fps must be in (0, 1000], not {fps!r}")
        if int(width) < 1 or int(height) < 1:
            raise ValueError(f"bad frame size {width}x{height}")
        self.path = Path(path)
        fmt = _CONTAINERS.get(self.path.suffix.lower())
        if fmt is None:
            raise ValueError(
                f"unsupported output extension {self.path.suffix!r} "
                f"(use one of {', '.join(sorted(_CONTAINERS))})"
            )
        self.fps = fps_f
        self.width, self.height = int(width), int(height)
        self.codec = pick_encoder(codec)
        if self.codec == _FALLBACK_ENCODER and codec is None:
            warnings.warn(
                "no H.264 encoder in this PyAV/FFmpeg build; writing MPEG-4 Part 2 instead",
                RuntimeWarning,
                stacklevel=2,
            )
        self.frames_written = 0
        self._enc_w, self._enc_h = self.width + self.width % 2, self.height + self.height % 2
        # mpeg4 needs a time-base denominator below 2**16; H.264 takes the usual 90 kHz.
        self._tb = Fraction(1, 90_000) if self.codec in H264_ENCODERS else Fraction(1, 1000)
        self._first_pts: float | None = None
        # Strictly increasing at the coarsest container resolution (Matroska: 1 ms).
        self._min_step = max(1, round(Fraction(1, 1000) / self._tb))
        self._last_tick = -1
        # flush_packets: hand every packet to the OS at once, so a crash loses nothing muxed.
        opts = {"flush_packets": "1"}
        if fmt == "mp4":
            opts["movflags"] = "frag_keyframe+empty_moov+default_base_moof"
        # The video shows faces: FFmpeg would create the file with the umask's mode, so it
        # is created 0600 first (FFmpeg keeps an existing file's mode).
        create_private(self.path)
        self._container: av.container.OutputContainer | None = av.open(
            str(self.path), mode="w", format=fmt, options=opts
        )
        try:
            rate = Fraction(fps_f).limit_denominator(1001)
            stream = self._container.add_stream(self.codec, rate=rate)
            if not isinstance(stream, av.video.stream.VideoStream):
                raise ValueError(f"{self.codec!r} is not a video encoder")
            stream.width, stream.height = self._enc_w, self._enc_h
            stream.pix_fmt = "yuv420p"
            ctx = stream.codec_context
            ctx.time_base = self._tb
            ctx.gop_size = max(1, round(fps_f))
            if self.codec == "libx264":
                # No B-frames: fragmented MP4 has no edit list to hide their start delay, and
                # fewer frames wait inside the encoder when the process dies.
                ctx.options = {"preset": preset, "crf": str(crf), "bf": "0"}
            elif self.codec == "libopenh264":
                ctx.max_b_frames = 0
            elif self.codec == _FALLBACK_ENCODER:
                ctx.options = {"qscale": "3"}
                ctx.flags |= av.codec.context.Flags.qscale
            self._stream: av.video.stream.VideoStream = stream
        except BaseException:
            self._container.close()
            self._container = None
            raise

    @property
    def closed(self) -> bool:
        return self._container is None

    def write(self, image: NDArray[np.uint8], pts: float | None = None) -> None:
        """Encode one RGB frame at stream time ``pts`` (seconds; default: frame count / fps)."""
        if self._container is None:
            raise ValueError("write to a closed H264Writer")
        _check_frame(image)
        if image.shape[:2] != (self.height, self.width):
            image = _letterbox(image, self.width, self.height)
        if (self._enc_w, self._enc_h) != (self.width, self.height):
            image = np.pad(
                image,
                ((0, self._enc_h - self.height), (0, self._enc_w - self.width), (0, 0)),
                mode="edge",
            )
        if pts is None or not math.isfinite(pts):
            seconds = self.frames_written / self.fps
        else:
            if self._first_pts is None:
                self._first_pts = float(pts)
            seconds = float(pts) - self._first_pts
        tick = max(round(seconds / self._tb), self._last_tick + self._min_step)
        self._last_tick = tick
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        vf.pts = tick
        vf.time_base = self._tb
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        container, self._container = self._container, None
        if container is None:
            return
        try:
            for packet in self._stream.encode(None):
                container.mux(packet)
        finally:
            container.close()
        log.debug("wrote %d frames (%s) to %s", self.frames_written, self.codec, self.path)
