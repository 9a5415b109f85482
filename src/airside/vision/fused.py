"""The fused 1:1 embedder: dlib's ResNet and SFace, one template, one calibrated score.

The two nets were trained on different data with different losses, so their errors are
partly independent: where one scores a genuine pair low, the other often does not. A
fused template is one unit vector, the concatenation ``[a * v_dlib, b * v_sface]`` of the
two models' unit embeddings with ``a^2 + b^2 = 1``, so the inner product of two fused
templates is ``a^2 * cos_dlib + b^2 * cos_sface``. With ``a^2`` and ``b^2`` proportional
to ``1 / sigma`` of each model's impostor scores, that is an increasing affine function of
the sum of the two scores, each standardised by its own impostor distribution: the
fusion rule. Everything downstream (inner-product index, keyed gallery transform,
encryption, the FMR -> threshold table) sees one vector and one score, and both models'
templates are kept, protected and transformed, because both halves live in it.

The weights are constants fitted once on LFW View 1 development data (the impostor pairs
among the images of ``pairs_devtrain.csv``'s people; never on ``pairs_devtest.csv``) and
are part of the embedding contract: its weights digest covers both models' digests and
the weights, and its preprocessing names both alignments and the weights, so templates
fused with other weights, other models or other views never pass for these.

A face is detected once (the settings' detector, YuNet by default). dlib's half is cut by
dlib's 5-point aligner, run inside that box as the dlib pipeline does; SFace's half by
ArcFace alignment on the detector's landmarks. Each half is the normalised mean of its
own views' embeddings, exactly as :meth:`FaceAnalyzer.embed` computes a single model's,
so each half equals that model's template for the same detection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from airside.config import Settings
from airside.vision.analyzer import FaceAnalyzer, FaceObservation
from airside.vision.contract import EmbeddingContract
from airside.vision.dlib_models import CHIP_SIZE, DlibFivePointAligner
from airside.vision.face_align import ArcFaceAligner
from airside.vision.factory import (
    arcface_aligner,
    build_aligner,
    build_detector,
    build_embedder,
    registered_embedder,
    registered_model,
)
from airside.vision.protocols import Detection, FaceDetector, FaceEmbedder, LandmarkAligner

FUSED_MODEL_ID = "fused"
FUSED_VERSION = "1"
SFACE = "sface"


@dataclass(frozen=True)
class FusionWeights:
    """``dlib`` = a^2, the weight of dlib's cosine in the fused score (SFace's is 1 - a^2),
    and how it was fitted. ``dlib_impostor_std`` and ``sface_impostor_std`` are the impostor
    score spreads it came from: a^2 = (1/sd_dlib) / (1/sd_dlib + 1/sd_sface)."""

    dlib: float
    dlib_impostor_std: float
    sface_impostor_std: float
    source: str

    def __post_init__(self) -> None:
        if not 0.0 < self.dlib < 1.0:
            raise ValueError(f"the dlib weight must lie in (0, 1), got {self.dlib}")

    @classmethod
    def from_impostor_spread(cls, sd_dlib: float, sd_sface: float, source: str) -> FusionWeights:
        """The weights that make the fused score an affine function of the sum of both
        scores, each standardised by its own impostor spread (rounded to 4 decimals: the
        contract names them)."""
        if not (sd_dlib > 0.0 and sd_sface > 0.0):
            raise ValueError("impostor score spreads must be positive")
        w = (1.0 / sd_dlib) / (1.0 / sd_dlib + 1.0 / sd_sface)
        return cls(round(w, 4), sd_dlib, sd_sface, source)

    @property
    def sface(self) -> float:
        return 1.0 - self.dlib

    @property
    def tag(self) -> str:
        """The weights as the contract's preprocessing names them."""
        return f"w{self.dlib:.4f}"


# Fitted on LFW View 1: the 5,923,194 impostor pairs among the 3,443 images of
# pairs_devtrain.csv's 2,132 people (YuNet faces, the central one, each model's default
# views); devtest's 963 people are disjoint and took no part (docs/accuracy.md).
FUSION_WEIGHTS = FusionWeights.from_impostor_spread(
    0.034081, 0.087688, "LFW View 1 devtrain impostors (pairs_devtrain.csv's images)"
)


