"""From an image to assessed, aligned faces and their embeddings.

The steps are split (observe, then embed) so callers can refuse a capture for quality or
face count before paying for the embedding, and so embeddings run in batches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from airside.errors import FaceError
from airside.vision.contract import EmbeddingContract
from airside.vision.protocols import Detection, FaceDetector, FaceEmbedder, LandmarkAligner
from airside.vision.quality import QualityReport, assess

FacePolicy = Literal["single", "largest", "central"]


@dataclass(frozen=True)
class FaceObservation:
    detection: Detection
    landmarks: np.ndarray
    views: np.ndarray  # (V, H, W, 3); views[0] is the canonical aligned chip
    quality: QualityReport

    @property
    def chip(self) -> np.ndarray:
        chip: np.ndarray = self.views[0]
        return chip


class FaceAnalyzer:
    def __init__(
        self, detector: FaceDetector, aligner: LandmarkAligner, embedder: FaceEmbedder
    ) -> None:
        built_for = getattr(embedder, "alignment", None)
        if built_for is not None and built_for != aligner.preprocessing:
            raise ValueError(
                f"the embedder was built for chips cut by {built_for!r}, but the aligner "
                f"cuts {aligner.preprocessing!r}: build the embedder with "
                "alignment=aligner.preprocessing"
            )
        self.detector = detector
        self.aligner = aligner
        self.embedder = embedder

    @property
    def contract(self) -> EmbeddingContract:
        """What shapes the vector: the embedder's weights, the alignment and the views.

        An embedder whose contract already names its alignment (ONNX embedders: alignment,
        then pixel normalisation) is taken as it is; otherwise (dlib's ResNet) the aligner's
        preprocessing replaces the embedder's placeholder.
        """
        if getattr(self.embedder, "alignment", None) is not None:
            return self.embedder.contract
        return replace(self.embedder.contract, preprocessing=self.aligner.preprocessing)

    def observe(self, image: np.ndarray) -> list[FaceObservation]:
        out = []
        for det in self.detector.detect(image):
            # The aligner decides whether the detector's landmarks are in the layout it
            # needs (dlib's aligner always runs its own predictor), and reads eyes and nose
            # for the pose estimate out of its own layout.
            lm = self.aligner.landmarks(image, det)
            views = self.aligner.views(image, det, lm)
            q = assess(
                det,
                self.aligner.pose_points(lm),
                views[0],
                confident_score=self.detector.confident_score,
                score_threshold=self.detector.score_threshold,
            )
            out.append(FaceObservation(det, lm, views, q))
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
        """One L2-normalised embedding per face: the normalised mean of its views'."""
        if not faces:
            return np.zeros((0, self.contract.dim), dtype=np.float32)
        n_views = faces[0].views.shape[0]
        vecs = self.embedder.embed(np.concatenate([f.views for f in faces], axis=0))
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        mean = vecs.reshape(len(faces), n_views, -1).mean(axis=1)
        out: np.ndarray = (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)
        return out
