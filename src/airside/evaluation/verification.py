"""1:1 evaluation on labelled pairs: accuracy, EER, TAR at FAR, and calibration."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from airside.biometrics.calibration import CalibrationTable
from airside.biometrics.contract import EmbeddingContract
from airside.config import Settings
from airside.evaluation import metrics
from airside.evaluation.datasets import IdentitySet, PairSet
from airside.evaluation.templates import Extracted, extract_templates
from airside.vision.analyzer import FacePolicy

FARS = (1e-2, 1e-3, 1e-4)


@dataclass
class VerificationRun:
    summary: dict[str, Any]
    scores: list[float | None]
    genuine: np.ndarray
    impostor: np.ndarray


def _null(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 6)


def _score_pairs(pairs: PairSet, templates: dict[str, Extracted]) -> tuple[list[float | None], int]:
    scores: list[float | None] = []
    for a, b in zip(pairs.img_a, pairs.img_b, strict=True):
        ta, tb = templates[a].vector, templates[b].vector
        scores.append(None if ta is None or tb is None else float(np.dot(ta, tb)))
    failed = sum(1 for e in templates.values() if e.vector is None)
    return scores, failed


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
    images = list(dict.fromkeys(pairs.img_a + pairs.img_b))
    templates = extract_templates(
        images, settings, contract, policy=policy, workers=workers, progress=progress
    )
    scores, failed = _score_pairs(pairs, templates)
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
    """Genuine and impostor scores of every pair of images (by matrix product, in blocks)."""
    templates = extract_templates(
        ids.images, settings, contract, policy=policy, workers=workers, progress=progress
    )
    keep = [i for i, p in enumerate(ids.images) if templates[p].vector is not None]
    failed = len(set(ids.images)) - len({ids.images[i] for i in keep})
    if len(keep) < 3:
        raise ValueError("fewer than 3 images with a usable face: nothing to calibrate on")
    vecs = [templates[ids.images[i]].vector for i in keep]
    x = np.stack([v for v in vecs if v is not None]).astype(np.float32)
    labels = np.array([ids.identities[i] for i in keep])
    _, codes = np.unique(labels, return_inverse=True)
    gen: list[np.ndarray] = []
    imp: list[np.ndarray] = []
    block = 1024
    for start in range(0, len(x), block):
        sims = x[start : start + block] @ x.T
        rows = np.arange(start, min(start + block, len(x)))
        upper = np.arange(len(x))[None, :] > rows[:, None]
        same = codes[rows][:, None] == codes[None, :]
        gen.append(sims[upper & same].astype(np.float64))
        imp.append(sims[upper & ~same].astype(np.float64))
    return np.concatenate(gen), np.concatenate(imp), failed


def calibrate(
    genuine: np.ndarray, impostor: np.ndarray, contract: EmbeddingContract, source: str
) -> CalibrationTable:
    return metrics.fit_calibration(genuine, impostor, model=contract.fingerprint, source=source)
