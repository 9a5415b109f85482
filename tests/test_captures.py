"""Batch capture in threads gives exactly what one-at-a-time capture gives; what the
analyzer is given is bounded, however large the photo."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
from PIL import Image
from tests.conftest import jpeg_bytes, png_bytes

from airside.config import Settings
from airside.services.captures import (
    MAX_ANALYSIS_SIDE,
    Capture,
    capture,
    capture_and_embed_many,
    capture_many,
)
from airside.vision.analyzer import FaceAnalyzer
from airside.vision.dlib_models import DlibCnnDetector, FallbackDetector
from airside.vision.factory import build_detector


def test_threaded_capture_matches_sequential(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    # dlib's detectors keep scratch state; shared between threads they mixed up results.
    images = []
    for i in range(8):
        base = Image.fromarray(astronaut if i % 2 else hopper)
        scale = 0.5 + 0.07 * i
        images.append(
            jpeg_bytes(np.asarray(base.resize((int(base.width * scale), int(base.height * scale)))))
        )
    one = capture_many(analyzer, images, max_pixels=10**8, threads=1)
    many = capture_many(analyzer, images, max_pixels=10**8, threads=4)
    assert all(isinstance(c, Capture) for c in one)
    for a, b in zip(one, many, strict=True):
        assert isinstance(a, Capture) and isinstance(b, Capture)
        assert a.sha256 == b.sha256
        assert a.face.detection.box == b.face.detection.box
        np.testing.assert_array_equal(a.face.landmarks, b.face.landmarks)


def test_threaded_embedding_matches_sequential(
    analyzer: FaceAnalyzer, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    images = [jpeg_bytes(astronaut, q) for q in (60, 70, 80, 90)]
    images += [jpeg_bytes(hopper, q) for q in (60, 70, 80, 90)]
    one = capture_and_embed_many(analyzer, images, max_pixels=10**8, threads=1)
    many = capture_and_embed_many(analyzer, images, max_pixels=10**8, threads=4)
    for (_, va), (_, vb) in zip(one, many, strict=True):
        assert va is not None and vb is not None
        np.testing.assert_allclose(va, vb, atol=1e-5)


def test_a_photo_larger_than_the_analysis_side_reaches_the_analyzer_reduced(
    analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    # The astronaut at twice her size, analysed with a 512 px bound: the face is found
    # where it is in the 512 px original, so the analyzer was given the reduced image.
    big = np.asarray(Image.fromarray(astronaut).resize((1024, 1024), Image.Resampling.LANCZOS))
    original = capture(analyzer, png_bytes(astronaut), max_pixels=10**8)

    reduced = capture(analyzer, png_bytes(big), max_pixels=10**8, max_side=512)

    assert isinstance(original, Capture) and isinstance(reduced, Capture)
    x0, y0, x1, y1 = reduced.face.detection.box
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
    assert np.allclose(reduced.face.detection.box, original.face.detection.box, atol=12)


def test_captures_are_analysed_at_most_4096_px_by_default() -> None:
    assert MAX_ANALYSIS_SIDE == 4096
    assert inspect.signature(capture).parameters["max_side"].default == MAX_ANALYSIS_SIDE


def test_the_fallback_detector_searches_no_more_than_a_640x480_photos_pixels(
    tmp_path: Path,
) -> None:
    # Its cost grows with pixels: a 6300x6300 blank image cost 1.6x a 4:3 photo's.
    detector = build_detector(Settings(data_dir=tmp_path, face_detector="dlib"))
    assert isinstance(detector, FallbackDetector)
    cnn = detector.fallback
    assert isinstance(cnn, DlibCnnDetector)

    h, w = cnn.working_size(6300, 6300)
    assert h * w <= 640 * 480 and abs(h - w) <= 1
    assert cnn.working_size(480, 640) == (480, 640)  # an ordinary photo: as before
    assert cnn.working_size(250, 250) == (250, 250)
    h, w = cnn.working_size(1080, 1920)
    assert w == 640 and h == 360
