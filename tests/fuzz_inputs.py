"""A seeded generator of hostile image inputs for the fuzz tests (tests/test_fuzz_images.py).

Everything is made at run time, with Pillow, from the two real faces the suite uses
(scikit-image's astronaut, matplotlib's grace_hopper): nothing binary is committed. Each
input has a ``kind`` (what it is), the ``seed`` that reproduces it (``FuzzInputs(...).make(
kind, seed)``), a file name and a content type (which may lie), and an ``expect``:

* ``"face"``: a decodable photo of a face; it must enrol or match, or be refused for a face
  reason (no face found, several faces, quality...);
* ``"image"``: decodable, but not necessarily of a face (1x1, a tiny bomb within the limit);
  any clean refusal is fine, a decoding refusal is not;
* ``"bad"``: hostile or broken; it must be refused as a bad image (an ``image_*`` code);
* ``"any"``: damaged, but perhaps still decodable (bit flips, a cut tail, trailing garbage):
  any known outcome, as long as it is clean.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

PIL_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "TIFF": ".tif", "BMP": ".bmp"}
MIME = {
    "JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
    "TIFF": "image/tiff", "BMP": "image/bmp",
}  # fmt: skip
MAGIC = {
    "JPEG": b"\xff\xd8\xff\xe0", "PNG": b"\x89PNG\r\n\x1a\n", "WEBP": b"RIFF\x00\x10\x00\x00WEBP",
    "GIF": b"GIF89a", "TIFF": b"II*\x00", "BMP": b"BM",
}  # fmt: skip


@dataclass(frozen=True)
class FuzzInput:
    kind: str
    seed: int
    data: bytes
    name: str
    content_type: str
    expect: str  # "face", "image" or "bad"

    def label(self) -> str:
        return f"{self.kind} (seed {self.seed}, {len(self.data):,} bytes, {self.name})"


def _encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def png_declaring(width: int, height: int, *, mode: int = 0, idat: bytes | None = None) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (grey 8-bit unless ``mode`` is a
    PNG colour type), with a small IDAT (zeros) whatever the size declared."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def png_zero_bomb(side: int) -> bytes:
    """A real, complete grey PNG of ``side`` x ``side`` zeros: a few KB that inflate to
    side^2 bytes (a decompression bomb within the pixel limit)."""
    row = b"\x00" + b"\x00" * side
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    return png_declaring(side, side, idat=b"".join(parts))


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its frame header (SOF) patched to declare ``width`` x ``height``."""
    data = bytearray(jpeg)
    i = 2
    while i + 4 < len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        seglen = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5 : i + 7] = height.to_bytes(2, "big")
            data[i + 7 : i + 9] = width.to_bytes(2, "big")
            return bytes(data)
        i += 2 + seglen
    raise ValueError("no SOF segment")


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF whose screen and single frame declare ``width`` x ``height``, with a few bytes of
    LZW data."""
    head = (
        b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    )
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return head + frame + b"\x02\x02\x44\x01\x00\x3b"


def bmp_declaring(width: int, height: int, bpp: int = 24) -> bytes:
    """A BMP whose info header declares ``width`` x ``height``, with 64 bytes of pixels."""
    pixels = b"\x00" * 64
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bpp, 0, len(pixels), 2835, 2835, 0, 0)
    head = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return head + info + pixels


def tiff_declaring(width: int, height: int) -> bytes:
    """A little-endian TIFF declaring ``width`` x ``height`` grey pixels, with 16 bytes of data."""
    entries = [
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
        (262, 3, 1, 1), (273, 4, 1, 8 + 2 + 12 * 8 + 4), (277, 3, 1, 1), (278, 4, 1, height),
    ]  # fmt: skip
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<HHI", tag, typ, count)
        packed += struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        ifd += packed
    ifd += b"\x00\x00\x00\x00"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 16


def webp_declaring(width: int, height: int) -> bytes:
    """A VP8X WebP declaring ``width`` x ``height`` (canvas up to 16M per side), no frames."""
    vp8x = (
        bytes([0, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    )
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


class FuzzInputs:
    """The inputs of one run: ``faces`` are RGB uint8 arrays of real faces; ``seed`` fixes
    everything (input ``i`` is ``make(KINDS[i % len], seed + i)``)."""

    def __init__(self, faces: list[np.ndarray], seed: int = 18) -> None:
        # Reduced to <= 320 px on the longer side: the faces stay detectable, and each input
        # costs the analyzer less (the run makes thousands).
        self.faces = [self._small(f) for f in faces]
        self.seed = seed
        self._encoded: dict[tuple[int, str, int], bytes] = {}
        self._palettes: dict[tuple[int, int], Image.Image] = {}
        self._makers: dict[str, Callable[[random.Random], tuple[bytes, str, str, str]]] = {}
        self._register()
        self.kinds = tuple(self._makers)

    @staticmethod
    def _small(arr: np.ndarray) -> Image.Image:
        im = Image.fromarray(arr).convert("RGB")
        k = max(im.size) / 320
        if k > 1:
            im = im.resize((round(im.width / k), round(im.height / k)), Image.Resampling.BILINEAR)
        return im

    def face(self, rng: random.Random) -> Image.Image:
        return rng.choice(self.faces)

    def palette(self, rng: random.Random, colors: int = 256) -> Image.Image:
        """A face quantised to a palette (cached: quantising is the slow part of a GIF)."""
        return self._palette_of(rng.randrange(len(self.faces)), colors)

    def _palette_of(self, i: int, colors: int = 256) -> Image.Image:
        key = (i, colors)
        if key not in self._palettes:
            self._palettes[key] = self.faces[i].convert(
                "P", palette=Image.Palette.ADAPTIVE, colors=colors
            )
        return self._palettes[key]

    def encoded(self, rng: random.Random, fmt: str) -> bytes:
        """A face encoded in ``fmt`` (cached per face, format and JPEG quality)."""
        i = rng.randrange(len(self.faces))
        quality = rng.choice((50, 70, 85, 95)) if fmt == "JPEG" else 0
        key = (i, fmt, quality)
        if key not in self._encoded:
            im = self.faces[i]
            if fmt == "GIF":
                self._encoded[key] = _encode(self._palette_of(i), fmt)
            elif fmt == "JPEG":
                self._encoded[key] = _encode(im, fmt, quality=quality)
            else:
                self._encoded[key] = _encode(im, fmt)
        return self._encoded[key]

    # -- the kinds ------------------------------------------------------------------------

    def _register(self) -> None:
        m = self._makers
        for fmt in PIL_FORMATS:
            ext, mime = EXT[fmt], MIME[fmt]
            m[f"valid_{fmt.lower()}"] = lambda r, f=fmt, e=ext, t=mime: (
                self.encoded(r, f),
                e,
                t,
                "face",
            )
            m[f"truncated_{fmt.lower()}"] = lambda r, f=fmt, e=ext, t=mime: (
                self._truncate(r, self.encoded(r, f)),
                e,
                t,
                "any",
            )
            m[f"bitflip_{fmt.lower()}"] = lambda r, f=fmt, e=ext, t=mime: (
                self._bitflip(r, self.encoded(r, f)),
                e,
                t,
                "any",
            )
            m[f"header_garbage_{fmt.lower()}"] = lambda r, f=fmt, e=ext, t=mime: (
                MAGIC[f] + r.randbytes(r.randint(0, 4096)),
                e,
                t,
                "bad",
            )
            m[f"one_by_one_{fmt.lower()}"] = lambda r, f=fmt, e=ext, t=mime: (
                self._one_by_one(r, f),
                e,
                t,
                "image",
            )
        m["wrong_extension"] = self._wrong_extension
        m["bomb_png_header"] = lambda r: (
            png_declaring(100_000, 100_000),
            ".png",
            "image/png",
            "bad",
        )
        m["bomb_png_header_rgba"] = lambda r: (
            png_declaring(r.randint(7000, 60_000), r.randint(7000, 60_000), mode=6),
            ".png", "image/png", "bad")  # fmt: skip
        m["bomb_png_inflating"] = lambda r: (
            png_zero_bomb(r.choice((1500, 2000, 3000))),
            ".png",
            "image/png",
            "image",
        )
        m["bomb_jpeg_header"] = lambda r: (
            jpeg_with_size(self.encoded(r, "JPEG"), 65_535, 65_535),
            ".jpg",
            "image/jpeg",
            "bad",
        )
        m["bomb_jpeg_within_limit"] = lambda r: (
            jpeg_with_size(self.encoded(r, "JPEG"), r.choice((6000, 8000)), 4000),
            ".jpg", "image/jpeg", "any")  # fmt: skip
        m["bomb_gif_header"] = lambda r: (gif_declaring(65_535, 65_535), ".gif", "image/gif", "bad")
        m["bomb_bmp_header"] = lambda r: (
            bmp_declaring(r.choice((50_000, -50_000, 2**31 - 1)), 50_000), ".bmp", "image/bmp",
            "bad")  # fmt: skip
        m["bomb_tiff_header"] = lambda r: (
            tiff_declaring(100_000, 100_000),
            ".tif",
            "image/tiff",
            "bad",
        )
        m["bomb_webp_header"] = lambda r: (
            webp_declaring(16_000_000, 16_000_000),
            ".webp",
            "image/webp",
            "bad",
        )
        m["zero_dimension"] = self._zero_dimension
        m["i16_png"] = lambda r: (self._i16(r, "PNG"), ".png", "image/png", "face")
        m["i16_tiff"] = lambda r: (self._i16(r, "TIFF"), ".tif", "image/tiff", "face")
        m["cmyk_jpeg"] = lambda r: (
            _encode(self.face(r).convert("CMYK"), "JPEG", quality=90), ".jpg", "image/jpeg",
            "face")  # fmt: skip
        m["palette_png"] = lambda r: (
            _encode(self.palette(r), "PNG"),
            ".png", "image/png", "face")  # fmt: skip
        m["palette_transparent"] = self._palette_transparent
        m["la_png"] = lambda r: (self._alpha(r, "LA"), ".png", "image/png", "face")
        m["rgba_png"] = lambda r: (self._alpha(r, "RGBA"), ".png", "image/png", "face")
        m["rgba_webp"] = lambda r: (self._alpha(r, "RGBA", "WEBP"), ".webp", "image/webp", "face")
        m["animated_gif"] = lambda r: (self._animated(r, "GIF"), ".gif", "image/gif", "face")
        m["animated_webp"] = lambda r: (self._animated(r, "WEBP"), ".webp", "image/webp", "face")
        m["exif_orientation"] = self._exif
        texts = (b"hello, world\n", "naïve café\n".encode(), b"id,subject\n1,PNR-1\n")
        m["text_file"] = lambda r: (
            r.choice(texts) * r.randint(1, 200), r.choice((".jpg", ".txt", ".png")),
            "text/plain", "bad")  # fmt: skip
        m["markup"] = lambda r: (
            r.choice((b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"%PDF-1.7\n%\xe2\xe3\n",
                      b"<?xml version='1.0'?><svg/>", b"<html><body>hi</body></html>",
                      b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00")),
            ".jpg", "image/jpeg", "bad")  # fmt: skip
        m["empty"] = lambda r: (b"", r.choice((".jpg", ".png", "")), "image/jpeg", "bad")
        m["random_bytes"] = lambda r: (
            r.randbytes(r.randint(1, 65_536)), r.choice((".jpg", ".bin", ".png")),
            r.choice(("image/jpeg", "application/octet-stream")), "bad")  # fmt: skip
        m["zeros_long"] = lambda r: (
            b"\x00" * r.choice((1 << 20, 4 << 20, 8 << 20)),
            ".jpg",
            "image/jpeg",
            "bad",
        )
        m["valid_then_garbage"] = lambda r: (
            self.encoded(r, r.choice(PIL_FORMATS)) + r.randbytes(r.randint(1, 8192)),
            ".img", "image/jpeg", "any")  # fmt: skip
        m["other_pillow_format"] = self._other_format

    @staticmethod
    def _truncate(r: random.Random, data: bytes) -> bytes:
        cut = r.choice(
            (r.randint(1, 64), r.randint(1, len(data) - 1), len(data) - r.randint(1, 64))
        )
        return data[: max(1, min(cut, len(data) - 1))]

    @staticmethod
    def _bitflip(r: random.Random, data: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(r.choice((1, 2, 8, 32, 256))):
            # mostly in the headers, where a flip changes what the decoder believes
            pos = r.randrange(min(len(out), 512)) if r.random() < 0.6 else r.randrange(len(out))
            out[pos] ^= 1 << r.randrange(8)
        return bytes(out)

    def _one_by_one(self, r: random.Random, fmt: str) -> bytes:
        im = Image.new("RGB", (1, 1), tuple(r.randrange(256) for _ in range(3)))
        return _encode(im.convert("P") if fmt == "GIF" else im, fmt)

    def _wrong_extension(self, r: random.Random) -> tuple[bytes, str, str, str]:
        fmt = r.choice(PIL_FORMATS)
        other = r.choice([f for f in PIL_FORMATS if f != fmt])
        ext = r.choice((EXT[other], ".txt", ".exe", ".jpeg.png", ""))
        return self.encoded(r, fmt), ext, r.choice((MIME[other], "text/plain")), "face"

    def _zero_dimension(self, r: random.Random) -> tuple[bytes, str, str, str]:
        w, h = r.choice(((0, 0), (0, 100), (100, 0)))
        which = r.randrange(5)
        if which == 0:
            return png_declaring(w, h), ".png", "image/png", "bad"
        if which == 1:
            return gif_declaring(w, h), ".gif", "image/gif", "bad"
        if which == 2:
            return bmp_declaring(w, h), ".bmp", "image/bmp", "bad"
        if which == 3:
            return tiff_declaring(w, h), ".tif", "image/tiff", "bad"
        return jpeg_with_size(self.encoded(r, "JPEG"), w, h), ".jpg", "image/jpeg", "bad"

    def _i16(self, r: random.Random, fmt: str) -> bytes:
        grey = np.asarray(self.face(r).convert("L"), dtype=np.uint16) * 257
        return _encode(Image.fromarray(grey.astype(np.uint16)), fmt)

    def _palette_transparent(self, r: random.Random) -> tuple[bytes, str, str, str]:
        im = self.palette(r, r.choice((16, 256)))
        fmt = r.choice(("PNG", "GIF"))
        return _encode(im, fmt, transparency=r.randrange(16)), EXT[fmt], MIME[fmt], "face"

    def _alpha(self, r: random.Random, mode: str, fmt: str = "PNG") -> bytes:
        im = self.face(r).convert(mode)
        alpha = np.full((im.height, im.width), 255, dtype=np.uint8)
        if r.random() < 0.5:  # a transparent border, or a random speckle
            b = r.randint(1, 20)
            alpha[:b], alpha[-b:], alpha[:, :b], alpha[:, -b:] = 0, 0, 0, 0
        else:
            rs = np.random.default_rng(r.randrange(1 << 32))
            alpha[rs.random(alpha.shape) < 0.01] = rs.integers(0, 256)
        im.putalpha(Image.fromarray(alpha))
        return _encode(im, fmt)

    def _animated(self, r: random.Random, fmt: str) -> bytes:
        first = self.face(r)
        frames = [first] + [
            Image.new("RGB", first.size, tuple(r.randrange(256) for _ in range(3)))
            for _ in range(r.randint(1, 5))
        ]
        if r.random() < 0.3:  # the face not first: only frame 0 is used, so no face
            frames.reverse()
        if fmt == "GIF":
            frames = [f.convert("P", palette=Image.Palette.WEB) for f in frames]
        return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100,
                       loop=0)  # fmt: skip

    def _exif(self, r: random.Random) -> tuple[bytes, str, str, str]:
        orientation = r.randint(1, 8)
        im = self.face(r)
        # store the face as a camera would, so that honouring the tag brings it upright
        inverse = {
            2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
            4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
            6: [Image.Transpose.ROTATE_90], 7: [Image.Transpose.TRANSVERSE],
            8: [Image.Transpose.ROTATE_270],
        }.get(orientation, [])  # fmt: skip
        for t in inverse:
            im = im.transpose(t)
        exif = Image.Exif()
        exif[0x0112] = orientation
        fmt = r.choice(("JPEG", "PNG", "WEBP", "TIFF"))
        return _encode(im, fmt, exif=exif.tobytes()), EXT[fmt], MIME[fmt], "face"

    def _other_format(self, r: random.Random) -> tuple[bytes, str, str, str]:
        fmt = r.choice(("ICO", "TGA", "PCX", "EPS", "SGI", "DDS"))
        im = self.face(r)
        if fmt == "ICO":
            im = im.resize((64, 64))
        try:
            data = _encode(im, fmt)
        except (OSError, KeyError, ValueError):
            data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
        return data, ".jpg", "image/jpeg", "bad"

    # -- the run --------------------------------------------------------------------------

    def make(self, kind: str, seed: int) -> FuzzInput:
        rng = random.Random(f"{kind}:{seed}")
        data, ext, content_type, expect = self._makers[kind](rng)
        return FuzzInput(kind, seed, data, f"fuzz-{seed}{ext}", content_type, expect)

    def __call__(self, n: int) -> Iterator[FuzzInput]:
        for i in range(n):
            yield self.make(self.kinds[i % len(self.kinds)], self.seed + i)
