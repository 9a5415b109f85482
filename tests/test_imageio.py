"""Behavioural tests for airside.vision.imageio.load_image.

Every input is generated here from skimage's astronaut (RGB) and camera (grey) images, or
hand-built where a real encoder cannot produce the hostile case (a decompression bomb).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from skimage import data as skdata

from airside.errors import AirsideError
from airside.vision.imageio import ImageError, LoadedImage, load_image

# --------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return skdata.camera()


def _save(path: Path, im: Image.Image, fmt: str, **kwargs: object) -> Path:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    path.write_bytes(buf.getvalue())
    return path


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def _png(width: int, height: int, bit_depth: int, colour_type: int, rows: list[bytes]) -> bytes:
    """A valid PNG; ``rows`` holds raw scanlines (filter byte added here), cycled to ``height``."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    comp = zlib.compressobj(9)
    idat = bytearray()
    for y in range(height):
        idat += comp.compress(b"\x00" + rows[y % len(rows)])
    idat += comp.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", bytes(idat))
        + _png_chunk(b"IEND", b"")
    )


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _assert_rgb(img: LoadedImage, height: int, width: int) -> None:
    assert img.pixels.shape == (height, width, 3)
    assert img.pixels.dtype == np.uint8
    assert img.pixels.flags["C_CONTIGUOUS"]


# --------------------------------------------------------------------------------------------
# good inputs


def test_jpeg_round_trip_reports_sha256_of_file_bytes(
    tmp_path: Path, astronaut: np.ndarray
) -> None:
    path = _save(tmp_path / "a.jpg", Image.fromarray(astronaut), "JPEG", quality=95)
    img = load_image(path)
    _assert_rgb(img, 512, 512)
    assert img.format == "JPEG"
    assert img.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert img.source == str(path)
    assert img.notes == ()
    assert _mean_abs_diff(img.pixels, astronaut) < 3.0  # lossy, but the same picture


def test_grey_png_becomes_three_equal_channels(tmp_path: Path, camera: np.ndarray) -> None:
    path = _save(tmp_path / "g.png", Image.fromarray(camera), "PNG")
    img = load_image(path)
    _assert_rgb(img, 512, 512)
    assert img.format == "PNG"
    for channel in range(3):
        np.testing.assert_array_equal(img.pixels[:, :, channel], camera)
    assert "converted from mode L" in img.notes


def test_rgba_alpha_is_composited_on_white(tmp_path: Path, astronaut: np.ndarray) -> None:
    alpha = np.full(astronaut.shape[:2], 255, dtype=np.uint8)
    alpha[:, :256] = 0  # left half fully transparent
    alpha[:, 256:258] = 128  # a half-transparent stripe
    rgba = np.dstack([astronaut, alpha])
    path = _save(tmp_path / "a.png", Image.fromarray(rgba), "PNG")
    img = load_image(path)
    _assert_rgb(img, 512, 512)
    assert (img.pixels[:, :256] == 255).all()
    np.testing.assert_array_equal(img.pixels[:, 258:], astronaut[:, 258:])
    expected = (astronaut[:, 256:258].astype(float) * 128 + 255 * 127) / 255
    assert np.abs(img.pixels[:, 256:258] - expected).max() <= 1.0
    assert "alpha composited on white" in img.notes


def test_16bit_grey_png_is_scaled_not_clipped(tmp_path: Path, camera: np.ndarray) -> None:
    grey16 = camera.astype(np.uint16) * 257  # 0..255 -> 0..65535 exactly
    grey16[0, 0], grey16[0, 1], grey16[0, 2] = 65535, 32768, 0
    path = _save(tmp_path / "g16.png", Image.fromarray(grey16), "PNG")
    img = load_image(path)
    _assert_rgb(img, 512, 512)
    assert tuple(img.pixels[0, 0]) == (255, 255, 255)
    assert abs(int(img.pixels[0, 1, 0]) - 128) <= 1
    assert tuple(img.pixels[0, 2]) == (0, 0, 0)
    np.testing.assert_array_equal(img.pixels[1:, :, 0], camera[1:])
    assert any(n.startswith("converted from mode I;16") for n in img.notes)


def test_16bit_rgb_png_loads(tmp_path: Path, astronaut: np.ndarray) -> None:
    rgb16 = astronaut[:64, :64].astype(">u2") * 257
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png(64, 64, 16, 2, [row.tobytes() for row in rgb16]))
    img = load_image(path)
    _assert_rgb(img, 64, 64)
    np.testing.assert_array_equal(img.pixels, astronaut[:64, :64])


def test_palette_png_expands_to_its_colours(tmp_path: Path, astronaut: np.ndarray) -> None:
    pal = Image.fromarray(astronaut).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    path = _save(tmp_path / "p.png", pal, "PNG")
    img = load_image(path)
    np.testing.assert_array_equal(img.pixels, np.asarray(pal.convert("RGB")))
    assert "converted from mode P" in img.notes


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = _save(tmp_path / "c.jpg", Image.fromarray(astronaut).convert("CMYK"), "JPEG")
    img = load_image(path)
    _assert_rgb(img, 512, 512)
    assert img.format == "JPEG"
    assert "converted from mode CMYK" in img.notes
    assert _mean_abs_diff(img.pixels, astronaut) < 6.0


