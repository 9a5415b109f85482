"""Quality is a 0-100 score with the reasons that lowered it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from airside.vision.analyzer import FaceAnalyzer
from airside.vision.quality import QualityReport, pose_from_landmarks


def quality_of(analyzer: FaceAnalyzer, img: Image.Image) -> QualityReport:
    arr = np.asarray(img.convert("RGB"))
    faces = analyzer.observe(arr)
    assert faces, "expected a detectable face"
    return analyzer.select(faces, "largest", arr.shape).quality


@pytest.fixture(scope="module")
def face(astronaut: np.ndarray) -> Image.Image:
    return Image.fromarray(astronaut)


def test_a_good_studio_photo_scores_high(analyzer: FaceAnalyzer, face: Image.Image) -> None:
    q = quality_of(analyzer, face)
    assert q.score >= 80 and q.reasons == []


def test_blur_lowers_the_score_and_says_so(analyzer: FaceAnalyzer, face: Image.Image) -> None:
    sharp = quality_of(analyzer, face)
    blurred = quality_of(analyzer, face.filter(ImageFilter.GaussianBlur(1.6)))
    assert blurred.factors["sharpness"] < sharp.factors["sharpness"] - 0.3
    assert blurred.score < sharp.score - 10  # one factor of five, in a geometric mean
    assert any("blur" in r for r in blurred.reasons)


def test_small_face_lowers_the_score_and_says_so(analyzer: FaceAnalyzer, face: Image.Image) -> None:
    small = quality_of(analyzer, face.resize((230, 230)))
    assert small.measurements["face_width_px"] < 60
    assert any("small" in r for r in small.reasons)


def test_dark_capture_is_reported_as_under_exposed(
    analyzer: FaceAnalyzer, face: Image.Image
) -> None:
    dark = quality_of(analyzer, ImageEnhance.Brightness(face).enhance(0.2))
    assert any("under-exposed" in r for r in dark.reasons)


def test_score_is_between_0_and_100(analyzer: FaceAnalyzer, face: Image.Image) -> None:
    for img in (face, face.filter(ImageFilter.GaussianBlur(6)), face.resize((200, 200))):
        faces = analyzer.observe(np.asarray(img))
        for f in faces:
            assert 0 <= f.quality.score <= 100


def test_pose_from_landmarks_reads_yaw_and_roll() -> None:
    frontal = np.array([[60, 40], [50, 40], [20, 40], [30, 40], [40, 60]], dtype=np.float32)
    yaw, roll, iod = pose_from_landmarks(frontal)
    assert yaw == pytest.approx(0.0) and roll == pytest.approx(0.0) and iod == pytest.approx(30)
    turned = frontal.copy()
    turned[4, 0] = 52  # nose shifted towards one eye
    assert abs(pose_from_landmarks(turned)[0]) > 0.3
    tilted = frontal.copy()
    tilted[0:2, 1] += 20
    assert abs(pose_from_landmarks(tilted)[1]) > 30
