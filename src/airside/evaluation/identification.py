"""1:N evaluation: first image of each repeated identity forms the gallery, the rest are
mated probes, and singleton identities are non-mated probes (people not enrolled)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from airside.config import Settings
from airside.evaluation import metrics
from airside.evaluation.datasets import IdentitySet
from airside.evaluation.templates import extract_templates
from airside.vision.analyzer import FacePolicy
from airside.vision.contract import EmbeddingContract


def evaluate_identification(
    ids: IdentitySet,
    settings: Settings,
    contract: EmbeddingContract,
    *,
    policy: FacePolicy = "central",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for ident in ids.identities:
        counts[ident] = counts.get(ident, 0) + 1
    templates = extract_templates(
        ids.images, settings, contract, policy=policy, workers=workers, progress=progress
    )
    gallery: dict[str, np.ndarray] = {}
    mated: list[tuple[str, np.ndarray]] = []
    nonmated: list[np.ndarray] = []
    failures = 0
    for img, ident in zip(ids.images, ids.identities, strict=True):
        vec = templates[img].vector
        if vec is None:
            failures += 1
            continue
        if counts[ident] < 2:
            nonmated.append(vec)
        elif ident not in gallery:
            gallery[ident] = vec
        else:
            mated.append((ident, vec))
    if not gallery or not mated:
        raise ValueError("need identities with two or more usable images to evaluate 1:N")
    names = list(gallery)
    g = np.stack([gallery[n] for n in names])
    index = {n: i for i, n in enumerate(names)}
    mq = np.stack([v for _, v in mated])
    ms = mq @ g.T
    top = ms.argmax(axis=1)
    true_idx = np.array([index[n] for n, _ in mated])
    top1_scores = ms[np.arange(len(mated)), top]
    true_scores = ms[np.arange(len(mated)), true_idx]
    ns = (np.stack(nonmated) @ g.T).max(axis=1) if nonmated else np.zeros(0)
    res = metrics.identification_metrics(
        top.tolist(), top1_scores, true_idx.tolist(), true_scores, ns
    )
    return {
        "gallery": len(names),
        "mated_probes": len(mated),
        "non_mated_probes": len(nonmated),
        "failures_to_enrol": failures,
        "rank1": round(float(res["rank1"]), 6),
        "fnir_at_fpir": {
            k: (None if v != v else round(float(v), 6)) for k, v in res["fnir_at_fpir"].items()
        },
        "thresholds": {
            k: (None if v != v else round(float(v), 6)) for k, v in res["thresholds"].items()
        },
        "model": contract.fingerprint,
        "face_policy": policy,
    }
