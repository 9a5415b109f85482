"""From an image to assessed, aligned faces and their embeddings.

The steps are split (observe, then embed) so callers can refuse a capture for quality or
face count before paying for the embedding, and so embeddings run in batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from airside.biometrics.contract import EmbeddingContract
from airside.errors import FaceError
from airside.vision.protocols import Detection, FaceDetector, FaceEmbedder, LandmarkAligner
from airside.vision.quality import QualityReport, assess

FacePolicy = Literal["single", "largest", "central"]


@dataclass(frozen=True)
class FaceObservation:
    detection: Detection
    landmarks: np.ndarray
    chip: np.ndarray
    quality: QualityReport


class FaceAnalyzer:
    def __init__(
        self, detector: FaceDetector, aligner: LandmarkAligner, embedder: FaceEmbedder
    ) -> None:
        self.detector = detector
        self.aligner = aligner
        self.embedder = embedder

    @property
    def contract(self) -> EmbeddingContract:
        return self.embedder.contract

    def observe(self, image: np.ndarray) -> list[FaceObservation]:
        out = []
        for det in self.detector.detect(image):
            lm = det.landmarks if det.landmarks is not None else self.aligner.landmarks(image, det)
            chip = self.aligner.chip(image, det, lm)
            q = assess(
                det,
                lm,
                chip,
                confident_score=self.detector.confident_score,
                score_threshold=self.detector.score_threshold,
            )
            out.append(FaceObservation(det, lm, chip, q))
        return out

    @staticmethod
    def select(
        faces: list[FaceObservation],
        policy: FacePolicy,
        image_shape: tuple[int, ...],
        source: str = "image",
    ) -> FaceObservation:
        """Pick the one face a caller meant, or explain why there is none."""
        if not faces:
            raise FaceError(f"{source}: no face found", code="no_face")
        if policy == "single":
            if len(faces) > 1:
                raise FaceError(
                    f"{source}: {len(faces)} faces found; use a photo of one person",
                    code="several_faces",
                )
            return faces[0]
        if policy == "largest":
            return max(faces, key=lambda f: f.detection.width * f.detection.height)
        cy, cx = image_shape[0] / 2, image_shape[1] / 2
        return min(
            faces,
            key=lambda f: (f.detection.center[0] - cx) ** 2 + (f.detection.center[1] - cy) ** 2,
        )

    def embed(self, faces: list[FaceObservation]) -> np.ndarray:
        """Batched embeddings, L2-normalised, one row per face."""
        if not faces:
            return np.zeros((0, self.contract.dim), dtype=np.float32)
        vecs = self.embedder.embed(np.stack([f.chip for f in faces]))
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        out: np.ndarray = (vecs / np.maximum(norms, 1e-12)).astype(np.float32)
        return out
