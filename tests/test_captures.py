"""Batch capture in threads gives exactly what one-at-a-time capture gives."""

from __future__ import annotations

import numpy as np
from PIL import Image
from tests.conftest import jpeg_bytes

from airside.services.captures import Capture, capture_and_embed_many, capture_many
from airside.vision.analyzer import FaceAnalyzer


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