def fused_contract(
    dlib: EmbeddingContract, sface: EmbeddingContract, weights: FusionWeights
) -> EmbeddingContract:
    """The contract of templates fused from ``dlib`` and ``sface`` templates with ``weights``.
    Its digest covers what makes a score (each model's weights digest, dimension and
    preprocessing, and the fusion weights), not the names the models were registered under."""
    parts = [f"{c.weights_sha256}/{c.dim}/{c.preprocessing}" for c in (dlib, sface)]
    digest = hashlib.sha256("\n".join([*parts, weights.tag]).encode()).hexdigest()
    return EmbeddingContract(
        model_id=FUSED_MODEL_ID,
        version=FUSED_VERSION,
        weights_sha256=digest,
        dim=dlib.dim + sface.dim,
        preprocessing=f"{dlib.preprocessing};{sface.preprocessing};{weights.tag}",
    )


def fuse(dlib: np.ndarray, sface: np.ndarray, weights: FusionWeights) -> np.ndarray:
    """Fused templates from rows of unit dlib and SFace templates of the same faces."""
    a = np.asarray(dlib, dtype=np.float64)
    b = np.asarray(sface, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"need one row of each model per face, got {a.shape} and {b.shape}")
    out = np.concatenate([np.sqrt(weights.dlib) * a, np.sqrt(weights.sface) * b], axis=1)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    fused: np.ndarray = out.astype(np.float32)
    return fused


