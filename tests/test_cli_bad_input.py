"""What the ``airside`` command line does with bad or unusual input.

A refusal is specified as: a non-zero exit, one clear line on stderr saying what is wrong with
which input (no traceback), and nothing half-written (no subject, template or gallery appears).
Unusual but valid images (WebP named .jpg, grey, RGBA, 16-bit, EXIF-rotated) must enrol.

Faces come from registry packages (scikit-image's astronaut, matplotlib's Grace Hopper); the
store is real SQLite under ``tmp_path``; the CLI runs in-process through Typer's CliRunner,
with the one real analyzer loaded once and shared (see test_cli.py).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from airside.cli.main import app
from airside.vision.analyzer import FaceAnalyzer

ENROL = ("enrol", "--gallery", "boarding", "--subject", "traveller", "--basis", "consent")


class Cli:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return self.runner.invoke(
            app, ["--data-dir", str(self.data_dir), *args], env=env, catch_exceptions=False
        )

    def json(self, *args: str) -> Any:
        res = self(*args, "--json")
        assert res.exit_code == 0, res.stderr
        return json.loads(res.stdout)

    def enrol(self, *images: Path, env: dict[str, str] | None = None) -> Any:
        return self(*ENROL, *(str(p) for p in images), env=env)


def stderr_line(res: Any) -> str:
    return " ".join(res.stderr.split())


def assert_refused(res: Any, *needles: str) -> None:
    """Non-zero exit with a message naming the problem, and no crash."""
    assert res.exit_code != 0, res.stdout
    assert isinstance(res.exception, SystemExit), res.exception  # a clean exit, not a crash
    text = stderr_line(res)
    assert text.startswith("error ("), text
    for needle in needles:
        assert needle.lower() in text.lower(), text


def assert_nothing_enrolled(cli: Cli) -> None:
    assert cli.json("subjects") == []
    assert [(g["name"], g["subjects"], g["templates"]) for g in cli.json("galleries")] == [
        ("boarding", 0, 0)
    ]


def assert_enrolled(res: Any, cli: Cli) -> None:
    assert res.exit_code == 0, res.stderr
    assert [(s["subject"], s["galleries"]) for s in cli.json("subjects")] == [
        ("traveller", {"boarding": 1})
    ]


def save(path: Path, img: Image.Image, fmt: str, **kw: Any) -> Path:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    path.write_bytes(buf.getvalue())
    return path


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module", autouse=True)
def _one_model_load(analyzer: FaceAnalyzer) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("airside.vision.factory.default_analyzer", lambda _settings: analyzer)
        for var in ("AIRSIDE_DATA_DIR", "AIRSIDE_MAX_IMAGE_PIXELS"):
            mp.delenv(var, raising=False)
        yield


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A fresh data directory with one empty gallery, 'boarding'."""
    c = Cli(tmp_path / "data")
    c.json("gallery", "create", "boarding", "--purpose", "seamless-boarding")
    return c


@pytest.fixture
def astro(astronaut: np.ndarray) -> Image.Image:
    return Image.fromarray(astronaut)


# --------------------------------------------------------------------------------------------
# files that are not (complete) images


