"""ArcFace alignment must put the landmarks where the recognition nets were trained to see them."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import SimilarityTransform

from airside.errors import AirsideError
from airside.vision.face_align import (
    ARCFACE_TEMPLATE_112,
    ArcFaceAligner,
    DlibEyeLandmarks,
    apply_affine,
    arcface_points_from_dlib,
    arcface_template,
    estimate_similarity,
)
from airside.vision.protocols import Detection


def similarity_matrix(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def moved_template(size: int, angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    """Landmarks of a face that is the template rotated, scaled and shifted in a photo."""
    return apply_affine(similarity_matrix(angle, scale, shift), arcface_template(size))


def dotted_image(points: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A black image with a bright Gaussian dot centred on each point (sub-pixel exact)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    img = np.zeros(shape, dtype=np.float64)
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    grey = np.clip(img * 255, 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def dot_centres(chip: np.ndarray, near: np.ndarray, radius: int = 8) -> np.ndarray:
    """Intensity centroid of the dot around each expected point, in a window centred on
    that dot's brightest pixel (so a misplaced dot is measured where it really is)."""
    grey = chip[:, :, 0].astype(np.float64)
    out = []
    for x, y in near:
        x0, y0 = round(x) - 2 * radius, round(y) - 2 * radius
        region = grey[
            max(y0, 0) : round(y) + 2 * radius + 1, max(x0, 0) : round(x) + 2 * radius + 1
        ]
        py, px = np.unravel_index(int(region.argmax()), region.shape)
        cy, cx = py + max(y0, 0), px + max(x0, 0)
        win = grey[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
        wy, wx = np.mgrid[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
        out.append([(win * wx).sum() / win.sum(), (win * wy).sum() / win.sum()])
    return np.array(out)


def test_the_estimated_transform_maps_moved_landmarks_onto_the_template() -> None:
    landmarks = moved_template(112, angle=0.41, scale=2.3, shift=(310.0, 145.0))
    m = estimate_similarity(landmarks, arcface_template(112))
    assert np.abs(apply_affine(m, landmarks) - arcface_template(112)).max() < 1e-3


def test_the_least_squares_fit_agrees_with_scikit_image_on_noisy_landmarks() -> None:
    rng = np.random.default_rng(7)
    landmarks = moved_template(112, angle=-0.3, scale=1.4, shift=(50.0, 60.0))
    landmarks += rng.normal(0, 2.0, landmarks.shape)
    ours = estimate_similarity(landmarks, ARCFACE_TEMPLATE_112)
    theirs = SimilarityTransform.from_estimate(landmarks, ARCFACE_TEMPLATE_112).params[:2]
    assert np.abs(ours - theirs).max() < 1e-9


@pytest.mark.parametrize("size", [112, 224])
def test_dots_at_the_landmarks_land_on_the_template_in_the_chip(size: int) -> None:
    landmarks = moved_template(size, angle=0.35, scale=180 / size, shift=(71.3, 40.6))
    image = dotted_image(landmarks, (320, 300), sigma=2.5)
    det = Detection(box=(60, 40, 260, 280), score=0.9, detector="test", landmarks=landmarks)
    aligner = ArcFaceAligner(size)
    chip = aligner.views(image, det, aligner.landmarks(image, det))[0]
    assert chip.shape == (size, size, 3) and chip.dtype == np.uint8
    found = dot_centres(chip, arcface_template(size))
    # Well inside a pixel: mixing OpenCV's and PIL's pixel-centre conventions shifts the
    # dots by about a third of a pixel, which this must catch.
    assert np.abs(found - arcface_template(size)).max() < 0.2


def test_mirror_adds_the_flipped_chip_as_a_second_view() -> None:
    landmarks = moved_template(112, angle=0.1, scale=1.5, shift=(30.0, 20.0))
    image = dotted_image(landmarks, (240, 240), sigma=3.0)
    det = Detection(box=(30, 20, 200, 220), score=0.9, detector="test", landmarks=landmarks)
    views = ArcFaceAligner(mirror=True).views(image, det, landmarks)
    assert views.shape == (2, 112, 112, 3)
    assert np.array_equal(views[1], views[0][:, ::-1])


def test_preprocessing_names_size_and_views() -> None:
    assert ArcFaceAligner().preprocessing != ArcFaceAligner(mirror=True).preprocessing
    assert ArcFaceAligner(112).preprocessing != ArcFaceAligner(128).preprocessing


def test_a_detection_without_landmarks_is_refused_without_a_fallback() -> None:
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    det = Detection(box=(10, 10, 90, 90), score=0.9, detector="dlib-hog")
    with pytest.raises(AirsideError) as err:
        ArcFaceAligner().landmarks(image, det)
    assert err.value.code == "no_landmarks"


def test_dlib_points_become_eye_centres_in_arcface_order() -> None:
    # dlib: 0/1 corners of the eye on the image's right, 2/3 the other eye, 4 nose base.
    dlib_points = np.array([[80, 50], [64, 52], [20, 50], [36, 52], [50, 75]], dtype=np.float32)
    got = arcface_points_from_dlib(dlib_points)
    assert np.allclose(got[0], [28, 51]) and np.allclose(got[1], [72, 51])
    assert np.isnan(got[3:]).all()


def test_the_dlib_eye_fallback_puts_real_eyes_on_the_template_eyes(astronaut: np.ndarray) -> None:
    from airside.vision.dlib_models import DlibHogDetector

    det = DlibHogDetector().detect(astronaut)[0]
    aligner = ArcFaceAligner(fallback=DlibEyeLandmarks())
    lm = aligner.landmarks(astronaut, det)
    assert np.isfinite(lm[:2]).all() and np.isnan(lm[3:]).all()
    m = aligner.transform(lm)
    assert np.abs(apply_affine(m, lm[:2]) - ARCFACE_TEMPLATE_112[:2]).max() < 1e-3
    assert "dlib5pt-eyes" in aligner.preprocessing
    assert aligner.views(astronaut, det, lm).shape == (1, 112, 112, 3)
