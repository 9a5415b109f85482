"""The single entry point that turns untrusted image input into an RGB uint8 array.

Everything an enrolment or verification request sends us (an uploaded file, a path on a share,
raw bytes off the wire) goes through :func:`load_image`.  The rules, and why:

* The bytes are read exactly once, so the SHA-256 we report is the digest of the very bytes we
  decoded (enrolment idempotency keys on it) and a file that changes under us cannot give us a
  hash of one version and pixels of another.
* The format comes from the content, never from the file name; a misleading extension is
  accepted but recorded in ``notes`` so an operator can see it.
* Only a fixed list of everyday photo formats is decoded.  Pillow can open many exotic formats
  (EPS would even start Ghostscript); none of them belong in a biometric pipeline.
* Size is checked before any pixel is decoded (``Image.open`` only parses the header), so a tiny
  file that declares 20000x20000 pixels costs nothing.  Pillow's own decompression-bomb
  warning/error is turned into the same error.  No Pillow global is changed.  ``max_pixels``
  is the decoding budget: at most ``max_pixels`` x 4 bytes of memory (160 MB at the default
  40 Mpx) and about a second of CPU, whatever the file's size on disk.
* ``max_side`` bounds what callers get back: a larger image is decoded at a reduced scale
  where the format allows it (JPEG's DCT scaling, via ``Image.draft``) and otherwise reduced
  by an integer factor (box filter) right after decoding, before it is converted, so that
  nothing downstream pays for pixels it does not need.
* Every failure is an :class:`ImageError` with a short machine ``reason`` and a message that
  names the input; nothing else escapes for bad input (a wrong argument *type* is a programming
  error and still raises ``TypeError``/``ValueError``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import threading
import warnings
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from airside.errors import AirsideError

__all__ = ["ACCEPTED_FORMATS", "REASONS", "ImageError", "LoadedImage", "load_image"]

#: Formats decoded at all.  Anything else Pillow recognises is rejected as "unsupported".
#: (JPEG includes MPO, the multi-picture JPEG some cameras write; Pillow reports it as "MPO".)
ACCEPTED_FORMATS: Final[tuple[str, ...]] = (
    "JPEG",
    "PNG",
    "WEBP",
    "GIF",
    "TIFF",
    "BMP",
    "PPM",
    "JPEG2000",
    "AVIF",
)

#: Every value ImageError.reason can take.
REASONS: Final[frozenset[str]] = frozenset(
    {
        "unreadable",  # missing path, directory, device/pipe, permission denied, I/O error
        "empty",  # zero bytes
        "too_large",  # too many pixels (or a file too big to be a sane photo of that size)
        "not_an_image",  # content is not any image format we know
        "unsupported",  # an image, but a format/mode/codec we do not decode
        "truncated",  # a known format whose data stops early
        "corrupt",  # a known format whose data is damaged in some other way
        "extension_mismatch",  # reserved: mismatches are currently only noted, never raised
    }
)

# Uncompressed 16-bit RGBA needs 8 bytes/pixel; anything much bigger than that for the allowed
# pixel count is not a photo, and reading it would only waste memory.
_MAX_BYTES_PER_PIXEL: Final = 8
_HEADER_SLACK_BYTES: Final = 16 * 1024 * 1024

_ALPHA_MODES: Final = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_HIGH_DEPTH_MODES: Final = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_SAME_FAMILY: Final = {"MPO": "JPEG"}
_WARNINGS_LOCK: Final = threading.Lock()

# Formats people actually upload that we cannot decode; named so the message is helpful.
_KNOWN_UNSUPPORTED: Final[tuple[tuple[bytes, int, str], ...]] = (
    (b"ftypheic", 4, "HEIC"),
    (b"ftypheix", 4, "HEIC"),
    (b"ftyphevc", 4, "HEIC"),
    (b"ftypmif1", 4, "HEIF"),
    (b"ftypmsf1", 4, "HEIF"),
    (b"%PDF-", 0, "PDF"),
    (b"<svg", 0, "SVG"),
)


class ImageError(AirsideError):
    """A bad image input: ``reason`` (one of REASONS) says what, ``str(e)`` names the input.

    An AirsideError (``code`` "image") so the service/CLI layers report it like other
    user-actionable errors.
    """

    code = "image"

    def __init__(self, reason: str, message: str, *, source: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.source = source

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the error picklable (e.g. across a process pool) despite the extra arguments.
        return (_rebuild_error, (self.reason, str(self), self.source))


def _rebuild_error(reason: str, message: str, source: str) -> ImageError:
    return ImageError(reason, message, source=source)


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image plus what downstream code needs to trust and audit it."""

    pixels: NDArray[np.uint8]  # [H, W, 3] RGB, C-contiguous, owned by the caller
    sha256: str  # hex digest of the original input bytes
    format: str  # format detected from content, as Pillow names it ("JPEG", "PNG", ...)
    source: str  # the path, or "<bytes>"
    notes: tuple[str, ...] = ()  # everything we changed or found odd on the way


