"""Landmark layouts: each aligner reads only its own, whatever the detector reports.

Detectors of the InsightFace lineage report eye centres, nose tip and mouth corners; dlib's
5-point model gives two corners per eye and the base of the nose. dlib's chips (and the
calibrated dlib contract) need dlib's points, ArcFace chips need the detector's.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tests.tiny_onnx import linear_embedder

from airside.config import Settings
from airside.model_registry.manifest import Normalisation
from airside.vision.analyzer import FaceAnalyzer
from airside.vision.dlib_models import DlibFivePointAligner, DlibHogDetector
from airside.vision.embedders.onnx_models import GenericOnnxEmbedder
from airside.vision.face_align import ARCFACE_TEMPLATE_112, ArcFaceAligner, DlibEyeLandmarks
from airside.vision.factory import default_contract
from airside.vision.protocols import Detection
from airside.vision.quality import pose_from_points

NORM = Normalisation(mean=127.5, std=127.5)


def rotated(points: np.ndarray, degrees: float, centre: tuple[float, float]) -> np.ndarray:
    a = math.radians(degrees)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = np.asarray(centre)
    out: np.ndarray = ((points - c) @ rot.T + c).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def hog_face(astronaut: np.ndarray) -> Detection:
    return DlibHogDetector().detect(astronaut)[0]


def test_dlib_aligner_ignores_insightface_landmarks_from_the_detector(
    astronaut: np.ndarray, hog_face: Detection
) -> None:
    aligner = DlibFivePointAligner()
    plain = aligner.landmarks(astronaut, hog_face)
    # The same box with landmarks in InsightFace order, as YuNet would report them.
    insight = replace(hog_face, landmarks=ARCFACE_TEMPLATE_112.astype(np.float32) + 150)
    assert np.array_equal(aligner.landmarks(astronaut, insight), plain)


def test_arcface_aligner_uses_the_detectors_landmarks(
    astronaut: np.ndarray, hog_face: Detection
) -> None:
    lm = ARCFACE_TEMPLATE_112.astype(np.float32) + 150
    det = replace(hog_face, landmarks=lm)
    assert np.array_equal(ArcFaceAligner().landmarks(astronaut, det), lm)


@pytest.mark.parametrize("tilt", [0.0, 12.0, -20.0])
def test_both_layouts_give_the_same_roll_for_the_same_face(tilt: float) -> None:
    centre = (100.0, 100.0)
    # One face: eyes at (80, 90) and (120, 90) (image left, image right), nose at (100, 110).
    insight = np.array([[80, 90], [120, 90], [100, 110], [85, 125], [115, 125]], np.float32)
    # dlib: outer/inner corner of the eye on the image's right, then of the other, nose base.
    dlib = np.array([[128, 90], [112, 90], [72, 90], [88, 90], [100, 112]], np.float32)
    ours = pose_from_points(ArcFaceAligner().pose_points(rotated(insight, tilt, centre)))
    theirs = pose_from_points(DlibFivePointAligner().pose_points(rotated(dlib, tilt, centre)))
    assert ours[1] == pytest.approx(tilt, abs=1e-3)
    assert theirs[1] == pytest.approx(tilt, abs=1e-3)
    assert ours[2] == pytest.approx(40.0, abs=1e-3) and theirs[2] == pytest.approx(40.0, abs=1e-3)
    assert abs(ours[0]) < 1e-3 and abs(theirs[0]) < 1e-3


def test_a_turned_head_reads_the_same_way_in_both_layouts() -> None:
    # Nose shifted towards the image's right by 8 px: yaw of +0.2 eye distances in both.
    insight = np.array([[80, 90], [120, 90], [108, 110], [85, 125], [115, 125]], np.float32)
    dlib = np.array([[128, 90], [112, 90], [72, 90], [88, 90], [108, 112]], np.float32)
    yaw_a = pose_from_points(ArcFaceAligner().pose_points(insight))[0]
    yaw_b = pose_from_points(DlibFivePointAligner().pose_points(dlib))[0]
    assert yaw_a == pytest.approx(0.2, abs=1e-3) and yaw_b == pytest.approx(0.2, abs=1e-3)


def test_the_dlib_pipeline_keeps_its_calibrated_contract(tmp_path: Path) -> None:
    from airside.vision.factory import default_analyzer

    dlib = Settings(data_dir=tmp_path, embedder_model="dlib")
    analyzer = default_analyzer(dlib)
    assert analyzer.contract == default_contract(dlib)
    assert analyzer.contract.preprocessing == analyzer.aligner.preprocessing


def test_an_onnx_embedders_contract_names_alignment_and_pixels(
    tmp_path: Path, analyzer: FaceAnalyzer
) -> None:
    aligner = ArcFaceAligner(mirror=True, fallback=DlibEyeLandmarks())
    emb = GenericOnnxEmbedder(
        linear_embedder(tmp_path / "e.onnx"), normalisation=NORM, alignment=aligner.preprocessing
    )
    contract = FaceAnalyzer(analyzer.detector, aligner, emb).contract
    assert contract == emb.contract
    assert contract.preprocessing == f"{aligner.preprocessing}|{NORM.describe()}"


def test_an_embedder_built_for_other_chips_is_refused(
    tmp_path: Path, analyzer: FaceAnalyzer
) -> None:
    emb = GenericOnnxEmbedder(linear_embedder(tmp_path / "e.onnx"), normalisation=NORM)
    with pytest.raises(ValueError, match="built for chips cut by"):
        FaceAnalyzer(analyzer.detector, ArcFaceAligner(mirror=True), emb)


def test_arcface_pipeline_observes_the_astronaut_with_a_frontal_pose(
    tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    aligner = ArcFaceAligner(fallback=DlibEyeLandmarks())
    emb = GenericOnnxEmbedder(
        linear_embedder(tmp_path / "e.onnx"), normalisation=NORM, alignment=aligner.preprocessing
    )
    dlib_face = analyzer.select(analyzer.observe(astronaut), "largest", astronaut.shape)
    arc = FaceAnalyzer(analyzer.detector, aligner, emb)
    face = arc.select(arc.observe(astronaut), "largest", astronaut.shape)
    assert face.chip.shape == (112, 112, 3)
    m, d = face.quality.measurements, dlib_face.quality.measurements
    # Eye centres from dlib's corners: the same roll and eye distance as the dlib pipeline.
    assert m["roll_deg"] == pytest.approx(d["roll_deg"], abs=0.5)
    assert m["interocular_px"] == pytest.approx(d["interocular_px"], rel=0.02)
    assert arc.embed([face]).shape == (1, 16)