class FusedAligner:
    """Both alignments of one detection, as one ``LandmarkAligner``.

    ``landmarks``: (10, 2), dlib's 5 points (its own predictor in the box) then the
    ArcFace-order 5 (the detector's). ``views``: dlib's views, then ArcFace's, all on
    square canvases of the larger chip size (a smaller chip sits in the top-left corner,
    black around it), so view 0 is dlib's canonical chip: quality and pose are judged as
    the dlib pipeline judges them.
    """

    def __init__(self, dlib: DlibFivePointAligner, arcface: ArcFaceAligner) -> None:
        self.dlib = dlib
        self.arcface = arcface
        self.preprocessing = f"{dlib.preprocessing};{arcface.preprocessing}"

    @property
    def view_counts(self) -> tuple[int, int]:
        """How many views of a face each half cuts: (dlib's, ArcFace's)."""
        return len(self.dlib.paddings) * (2 if self.dlib.mirror else 1), (
            2 if self.arcface.mirror else 1
        )

    def canonical_only(self) -> LandmarkAligner:
        """For video previews: the same landmarks, each half's canonical chip alone."""
        dlib = self.dlib.canonical_only()
        assert isinstance(dlib, DlibFivePointAligner)
        arc = ArcFaceAligner(self.arcface.size, mirror=False, fallback=self.arcface.fallback)
        return FusedAligner(dlib, arc)

    def landmarks(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        d = self.dlib.landmarks(image, detection).astype(np.float32)
        a = np.asarray(self.arcface.landmarks(image, detection), dtype=np.float32)
        return np.concatenate([d, a], axis=0)

    def pose_points(self, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.dlib.pose_points(np.asarray(landmarks)[:5])

    def views(self, image: np.ndarray, detection: Detection, landmarks: np.ndarray) -> np.ndarray:
        lm = np.asarray(landmarks)
        if lm.shape != (10, 2):
            raise ValueError(f"fused alignment takes (10, 2) landmarks, got {lm.shape}")
        parts = [
            self.dlib.views(image, detection, lm[:5]),
            self.arcface.views(image, detection, lm[5:]),
        ]
        side = max(p.shape[1] for p in parts)
        out = np.zeros((sum(p.shape[0] for p in parts), side, side, 3), dtype=np.uint8)
        at = 0
        for p in parts:
            out[at : at + p.shape[0], : p.shape[1], : p.shape[2]] = p
            at += p.shape[0]
        return out


def _mean_unit(embedder: FaceEmbedder, views: np.ndarray) -> np.ndarray:
    """(N, V, H, W, 3) views -> (N, dim): the normalised mean of each face's unit view
    embeddings (what ``FaceAnalyzer.embed`` computes for one model)."""
    n, v = views.shape[:2]
    vecs = embedder.embed(np.ascontiguousarray(views.reshape(n * v, *views.shape[2:])))
    vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    mean = vecs.reshape(n, v, -1).mean(axis=1)
    out: np.ndarray = (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)
    return out


class FusedEmbedder:
    """Both embedders behind one contract. :meth:`embed_faces` takes the packed views of
    whole faces (as :class:`FusedAligner` cuts them) and returns one fused template each;
    :meth:`embed` takes the same views flattened, whole faces only."""

    def __init__(
        self,
        dlib: FaceEmbedder,
        dlib_contract: EmbeddingContract,
        sface: FaceEmbedder,
        aligner: FusedAligner,
        weights: FusionWeights,
    ) -> None:
        self.dlib = dlib
        self.sface = sface
        self.weights = weights
        self.views_per_face = aligner.view_counts
        self.arcface_size = aligner.arcface.size
        self.alignment: str | None = aligner.preprocessing
        self.dlib_contract = dlib_contract
        self.contract = fused_contract(dlib_contract, sface.contract, weights)
        self.provider = f"dlib-resnet on {dlib.provider}, sface on {sface.provider}"

    def embed_faces(self, views: np.ndarray) -> np.ndarray:
        """(N, V, S, S, 3) packed views -> (N, 256) fused templates."""
        n_dlib, n_arc = self.views_per_face
        if views.ndim != 5 or views.shape[1] != n_dlib + n_arc:
            raise ValueError(
                f"expected {n_dlib} dlib and {n_arc} ArcFace views a face, got {views.shape}"
            )
        if views.shape[0] == 0:
            return np.zeros((0, self.contract.dim), dtype=np.float32)
        s = self.arcface_size
        d = _mean_unit(self.dlib, views[:, :n_dlib, :CHIP_SIZE, :CHIP_SIZE])
        a = _mean_unit(self.sface, views[:, n_dlib:, :s, :s])
        return fuse(d, a, self.weights)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        per_face = sum(self.views_per_face)
        if chips.shape[0] % per_face:
            raise ValueError(f"fused views come {per_face} a face, got {chips.shape[0]}")
        return self.embed_faces(chips.reshape(-1, per_face, *chips.shape[1:]))


class FusedAnalyzer(FaceAnalyzer):
    """A ``FaceAnalyzer`` whose templates are fused (see the module docstring); ``observe``,
    ``select`` and ``contract`` are the base class's, ``embed`` fuses each face's halves."""

    embedder: FusedEmbedder

    def __init__(
        self, detector: FaceDetector, aligner: FusedAligner, embedder: FusedEmbedder
    ) -> None:
        super().__init__(detector, aligner, embedder)
        self.embedder = embedder

    def embed(self, faces: list[FaceObservation]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.contract.dim), dtype=np.float32)
        return self.embedder.embed_faces(np.stack([f.views for f in faces]))


def fused_analyzer(settings: Settings, weights: FusionWeights | None = None) -> FusedAnalyzer:
    """The fused analyzer: the settings' detector, dlib's ResNet (run as ``embedder`` says,
    views as ``embed_views`` says) and SFace (the bundled file, or one registered as
    "sface"), fused with ``weights`` (default: the fitted :data:`FUSION_WEIGHTS`)."""
    detector = build_detector(settings)
    dlib_aligner = build_aligner(settings)
    dlib_embedder = build_embedder(settings)
    dlib_contract = replace(dlib_embedder.contract, preprocessing=dlib_aligner.preprocessing)
    manifest, path = registered_model(settings, SFACE, "face-embedder")
    arc = arcface_aligner(settings, manifest, detector)
    sface = registered_embedder(settings, manifest, path, arc)
    aligner = FusedAligner(dlib_aligner, arc)
    embedder = FusedEmbedder(
        dlib_embedder, dlib_contract, sface, aligner, weights or FUSION_WEIGHTS
    )
    return FusedAnalyzer(detector, aligner, embedder)
