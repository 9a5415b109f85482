"""Faces in video frames: detect -> align -> crop -> quality -> embed, for the camera
pipeline (``video.pipeline``), which sees only ``protocols.FrameFaceEngine``.

A frame's faces are detected once. Each tracked face is cut with a margin and scored on
its canonical view alone; all its views are cut, and the crop embedded, only when the
track asks for an identification, and the crops of one frame are embedded in one batch.
The installation's detector and aligner are asked for their video variants (the
``TunesForVideo`` and ``CutsExtraViews`` capabilities), not inspected for what they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from airside.vision.analyzer import FaceAnalyzer, FaceObservation
from airside.vision.contract import EmbeddingContract
from airside.vision.protocols import (
    CutsExtraViews,
    Detection,
    FaceCrop,
    FrameFaceEngine,
    TunesForVideo,
)
from airside.vision.quality import assess

# Margin kept around a face in its crop: enough for the widest aligned view.
CROP_MARGIN = 0.6


class FrameFaces:
    """The analyzer's models, run the way video needs them (see the module docstring)."""

    def __init__(self, analyzer: FaceAnalyzer, video_detect_side: int = 640) -> None:
        self.analyzer = analyzer
        det = analyzer.detector
        self.detector = det.for_video(video_detect_side) if isinstance(det, TunesForVideo) else det
        aligner = analyzer.aligner
        self.preview = aligner.canonical_only() if isinstance(aligner, CutsExtraViews) else aligner

    @property
    def contract(self) -> EmbeddingContract:
        return self.analyzer.contract

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self.detector.detect(image)

    def crop(self, image: np.ndarray, detection: Detection) -> FaceCrop | None:
        x0, y0, x1, y1 = detection.box
        m = CROP_MARGIN * max(x1 - x0, y1 - y0)
        h, w = image.shape[:2]
        cx0, cy0 = max(0, int(x0 - m)), max(0, int(y0 - m))
        cx1, cy1 = min(w, int(np.ceil(x1 + m))), min(h, int(np.ceil(y1 + m)))
        if cx1 - cx0 < 8 or cy1 - cy0 < 8:
            return None
        region = np.ascontiguousarray(image[cy0:cy1, cx0:cx1])
        lm_local = None
        if detection.landmarks is not None:
            lm_local = detection.landmarks - np.array([cx0, cy0], dtype=np.float64)
        local = Detection(
            (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0),
            detection.score,
            detection.detector,
            lm_local,
            detection.fallback,
        )
        aligner = self.preview
        lm = aligner.landmarks(region, local)
        views = aligner.views(region, local, lm)
        q = assess(
            local,
            aligner.pose_points(lm),
            views[0],
            confident_score=self.detector.confident_score,
            score_threshold=self.detector.score_threshold,
        )
        return FaceCrop(q.score, region, local, detection.box, FaceObservation(local, lm, views, q))

    def embed(self, crop: FaceCrop) -> np.ndarray:
        vec: np.ndarray = self.embed_many([crop])[0]
        return vec

    def embed_many(self, crops: Sequence[FaceCrop]) -> np.ndarray:
        return self.analyzer.embed([self._full_views(c) for c in crops])

    def _full_views(self, crop: FaceCrop) -> FaceObservation:
        """The crop's observation with every view the embedder averages over."""
        obs = crop.observation
        if not isinstance(obs, FaceObservation):
            raise TypeError("this crop was not cut by FrameFaces.crop")
        if self.preview is self.analyzer.aligner:
            return obs
        views = self.analyzer.aligner.views(crop.image, obs.detection, obs.landmarks)
        return FaceObservation(obs.detection, obs.landmarks, views, obs.quality)


def video_engine(analyzer: FaceAnalyzer, video_detect_side: int = 640) -> FrameFaceEngine:
    """The frame engine over ``analyzer``'s models, detecting on copies of at most
    ``video_detect_side`` pixels a side where the detector can."""
    return FrameFaces(analyzer, video_detect_side)