def test_webp_named_jpg_loads_and_mismatch_is_noted(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = _save(tmp_path / "really_webp.jpg", Image.fromarray(astronaut), "WEBP", quality=90)
    img = load_image(path)
    _assert_rgb(img, 512, 512)
    assert img.format == "WEBP"
    assert "extension .jpg but content is WEBP" in img.notes


def test_exif_orientation_6_is_applied(tmp_path: Path, astronaut: np.ndarray) -> None:
    stored = astronaut[:, :300]  # 512 high, 300 wide as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _save(
        tmp_path / "r.jpg", Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes()
    )
    img = load_image(path)
    _assert_rgb(img, 300, 512)
    assert "exif-rotated" in img.notes
    clockwise = _mean_abs_diff(img.pixels, np.rot90(stored, k=-1))
    assert clockwise < 3.0
    assert clockwise < _mean_abs_diff(img.pixels, np.rot90(stored, k=1)) / 5  # not the other way


def test_animated_gif_uses_first_frame(tmp_path: Path, astronaut: np.ndarray) -> None:
    first = Image.fromarray(astronaut[:128, :128])
    second = Image.fromarray(255 - astronaut[:128, :128])
    path = tmp_path / "anim.gif"
    first.save(path, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    img = load_image(path)
    _assert_rgb(img, 128, 128)
    assert img.format == "GIF"
    assert "multi-frame GIF: first frame used" in img.notes
    with Image.open(path) as reference:  # frame 0 as Pillow renders it
        expected = np.asarray(reference.convert("RGB"))
    np.testing.assert_array_equal(img.pixels, expected)


def test_float_tiff_in_unit_range_is_scaled(tmp_path: Path, camera: np.ndarray) -> None:
    unit = camera.astype(np.float32) / 255.0
    path = _save(tmp_path / "f.tif", Image.fromarray(unit), "TIFF")
    img = load_image(path)
    np.testing.assert_array_equal(img.pixels[:, :, 0], camera)
    assert "converted from mode F" in img.notes


def test_bytes_input_matches_path_input(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = _save(tmp_path / "a.jpg", Image.fromarray(astronaut), "JPEG")
    raw = path.read_bytes()
    from_bytes = load_image(raw, name="upload.jpg")
    from_path = load_image(path)
    assert from_bytes.source == "<bytes>"
    assert from_bytes.sha256 == from_path.sha256 == hashlib.sha256(raw).hexdigest()
    np.testing.assert_array_equal(from_bytes.pixels, from_path.pixels)
    assert from_bytes.notes == ()


def test_pixels_are_an_owned_writable_copy(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = _save(tmp_path / "a.png", Image.fromarray(astronaut), "PNG")
    img = load_image(path)
    img.pixels[0, 0] = 0  # must not raise: callers may normalise in place
    assert load_image(path).pixels[0, 0].tolist() == astronaut[0, 0].tolist()


def test_callers_warning_filters_do_not_change_the_result(
    tmp_path: Path, astronaut: np.ndarray
) -> None:
    path = _save(tmp_path / "a.png", Image.fromarray(astronaut), "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = load_image(path)
    _assert_rgb(img, 512, 512)


# --------------------------------------------------------------------------------------------
# bad inputs


def _reason(source: str | os.PathLike[str] | bytes, **kwargs: object) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_image(source, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_truncated_jpeg_is_reported_as_truncated(tmp_path: Path, astronaut: np.ndarray) -> None:
    whole = _save(tmp_path / "w.jpg", Image.fromarray(astronaut), "JPEG").read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    err = _reason(path)
    assert err.reason == "truncated"
    assert "half.jpg" in str(err)


def test_truncated_png_is_reported_as_truncated(tmp_path: Path, astronaut: np.ndarray) -> None:
    whole = _save(tmp_path / "w.png", Image.fromarray(astronaut), "PNG").read_bytes()
    assert _reason(whole[: len(whole) // 2]).reason == "truncated"


def test_truncated_files_never_load_partially(tmp_path: Path, astronaut: np.ndarray) -> None:
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    whole = _save(tmp_path / "w.jpg", Image.fromarray(astronaut), "JPEG").read_bytes()
    for cut in (3, 10, 100, 600, len(whole) // 3, len(whole) - 100):
        assert _reason(whole[:cut]).reason == "truncated", cut
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    err = _reason(path)
    assert err.reason == "empty"
    assert "empty.jpg" in str(err)


def test_text_named_png_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("passenger list\nnot a picture\n")
    err = _reason(path)
    assert err.reason == "not_an_image"
    assert "notes.png" in str(err)


def test_random_bytes_are_not_an_image() -> None:
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert _reason(noise).reason == "not_an_image"


def test_eps_is_refused_without_running_ghostscript() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    err = _reason(eps, name="face.eps")
    assert err.reason == "unsupported"
    assert "EPS" in str(err)


def test_missing_path(tmp_path: Path) -> None:
    err = _reason(tmp_path / "nope.jpg")
    assert err.reason == "unreadable"
    assert "nope.jpg" in str(err) and "no such file" in str(err)


def test_directory(tmp_path: Path) -> None:
    err = _reason(tmp_path)
    assert err.reason == "unreadable"
    assert "directory" in str(err)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    err = _reason(fifo)  # would block forever if we open()ed it normally
    assert err.reason == "unreadable"
    assert "regular file" in str(err)


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="root ignores file permissions"
)
def test_permission_denied(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = _save(tmp_path / "locked.png", Image.fromarray(astronaut), "PNG")
    path.chmod(0)
    try:
        err = _reason(path)
    finally:
        path.chmod(0o600)
    assert err.reason == "unreadable"
    assert "permission" in str(err)


def test_low_max_pixels_rejects_a_normal_image(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = _save(tmp_path / "a.png", Image.fromarray(astronaut), "PNG")
    err = _reason(path, max_pixels=512 * 512 - 1)
    assert err.reason == "too_large"
    assert "512x512" in str(err)


def test_bomb_is_rejected_before_any_pixel_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 8000x8000 (64 Mpx): under Pillow's own bomb limit, over ours (40 Mpx). Tiny on disk.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(8000, 8000, 1, 0, [bytes(1000)]))
    assert path.stat().st_size < 100_000

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    err = _reason(path)
    assert err.reason == "too_large"
    assert "8000x8000" in str(err)


def test_huge_bomb_beyond_pillows_limit_is_too_large(tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    path = tmp_path / "huge.png"
    path.write_bytes(_png(20000, 20000, 1, 0, [bytes(2500)]))
    assert _reason(path).reason == "too_large"
    assert before == Image.MAX_IMAGE_PIXELS  # no leaked change to Pillow's global


def test_pillow_bomb_warning_is_an_error_even_with_a_generous_limit(tmp_path: Path) -> None:
    # 10000x10000 = 100 Mpx: above Pillow's warning threshold (~89 Mpx), within max_pixels.
    path = tmp_path / "big.png"
    path.write_bytes(_png(10000, 10000, 1, 0, [bytes(1250)]))
    err = _reason(path, max_pixels=200_000_000)
    assert err.reason == "too_large"


def test_image_error_is_an_airside_error_and_pickles(tmp_path: Path) -> None:
    err = _reason(tmp_path / "gone.png")
    assert isinstance(err, AirsideError)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.reason, str(copy)) == (err.reason, str(err))


# --------------------------------------------------------------------------------------------
# max_side: what callers get back is bounded, whatever the photo's size


def test_the_single_colour_6300px_png_comes_back_reduced_to_max_side(tmp_path: Path) -> None:
    # The PNG of the report: 6300x6300 of one colour, ~120 KB on disk, under the 40 Mpx
    # limit. Decoded, then reduced at once, so nothing after decoding handles 120 MB.
    path = tmp_path / "blank.png"
    path.write_bytes(_png(6300, 6300, 8, 2, [bytes([120, 130, 140]) * 6300]))
    assert path.stat().st_size < 200_000

    img = load_image(path, max_side=4096)

    assert max(img.pixels.shape[:2]) <= 4096
    assert (img.pixels == np.array([120, 130, 140], np.uint8)).all()
    assert "reduced from 6300x6300 to 3150x3150 for analysis" in img.notes


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = _save(tmp_path / "a.jpg", Image.fromarray(astronaut), "JPEG", quality=90)

    img = load_image(path, max_side=128)

    assert img.pixels.shape == (128, 128, 3)
    assert "decoded at 1/4 scale" in img.notes  # the full-size image never existed


def test_a_palette_image_is_reduced_in_colours_not_indices(
    tmp_path: Path, astronaut: np.ndarray
) -> None:
    path = _save(tmp_path / "p.png", Image.fromarray(astronaut).quantize(64), "PNG")
    full = load_image(path).pixels

    img = load_image(path, max_side=256)

    assert img.pixels.shape == (256, 256, 3)
    expected = full.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    assert np.abs(img.pixels.astype(np.float64) - expected).max() <= 1.0


def test_an_image_within_max_side_is_untouched(tmp_path: Path, astronaut: np.ndarray) -> None:
    path = _save(tmp_path / "a.png", Image.fromarray(astronaut), "PNG")

    img = load_image(path, max_side=512)

    np.testing.assert_array_equal(img.pixels, astronaut)
    assert not any("reduced" in n for n in img.notes)


def test_max_side_keeps_the_bomb_check_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(8000, 8000, 1, 0, [bytes(1000)]))

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError) as e:
        load_image(path, max_side=4096)
    assert e.value.reason == "too_large"
