"""The small interfaces every vision backend implements, so that models can be swapped."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from airside.vision.contract import EmbeddingContract

Box = tuple[float, float, float, float]


class BoxSize:
    """``width`` and ``height`` of a ``box`` (x0, y0, x1, y1) in pixels."""

    box: Box

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class Detection(BoxSize):
    """A face box in full-image pixel coordinates (x0, y0, x1, y1) with the detector's score."""

    box: tuple[float, float, float, float]
    score: float
    detector: str
    landmarks: np.ndarray | None = None  # (5, 2) x, y when the detector provides them
    # Found only by a fallback detector (e.g. dlib's CNN after HOG found nothing): such a
    # face may be turned, dim or even lying on its side, so enrolment does not accept it.
    fallback: bool = False

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


class FaceDetector(Protocol):
    name: str
    # The score at which this detector's confidence counts as "certain" for quality scoring.
    confident_score: float
    score_threshold: float

    def detect(self, image: np.ndarray) -> list[Detection]: ...


@runtime_checkable
class TunesForVideo(Protocol):
    """A detector with a variant for video frames (a capability: most detectors have none
    and are used as they are). A face missed in one frame is found a few frames later, so
    video trades the slow rescues and large working copies of photos for frame rate."""

    def for_video(self, max_side: int) -> FaceDetector:
        """The detector to run on frames, on copies of at most ``max_side`` pixels a side."""
        ...


class LandmarkAligner(Protocol):
    """Finds 5 landmarks for a detection and cuts the aligned views the embedder expects.

    Landmark layouts differ between models, so only the aligner reads its landmarks:

    - ``landmarks`` decides whether the detector's own points (``detection.landmarks``,
      InsightFace order when present) are the ones it needs, or finds its own (dlib's
      aligner always runs its 5-point predictor inside the box);
    - ``pose_points`` reads the eye on the image's right, the eye on the image's left and
      the nose out of its layout, for the quality score's head-pose estimate.

    ``views`` returns (V, H, W, 3): view 0 is the canonical chip (used for quality); the
    embedding of a face is the normalised mean of its views' embeddings.
    ``preprocessing`` names the alignment and views: it is part of the embedding contract.
    """

    preprocessing: str

    def landmarks(self, image: np.ndarray, detection: Detection) -> np.ndarray: ...

    def pose_points(self, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(eye on the image's right, eye on the image's left, nose) from ``landmarks``."""
        ...

    def views(
        self, image: np.ndarray, detection: Detection, landmarks: np.ndarray
    ) -> np.ndarray: ...


@runtime_checkable
class CutsExtraViews(Protocol):
    """An aligner whose views include test-time extras (a capability): quality is judged on
    the canonical view alone, so a crop that may never be identified is scored with
    :meth:`canonical_only`, and its full views are cut only if it is identified."""

    def canonical_only(self) -> LandmarkAligner:
        """The same alignment cutting view 0 (the canonical chip) alone."""
        ...


class FaceEmbedder(Protocol):
    """``alignment``: the aligner preprocessing the embedder's contract already names (ONNX
    embedders are built for one alignment and record it with their pixel normalisation),
    or None when the analyzer's aligner supplies it (dlib's ResNet)."""

    contract: EmbeddingContract
    provider: str
    alignment: str | None

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 aligned chips → (N, dim) float32 embeddings."""
        ...


def check_image(image: np.ndarray) -> np.ndarray:
    """``image`` as an (H, W, 3) uint8 array, or ValueError."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(
            f"expected an RGB uint8 image of shape (H, W, 3), got {arr.dtype} {arr.shape}"
        )
    return arr


@dataclass
class FaceCrop:
    """A face cut from a video frame with some margin, kept only while its track lives."""

    quality: float
    image: np.ndarray  # RGB region around the face
    detection: Detection  # in the region's coordinates
    box: Box  # in frame coordinates
    # What the engine needs to embed it later (e.g. the aligned views), engine-specific.
    observation: object = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.image).tobytes()).hexdigest()


class FrameFaceEngine(Protocol):
    """Faces in video frames: detected once a frame, cut and scored per track, embedded
    only for the few crops that are identified (``vision.frame_faces`` implements it)."""

    @property
    def contract(self) -> EmbeddingContract:
        """The contract of the embeddings :meth:`embed_many` returns."""
        ...

    def detect(self, image: np.ndarray) -> list[Detection]: ...

    def crop(self, image: np.ndarray, detection: Detection) -> FaceCrop | None:
        """The face cut out with a margin and its quality, or None when too small."""
        ...

    def embed(self, crop: FaceCrop) -> np.ndarray:
        """The L2-normalised embedding of one crop."""
        ...

    def embed_many(self, crops: Sequence[FaceCrop]) -> np.ndarray:
        """(N, dim) embeddings of the crops, in one batch."""
        ...