def test_missing_file_is_refused_as_unreadable(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "passport.jpg"

    res = cli.enrol(missing)

    assert_refused(res, str(missing), "no such file")
    assert_nothing_enrolled(cli)


def test_refusal_with_json_is_also_machine_readable_on_stdout(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "passport.jpg"

    res = cli(*ENROL, str(missing), "--json")

    assert res.exit_code != 0
    body = json.loads(res.stdout)
    assert body["error"] == "enrolment_refused"
    (refusal,) = body["refused"]
    assert (refusal["source"], refusal["code"]) == (str(missing), "image_unreadable")


def test_text_file_named_jpg_is_refused_as_not_an_image(cli: Cli, tmp_path: Path) -> None:
    fake = tmp_path / "photo.jpg"
    fake.write_text("this is a boarding pass, not a photo\n")

    res = cli.enrol(fake)

    assert_refused(res, str(fake), "not a recognised image format")
    assert_nothing_enrolled(cli)


def test_truncated_jpeg_is_refused_as_truncated(
    cli: Cli, tmp_path: Path, astro: Image.Image
) -> None:
    whole = save(tmp_path / "whole.jpg", astro, "JPEG", quality=90).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole[: len(whole) // 2])

    res = cli.enrol(cut)

    assert_refused(res, str(cut), "truncated")
    assert_nothing_enrolled(cli)


def test_one_bad_photo_among_good_ones_enrols_none_of_them(
    cli: Cli, tmp_path: Path, astro: Image.Image
) -> None:
    good = save(tmp_path / "good.png", astro, "PNG")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")

    res = cli.enrol(good, bad)

    assert_refused(res, str(bad))
    assert_nothing_enrolled(cli)


def test_brackets_in_a_path_are_reported_literally(cli: Cli, tmp_path: Path) -> None:
    odd = tmp_path / "a[/]b[red].jpg"  # Rich markup, if it were not escaped

    res = cli.enrol(odd)

    assert_refused(res, "a[/]b[red].jpg", "no such file")
    assert_nothing_enrolled(cli)


# --------------------------------------------------------------------------------------------
# unusual but valid images: these enrol


def test_webp_content_named_jpg_is_enrolled_by_its_content(
    cli: Cli, tmp_path: Path, astro: Image.Image
) -> None:
    webp = save(tmp_path / "photo.jpg", astro, "WEBP", quality=90)

    assert_enrolled(cli.enrol(webp), cli)


def test_grey_png_is_enrolled(cli: Cli, tmp_path: Path, astro: Image.Image) -> None:
    grey = save(tmp_path / "grey.png", astro.convert("L"), "PNG")

    assert_enrolled(cli.enrol(grey), cli)


def test_rgba_png_with_transparent_band_is_enrolled(
    cli: Cli, tmp_path: Path, astro: Image.Image
) -> None:
    rgba = np.asarray(astro.convert("RGBA")).copy()
    rgba[:40, :, 3] = 0  # a transparent band above her head
    path = save(tmp_path / "rgba.png", Image.fromarray(rgba), "PNG")

    assert_enrolled(cli.enrol(path), cli)


def test_16_bit_grey_png_is_enrolled_and_matches_the_colour_original(
    cli: Cli, tmp_path: Path, astro: Image.Image
) -> None:
    # 16-bit samples are scaled to 8 bits (never clipped), so this is an ordinary grey photo of
    # good quality: it must enrol, and it must still be her (not a saturated white image).
    grey16 = np.asarray(astro.convert("L")).astype(np.uint16) * 257
    path = save(tmp_path / "grey16.png", Image.fromarray(grey16), "PNG")
    assert Image.open(path).mode == "I;16"
    colour = save(tmp_path / "colour.png", astro, "PNG")

    assert_enrolled(cli.enrol(path), cli)
    assert cli.json("verify", str(path), str(colour))["match"] is True


def test_exif_rotated_jpeg_is_turned_upright_and_enrolled(
    cli: Cli, tmp_path: Path, astro: Image.Image
) -> None:
    sideways = astro.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    tagged = save(tmp_path / "tagged.jpg", sideways, "JPEG", quality=90, exif=exif.tobytes())
    untagged = save(tmp_path / "untagged.jpg", sideways, "JPEG", quality=90)

    # Without the tag the face lies on its side: enrolment refuses it as not frontal
    # (YuNet finds it turned and small; dlib's HOG only through its fallback)...
    assert_refused(cli.enrol(untagged), "frontal")
    # ...so enrolling the tagged file shows the orientation was applied.
    assert_enrolled(cli.enrol(tagged), cli)


# --------------------------------------------------------------------------------------------
# images that are too big


def test_decompression_bomb_png_is_refused_as_too_large(cli: Cli, tmp_path: Path) -> None:
    # A 1-bit greyscale PNG declaring 14200 x 14200 (~200 megapixels) in ~25 kB.
    side = 14_200
    row = b"\x00" + bytes((side + 7) // 8)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    idat = zlib.compress(row * side, 9)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )
    assert bomb.stat().st_size < 100_000

    res = cli.enrol(bomb)

    assert_refused(res, str(bomb), "too large")
    assert_nothing_enrolled(cli)


def test_pixel_limit_can_be_lowered_from_the_environment(
    cli: Cli, tmp_path: Path, astro: Image.Image
) -> None:
    photo = save(tmp_path / "photo.png", astro, "PNG")  # 512 x 512 = 262,144 pixels

    res = cli.enrol(photo, env={"AIRSIDE_MAX_IMAGE_PIXELS": "100000"})

    assert_refused(res, str(photo), "over the limit of 100,000 pixels")
    assert_nothing_enrolled(cli)


def test_invalid_setting_in_the_environment_is_a_clear_error(cli: Cli) -> None:
    res = cli("galleries", env={"AIRSIDE_MAX_IMAGE_PIXELS": "lots"})

    assert_refused(res, "bad_config", "max_image_pixels")


def test_data_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "airside.db"
    not_a_dir.write_text("")

    res = Cli(not_a_dir)("galleries")

    assert_refused(res, str(not_a_dir), "not a directory")


# --------------------------------------------------------------------------------------------
# faces


def test_image_without_a_face_is_refused(cli: Cli, tmp_path: Path) -> None:
    from skimage import data

    chelsea = save(tmp_path / "chelsea.png", Image.fromarray(data.chelsea()), "PNG")

    res = cli.enrol(chelsea)

    assert_refused(res, str(chelsea), "no face")
    assert_nothing_enrolled(cli)


def test_image_with_several_faces_is_refused(
    cli: Cli, tmp_path: Path, two_faces: np.ndarray
) -> None:
    group = save(tmp_path / "group.png", Image.fromarray(two_faces), "PNG")

    res = cli.enrol(group)

    assert_refused(res, str(group), "2 faces found", "one person")
    assert_nothing_enrolled(cli)


# --------------------------------------------------------------------------------------------
# galleries and legal bases


def test_unknown_gallery_is_refused_and_not_created(
    cli: Cli, tmp_path: Path, astro: Image.Image
) -> None:
    photo = save(tmp_path / "photo.png", astro, "PNG")

    res = cli("enrol", "--gallery", "lounge", "--subject", "s", "--basis", "consent", str(photo))

    assert_refused(res, "no gallery named 'lounge'")
    assert_nothing_enrolled(cli)


def test_unknown_basis_kind_is_refused_with_the_accepted_kinds(
    cli: Cli, tmp_path: Path, astro: Image.Image
) -> None:
    photo = save(tmp_path / "photo.png", astro, "PNG")

    res = cli("enrol", "--gallery", "boarding", "--subject", "s", "--basis", "hearsay", str(photo))

    assert_refused(res, "hearsay", "consent", "public_task")
    assert_nothing_enrolled(cli)


def test_gallery_created_twice_is_refused_and_the_first_is_kept(cli: Cli) -> None:
    res = cli("gallery", "create", "boarding", "--purpose", "marketing")

    assert_refused(res, "'boarding' already exists")
    (g,) = cli.json("galleries")
    assert (g["name"], g["purpose"]) == ("boarding", "seamless-boarding")


def test_bad_input_never_breaks_the_audit_chain(cli: Cli, tmp_path: Path) -> None:
    fake = tmp_path / "photo.jpg"
    fake.write_text("not a photo")
    assert cli.enrol(fake).exit_code != 0
    assert cli.enrol(tmp_path / "missing.jpg").exit_code != 0

    report = cli.json("audit", "verify")

    assert report["ok"] is True, report["problems"]


def test_evidence_file_that_does_not_exist_is_refused(
    cli: Cli, tmp_path: Path, astro: Image.Image
) -> None:
    photo = save(tmp_path / "photo.png", astro, "PNG")
    evidence = tmp_path / "consent-form.pdf"

    res = cli(*ENROL, "--evidence", str(evidence), str(photo))

    assert_refused(res, str(evidence))
    assert_nothing_enrolled(cli)
