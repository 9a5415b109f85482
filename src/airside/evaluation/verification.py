"""1:1 evaluation on labelled pairs: accuracy, EER, TAR at FAR, and calibration; and the
scoring of pairs that the other evaluations (``eval fairness``, ``calibrate``) share."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from airside.config import Settings
from airside.evaluation import metrics
from airside.evaluation.datasets import IdentitySet, PairSet
from airside.evaluation.templates import Extracted, extract_templates
from airside.vision.analyzer import FacePolicy
from airside.vision.contract import EmbeddingContract

FARS = (1e-2, 1e-3, 1e-4)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass
class VerificationRun:
    summary: dict[str, Any]
    scores: list[float | None]
    genuine: np.ndarray
    impostor: np.ndarray


def _null(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 6)


# ---------------------------------------------------------------------------------------------
# templates of a pairs file, and of an identities file


@dataclass(frozen=True)
class PairTemplates:
    """The images of a pairs file with their templates, and which pairs can be scored."""

    pairs: PairSet
    images: list[str]  # each image once, in file order
    templates: dict[str, Extracted]

    @property
    def scorable(self) -> list[int]:
        """The pairs (indices in the file) with a template for both images."""
        return [
            k
            for k, (a, b) in enumerate(zip(self.pairs.img_a, self.pairs.img_b, strict=True))
            if self.templates[a].vector is not None and self.templates[b].vector is not None
        ]

    @property
    def failures(self) -> int:
        """Images without a template (failures to enrol)."""
        return sum(1 for p in self.images if self.templates[p].vector is None)

    def scores(self) -> list[float | None]:
        """Each pair's score, ``None`` when an image has no template: the dot product of the
        float32 templates, as ``eval verify`` reports and writes them (:func:`row_scores`,
        in float64, can differ in the last digits)."""
        scores: list[float | None] = []
        for a, b in zip(self.pairs.img_a, self.pairs.img_b, strict=True):
            ta, tb = self.templates[a].vector, self.templates[b].vector
            scores.append(None if ta is None or tb is None else float(np.dot(ta, tb)))
        return scores

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """The templates of the scorable pairs: first images, second images, a row a pair."""
        keep = self.scorable
        if not keep:
            raise ValueError("no pair has a usable face in both images")
        return (
            np.stack([self._vector(self.pairs.img_a[k]) for k in keep]),
            np.stack([self._vector(self.pairs.img_b[k]) for k in keep]),
        )

    def _vector(self, path: str) -> np.ndarray:
        vec = self.templates[path].vector
        assert vec is not None  # only scorable pairs get here
        return vec


def pair_templates(
    pairs: PairSet,
    settings: Settings,
    contract: EmbeddingContract,
    *,
    policy: FacePolicy = "central",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> PairTemplates:
    """Templates for every image of ``pairs`` (from the cache, or computed on all cores)."""
    images = list(dict.fromkeys(pairs.img_a + pairs.img_b))
    templates = extract_templates(
        images, settings, contract, policy=policy, workers=workers, progress=progress
    )
    return PairTemplates(pairs, images, templates)


def row_scores(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """The score of each row of ``a`` with the same row of ``b``, computed in float64."""
    x, y = np.asarray(a).astype(np.float64), np.asarray(b).astype(np.float64)
    scores: FloatArray = np.einsum("ij,ij->i", x, y)
    return scores


@dataclass(frozen=True)
class IdentityTemplates:
    """The images of an identities file that have a template: which, their templates, and
    how many images had none."""

    ids: IdentitySet
    kept: list[int]  # rows of the file with a template, in file order
    vectors: np.ndarray  # float32, one row per kept row
    failures: int  # distinct images without a template (failures to enrol)

    @property
    def identities(self) -> list[str]:
        """Who each kept row is."""
        return [self.ids.identities[k] for k in self.kept]

    def unit_vectors(self) -> FloatArray:
        """The templates in float64, each scaled to unit length again."""
        x = self.vectors.astype(np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


def identity_templates(
    ids: IdentitySet,
    settings: Settings,
    contract: EmbeddingContract,
    *,
    policy: FacePolicy = "central",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> IdentityTemplates:
    """Templates for the images of ``ids`` (from the cache, or computed on all cores)."""
    templates = extract_templates(
        ids.images, settings, contract, policy=policy, workers=workers, progress=progress
    )
    keep = [k for k, p in enumerate(ids.images) if templates[p].vector is not None]
    vecs = [templates[ids.images[k]].vector for k in keep]
    x = (
        np.stack([v for v in vecs if v is not None]).astype(np.float32)
        if keep
        else np.empty((0, contract.dim), dtype=np.float32)
    )
    failed = len(set(ids.images)) - len({ids.images[k] for k in keep})
    return IdentityTemplates(ids, keep, x, failed)


# ---------------------------------------------------------------------------------------------
# every pair of a set of templates


def _similarity_blocks(x: np.ndarray, block: int) -> Iterator[tuple[int, np.ndarray, BoolArray]]:
    """The similarity matrix of the rows of ``x``, a block of rows at a time: each block's
    first row, its scores against every row, and which of them are pairs ``i < j``."""
    n = x.shape[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        yield start, x[start:stop] @ x.T, np.arange(n)[None, :] > np.arange(start, stop)[:, None]


def all_pairs(
    vectors: npt.ArrayLike, identities: Sequence[str], block: int = 1024
) -> tuple[IntArray, IntArray, FloatArray, BoolArray]:
    """Every unordered pair ``i < j`` of the rows: indices, cosine scores, same identity.

    Rows should be L2-normalised templates; they are scored in float32. Memory is a few
    arrays of ``n(n-1)/2``.
    """
    x = np.asarray(vectors, dtype=np.float32)
    n = x.shape[0]
    if n < 2:
        raise ValueError("need at least two images with a usable face to form pairs")
    _, codes = np.unique(np.asarray(identities), return_inverse=True)
    ii: list[IntArray] = []
    jj: list[IntArray] = []
    ss: list[FloatArray] = []
    for start, sims, upper in _similarity_blocks(x, block):
        rows, cols = np.nonzero(upper)
        ii.append((rows + start).astype(np.int64))
        jj.append(cols.astype(np.int64))
        ss.append(sims[rows, cols].astype(np.float64))
    i = np.concatenate(ii)
    j = np.concatenate(jj)
    return i, j, np.concatenate(ss), codes[i] == codes[j]


# ---------------------------------------------------------------------------------------------
# accuracy on labelled pairs; scores for calibration


def stratified_folds(same: np.ndarray, k: int) -> np.ndarray:
    """Fold labels 0..k-1 dealt round-robin within each class, in file order."""
    folds = np.empty(same.shape[0], dtype=np.int64)
    for cls in (True, False):
        idx = np.flatnonzero(same == cls)
        folds[idx] = np.arange(idx.size) % k
    return folds


def evaluate_pairs(
    pairs: PairSet,
    settings: Settings,
    contract: EmbeddingContract,
    *,
    policy: FacePolicy = "central",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerificationRun:
    pt = pair_templates(
        pairs, settings, contract, policy=policy, workers=workers, progress=progress
    )
    images, templates = pt.images, pt.templates
    scores, failed = pt.scores(), pt.failures
    ok = np.array([s is not None for s in scores])
    s = np.array([v if v is not None else np.nan for v in scores], dtype=np.float64)[ok]
    same = np.array(pairs.same, dtype=bool)[ok]
    if s.size == 0 or same.all() or not same.any():
        raise ValueError("need both genuine and impostor pairs with enrolled faces to evaluate")
    genuine, impostor = s[same], s[~same]
    if pairs.folds is not None:
        folds = np.array(pairs.folds)[ok]
        if len(set(folds.tolist())) < 2:
            # A fold column with one value (LFW's View 1 files) gives no held-out data:
            # split deterministically into 10 folds, stratified so each has both classes.
            folds = stratified_folds(same, 10)
            protocol = "10-fold cross-validated threshold (stratified split)"
        else:
            protocol = f"{len(set(folds.tolist()))}-fold cross-validated threshold"
        acc, std = metrics.kfold_accuracy(s, same, folds)
    else:
        _, acc = metrics.best_threshold_accuracy(s, same)
        std = float("nan")
        protocol = "best threshold on all pairs"
    summary: dict[str, Any] = {
        "pairs": len(scores),
        "scored_pairs": int(ok.sum()),
        "images": len(images),
        "failures_to_enrol": failed,
        "failure_to_enrol_rate": round(failed / max(1, len(images)), 6),
        "failures": sorted({e.failure or "" for e in templates.values() if e.vector is None}),
        "genuine_pairs": int(genuine.size),
        "impostor_pairs": int(impostor.size),
        "accuracy": _null(acc),
        "accuracy_std": _null(std),
        "accuracy_protocol": protocol,
        "eer": _null(metrics.eer(genuine, impostor)),
        "tar_at_far": {
            f"{f:.0e}".replace("e-0", "e-"): _null(metrics.tar_at_far(genuine, impostor, f))
            for f in FARS
        },
        "model": contract.fingerprint,
        "face_policy": policy,
    }
    return VerificationRun(summary, scores, genuine, impostor)


def all_pairs_scores(
    ids: IdentitySet,
    settings: Settings,
    contract: EmbeddingContract,
    *,
    policy: FacePolicy = "central",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Genuine and impostor scores of every pair of images (by matrix product, in blocks,
    keeping only the scores: the pairs' indices are not needed here)."""
    t = identity_templates(
        ids, settings, contract, policy=policy, workers=workers, progress=progress
    )
    if len(t.kept) < 3:
        raise ValueError("fewer than 3 images with a usable face: nothing to calibrate on")
    _, codes = np.unique(np.array(t.identities), return_inverse=True)
    gen: list[np.ndarray] = []
    imp: list[np.ndarray] = []
    for start, sims, upper in _similarity_blocks(t.vectors, 1024):
        same = codes[start : start + sims.shape[0]][:, None] == codes[None, :]
        gen.append(sims[upper & same].astype(np.float64))
        imp.append(sims[upper & ~same].astype(np.float64))
    return np.concatenate(gen), np.concatenate(imp), t.failures