def load_image(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = 40_000_000,
    name: str | None = None,
    max_side: int | None = None,
) -> LoadedImage:
    """Decode ``source`` (a path, or the image bytes themselves) into RGB uint8.

    ``name`` labels the input in messages and supplies the extension that is compared with the
    content (useful for uploaded bytes); it defaults to the path.  ``max_side``: the returned
    pixels are at most this many on their longer side (reduced, and noted, when the image is
    larger; None: full size).  Raises :class:`ImageError` for any bad input.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    if max_side is not None and (
        isinstance(max_side, bool) or not isinstance(max_side, int) or max_side <= 0
    ):
        raise ValueError(f"max_side must be a positive int or None, got {max_side!r}")
    max_bytes = max_pixels * _MAX_BYTES_PER_PIXEL + _HEADER_SLACK_BYTES

    if isinstance(source, (bytes, bytearray, memoryview)):
        src = "<bytes>"
        label = name or src
        data = bytes(source)
        if len(data) > max_bytes:
            raise _err("too_large", label, f"{len(data):,} bytes is too big for an image")
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        src = os.fsdecode(path)
        label = name or src
        data = _read_file(path, label, max_bytes)
    else:
        raise TypeError(f"source must be a path or bytes, not {type(source).__name__}")

    if not data:
        raise _err("empty", label, "file is empty (0 bytes)")

    digest = hashlib.sha256(data).hexdigest()
    fmt, pixels, notes = _decode(data, label, max_pixels, max_side)
    mismatch = _extension_note(name if name is not None else src, fmt)
    if mismatch:
        notes.insert(0, mismatch)
    return LoadedImage(
        pixels=pixels, sha256=digest, format=fmt, source=src, notes=tuple(dict.fromkeys(notes))
    )


# --------------------------------------------------------------------------------------------
# Reading


def _err(reason: str, label: str, detail: str) -> ImageError:
    return ImageError(reason, f"{label}: {detail}", source=label)


def _read_file(path: str | bytes, label: str, max_bytes: int) -> bytes:
    """Read a regular file once, refusing anything that could block or is absurdly large."""
    # O_NONBLOCK so that opening a FIFO cannot hang waiting for a writer; fstat on the open
    # descriptor (not the path) so the checks apply to exactly what we read.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise _err("unreadable", label, "no such file") from None
    except IsADirectoryError:
        raise _err("unreadable", label, "is a directory, not an image file") from None
    except PermissionError:
        raise _err("unreadable", label, "permission denied") from None
    except OSError as exc:
        raise _err("unreadable", label, f"cannot open ({exc.strerror or exc})") from None
    except ValueError as exc:  # e.g. embedded NUL byte in the path
        raise _err("unreadable", label, f"invalid path ({exc})") from None

    try:
        with os.fdopen(fd, "rb", closefd=True) as fh:
            st = os.fstat(fh.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise _err("unreadable", label, "is a directory, not an image file")
            if not stat.S_ISREG(st.st_mode):
                raise _err("unreadable", label, "is not a regular file (device, pipe or socket)")
            if st.st_size > max_bytes:
                raise _err("too_large", label, f"{st.st_size:,} bytes is too big for an image")
            data = fh.read(max_bytes + 1)  # bounded even if the file grows while we read
    except ImageError:
        raise
    except OSError as exc:
        raise _err("unreadable", label, f"read failed ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise _err("too_large", label, "file is too big for an image (it grew while reading)")
    return data


# --------------------------------------------------------------------------------------------
# Decoding


def _decode(
    data: bytes, label: str, max_pixels: int, max_side: int | None
) -> tuple[str, NDArray[np.uint8], list[str]]:
    """Open lazily, check size, decode the first frame (at a reduced scale when it is larger
    than ``max_side``), orient, reduce and convert it to RGB."""
    notes: list[str] = []
    # record=True keeps Pillow's warnings out of the caller's filters (a -W error run must not
    # change our behaviour) and lets us see the decompression-bomb warning.  The warnings state
    # is process-global before Python 3.14, so concurrent catch_warnings blocks could restore
    # each other's filters; the lock serialises ours.
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        im = _open(data, label)
        try:
            fmt = im.format or "unknown"
            _check_size(im.size, label, max_pixels)
            _check_bomb(caught, label, im.size)
            _note_frames(im, fmt, notes)
            declared = im.size
            if max_side is not None:
                _draft(im, max_side, notes)
            try:
                im.load()
            except Image.DecompressionBombError as exc:
                raise _err("too_large", label, f"image too large ({exc})") from None
            except MemoryError:
                raise _err("too_large", label, "not enough memory to decode") from None
            except Exception as exc:  # any decoder failure is bad input
                raise _classify_failure(exc, data, label, fmt) from None
            _check_size(im.size, label, max_pixels)
            _check_bomb(caught, label, im.size)
            oriented = _apply_exif_orientation(im, notes)
            try:
                if max_side is not None:
                    oriented = _reduce(oriented, max_side, declared, notes)
                pixels = _to_rgb(oriented, notes)
                if max_side is not None:
                    pixels = _reduce_rgb(pixels, max_side, declared, notes)
            except MemoryError:
                raise _err("too_large", label, "not enough memory to convert") from None
            except Exception as exc:
                raise _err(
                    "unsupported",
                    label,
                    f"cannot convert {fmt} mode {oriented.mode} to RGB ({exc})",
                ) from None
        finally:
            im.close()
    for w in caught:
        if not issubclass(w.category, Image.DecompressionBombWarning):
            notes.append(f"decoder warning: {w.message}")
    return fmt, pixels, notes


def _open(data: bytes, label: str) -> Image.Image:
    """Parse the header only, from the accepted formats; classify what we cannot open."""
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise _err("too_large", label, f"image too large ({exc})") from None
    except UnidentifiedImageError:
        pass
    except MemoryError:
        raise _err("too_large", label, "not enough memory to read the header") from None
    except Exception as exc:  # plugin errors while parsing a damaged header
        raise _classify_failure(exc, data, label, _sniff(data)) from None

    sniffed = _sniff(data)
    if sniffed in ACCEPTED_FORMATS and _looks_truncated(data, sniffed):
        raise _err("truncated", label, f"{sniffed} data ends before the image header is complete")
    if sniffed:
        raise _err("corrupt", label, f"starts like a {sniffed} file but its header is damaged")
    other = _identify_any(data)
    if other:
        raise _err("unsupported", label, f"{other} images are not accepted; use JPEG or PNG")
    raise _err("not_an_image", label, "content is not a recognised image format")


def _identify_any(data: bytes) -> str | None:
    """Name a format we refuse, for a helpful message; header parse only, never decodes."""
    for magic, offset, fmt_name in _KNOWN_UNSUPPORTED:
        if data[offset : offset + len(magic)] == magic:
            return fmt_name
    head = data[:4096].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    try:
        with Image.open(io.BytesIO(data)) as other:  # lazy: parses the header only
            return other.format or None
    except Exception:  # unknown is a fine answer
        return None


def _sniff(data: bytes) -> str:
    """Recognise our formats by magic number, to tell a damaged file from a non-image."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data[:2] == b"BM":
        return "BMP"
    if data[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or data[:4] == b"\xff\x4f\xff\x51":
        return "JPEG2000"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "AVIF"
    return ""


def _looks_truncated(data: bytes, fmt: str) -> bool:
    """True when a file of this format is missing its end marker (i.e. was cut short)."""
    tail = data.rstrip(b"\x00")
    if fmt in ("JPEG", "MPO", "JPEG2000"):  # JPEG EOI and JPEG 2000 EOC are both FFD9
        return not tail.endswith(b"\xff\xd9")
    if fmt == "PNG":
        return b"IEND" not in data[-16:]
    if fmt == "GIF":
        return not tail.endswith(b"\x3b")
    if fmt == "WEBP":
        declared = int.from_bytes(data[4:8], "little") + 8 if len(data) >= 8 else 1 << 62
        return len(data) < declared
    if fmt == "AVIF":
        return _bmff_truncated(data)
    return False


def _bmff_truncated(data: bytes) -> bool:
    """True when an ISO-BMFF (AVIF) file's top-level boxes run past the end of the data."""
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            return True
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size == 1:  # 64-bit size follows the type
            if pos + 16 > len(data):
                return True
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        elif size == 0:  # box runs to the end of the file
            return False
        if size < 8:
            return False  # malformed, not short: let the caller call it corrupt
        pos += size
    return pos > len(data)


def _classify_failure(exc: BaseException, data: bytes, label: str, fmt: str) -> ImageError:
    """Turn a Pillow failure into truncated / unsupported / corrupt with a readable detail."""
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "truncated" in lowered or isinstance(exc, EOFError) or _looks_truncated(data, fmt):
        return _err("truncated", label, f"{fmt or 'image'} data is truncated ({text})")
    if "not available" in lowered or "not supported" in lowered or "unsupported" in lowered:
        return _err("unsupported", label, f"cannot decode this {fmt or 'image'} ({text})")
    return _err("corrupt", label, f"{fmt or 'image'} data is damaged ({text})")


def _check_bomb(caught: list[warnings.WarningMessage], label: str, size: tuple[int, int]) -> None:
    """Honour Pillow's bomb warning too (it fires above Image.MAX_IMAGE_PIXELS)."""
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            width, height = size
            raise _err(
                "too_large",
                label,
                f"image is {width}x{height} ({width * height:,} pixels), "
                f"over Pillow's decompression-bomb limit ({w.message})",
            )


def _check_size(size: tuple[int, int], label: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise _err("corrupt", label, f"declares an empty size {width}x{height}")
    if width * height > max_pixels:
        raise _err(
            "too_large",
            label,
            f"image is {width}x{height} ({width * height:,} pixels), "
            f"over the limit of {max_pixels:,} pixels",
        )


def _note_frames(im: Image.Image, fmt: str, notes: list[str]) -> None:
    """Record that only frame 0 is used; Image.open already sits on it."""
    try:
        animated = bool(getattr(im, "is_animated", False))
    except Exception:  # a broken second frame does not spoil the first
        animated = False
    if animated:
        notes.append(f"multi-frame {fmt}: first frame used")
        with contextlib.suppress(Exception):  # load() reports a genuinely broken frame 0
            im.seek(0)


def _factor(size: tuple[int, int], max_side: int) -> int:
    """The smallest integer factor that brings ``size`` within ``max_side``."""
    return max(1, -(-max(size) // max_side))


def _draft(im: Image.Image, max_side: int, notes: list[str]) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale (DCT scaling: the full-size image never
    exists in memory) when it is at least twice ``max_side``; other formats ignore it."""
    k = _factor(im.size, max_side)
    if k < 2 or im.format not in ("JPEG", "MPO"):
        return
    w, h = im.size
    before = im.size
    try:
        im.draft(None, (max(1, w // k), max(1, h // k)))
    except Exception:  # a decoder that cannot draft decodes at full size
        return
    if im.size != before:
        notes.append(f"decoded at 1/{before[0] // im.size[0]} scale")


_REDUCIBLE_MODES: Final = frozenset({"RGB", "L"})


def _reduce(
    im: Image.Image, max_side: int, declared: tuple[int, int], notes: list[str]
) -> Image.Image:
    """Reduce a plain RGB or grey image to ``max_side`` before converting it (others are
    reduced after conversion, where averaging their values means averaging colours)."""
    k = _factor(im.size, max_side)
    if k < 2 or im.mode not in _REDUCIBLE_MODES:
        return im
    small = im.reduce(k)
    _note_reduced(declared, small.size, notes)
    return small


def _reduce_rgb(
    pixels: NDArray[np.uint8], max_side: int, declared: tuple[int, int], notes: list[str]
) -> NDArray[np.uint8]:
    h, w = pixels.shape[:2]
    k = _factor((w, h), max_side)
    if k < 2:
        return pixels
    small = np.ascontiguousarray(np.asarray(Image.fromarray(pixels).reduce(k), dtype=np.uint8))
    _note_reduced(declared, (small.shape[1], small.shape[0]), notes)
    return small


def _note_reduced(declared: tuple[int, int], size: tuple[int, int], notes: list[str]) -> None:
    notes.append(f"reduced from {declared[0]}x{declared[1]} to {size[0]}x{size[1]} for analysis")


def _apply_exif_orientation(im: Image.Image, notes: list[str]) -> Image.Image:
    """Rotate/flip per the EXIF Orientation tag so faces are upright; bad EXIF is ignored."""
    try:
        orientation = im.getexif().get(0x0112)
    except Exception:
        notes.append("EXIF unreadable; orientation not applied")
        return im
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        try:
            rotated = ImageOps.exif_transpose(im)
        except Exception:
            notes.append(f"EXIF orientation {orientation} could not be applied")
            return im
        if rotated is not None:
            notes.append("exif-rotated")
            return rotated
    return im


def _to_rgb(im: Image.Image, notes: list[str]) -> NDArray[np.uint8]:
    """Convert any decoded mode to an owned, C-contiguous [H, W, 3] uint8 array."""
    mode = im.mode
    if mode != "RGB":
        notes.append(f"converted from mode {mode}")
    if mode in _HIGH_DEPTH_MODES:
        grey = _high_depth_to_u8(im, notes)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        if int(np.asarray(rgba.getchannel("A")).min()) < 255:
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            rgba = Image.alpha_composite(white, rgba)
            notes.append("alpha composited on white")
        rgb = rgba.convert("RGB")
    elif mode == "RGB":
        rgb = im
    else:
        rgb = im.convert("RGB")
    out = np.array(rgb, dtype=np.uint8)  # a copy: never a view on Pillow's buffer
    if out.ndim != 3 or out.shape[2] != 3:
        raise ValueError(f"unexpected decoded shape {out.shape}")
    return np.ascontiguousarray(out)


def _high_depth_to_u8(im: Image.Image, notes: list[str]) -> NDArray[np.uint8]:
    """Scale 16/32-bit integer and float greyscale to 0..255 (scaled, never clipped)."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        return _scale_u16(arr.astype(np.uint32))
    if im.mode == "I":
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 65535:  # how Pillow hands over most 16-bit sources
            return _scale_u16(arr.astype(np.uint32))
        notes.append(f"32-bit values stretched from [{lo}, {hi}] to [0, 255]")
        return _stretch(arr.astype(np.float64), float(lo), float(hi))
    # "F": 32-bit float
    values = arr.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        notes.append("non-finite float pixels set to 0")
        values = np.where(finite, values, np.float32(0))
    flo, fhi = float(values.min()), float(values.max())
    if flo >= 0.0 and fhi <= 1.0:
        unit: NDArray[np.uint8] = np.rint(values * 255.0).astype(np.uint8)
        return unit
    notes.append(f"float values stretched from [{flo:g}, {fhi:g}] to [0, 255]")
    return _stretch(values, flo, fhi)


def _scale_u16(arr: NDArray[np.uint32]) -> NDArray[np.uint8]:
    # Rounded v * 255 / 65535: 65535 -> 255, 32768 -> 128, 0 -> 0.
    out: NDArray[np.uint8] = ((arr * 255 + 32767) // 65535).astype(np.uint8)
    return out


def _stretch(arr: NDArray[np.floating], lo: float, hi: float) -> NDArray[np.uint8]:
    if hi <= lo:
        return np.full(arr.shape, int(min(max(lo, 0.0), 255.0)), dtype=np.uint8)
    out: NDArray[np.uint8] = np.rint((arr - lo) * (255.0 / (hi - lo))).clip(0, 255).astype(np.uint8)
    return out


def _extension_note(label: str, fmt: str) -> str | None:
    """Describe a file extension that disagrees with the content (accepted, but worth noting)."""
    if label == "<bytes>":
        return None
    ext = os.path.splitext(label)[1].lower()
    if not ext:
        return None
    expected = Image.registered_extensions().get(ext)
    family = _SAME_FAMILY.get(fmt, fmt)
    if expected is not None and _SAME_FAMILY.get(expected, expected) == family:
        return None
    return f"extension {ext} but content is {fmt}"
