"""The fused 1:1 mode (``vision.fused``) beside each of its models: fitting the fusion
weights on development data, and the held-out comparison docs/accuracy.md reports.

Both use every pair of a set of images (all same-identity pairs genuine, all others
impostors), not only a pairs file's: LFW View 1's devtest file has 500 impostor pairs,
too few to resolve a false accept rate of 1e-3, while its 1,549 images give over a
million impostor pairs. The pairs file still gives the accuracy LFW reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from airside.biometrics.calibration import shipped_calibration
from airside.biometrics.score_rates import frac_lt
from airside.config import Settings
from airside.evaluation import metrics
from airside.evaluation.datasets import IdentitySet, PairSet
from airside.evaluation.verification import (
    all_pairs,
    identity_templates,
    pair_templates,
    stratified_folds,
)
from airside.vision.analyzer import FacePolicy
from airside.vision.factory import default_contract
from airside.vision.fused import FusionWeights

Model = Literal["dlib", "sface", "fused"]
MODELS: tuple[Model, ...] = ("dlib", "sface", "fused")
FARS = (1e-2, 1e-3, 1e-4)
TABLE_FMR = 1e-3


def model_settings(settings: Settings, model: Model) -> Settings:
    """``settings`` with ``model`` as the embedder (the detector stays the settings' own)."""
    return settings.model_copy(update={"embedder_model": model})


def images_of(ids: IdentitySet, pairs: PairSet) -> IdentitySet:
    """The rows of ``ids`` whose image appears in ``pairs`` (same folder, same paths)."""
    wanted = set(pairs.img_a) | set(pairs.img_b)
    keep = [k for k, p in enumerate(ids.images) if p in wanted]
    if not keep:
        raise ValueError(f"no image of {pairs.path} is listed in {ids.path}")
    return IdentitySet(
        ids.path,
        [ids.images[k] for k in keep],
        [ids.identities[k] for k in keep],
        [ids.rows[k] for k in keep],
    )


@dataclass(frozen=True)
class AllPairScores:
    """Every pair of a set of images scored by one model."""

    genuine: np.ndarray
    impostor: np.ndarray
    failures: int


def all_pair_scores(
    ids: IdentitySet,
    settings: Settings,
    model: Model,
    *,
    policy: FacePolicy = "central",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> AllPairScores:
    s = model_settings(settings, model)
    t = identity_templates(
        ids, s, default_contract(s), policy=policy, workers=workers, progress=progress
    )
    _, _, scores, same = all_pairs(t.vectors, t.identities)
    return AllPairScores(scores[same], scores[~same], t.failures)


def fit_weights(
    ids: IdentitySet,
    settings: Settings,
    *,
    source: str,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> FusionWeights:
    """The fusion weights from the impostor score spread of each model on ``ids`` (give it
    development images only: the weights become part of the contract)."""
    spread = {
        m: float(
            np.std(all_pair_scores(ids, settings, m, workers=workers, progress=progress).impostor)
        )
        for m in ("dlib", "sface")
    }
    return FusionWeights.from_impostor_spread(spread["dlib"], spread["sface"], source)


@dataclass(frozen=True)
class ModelFigures:
    """One model on held-out data: the pairs file, and every pair of its images."""

    model: Model
    contract: str
    images: int
    failures_to_enrol: int
    pairs: int
    best_threshold_accuracy: float
    kfold_accuracy: float
    genuine_pairs: int
    impostor_pairs: int
    tar_at_far: dict[float, float] = field(default_factory=dict)
    # FNMR at the threshold the shipped table gives for FMR 1e-3, and the FMR measured there.
    table_threshold: float | None = None
    fnmr_at_table: float | None = None
    fmr_at_table: float | None = None


def held_out_figures(
    pairs: PairSet,
    ids: IdentitySet,
    settings: Settings,
    model: Model,
    *,
    policy: FacePolicy = "central",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ModelFigures:
    """``model`` on ``pairs`` and on every pair of its images (``images_of(ids, pairs)``)."""
    s = model_settings(settings, model)
    contract = default_contract(s)
    pt = pair_templates(pairs, s, contract, policy=policy, workers=workers, progress=progress)
    keep = pt.scorable
    scores = np.array([v for v in pt.scores() if v is not None], dtype=np.float64)
    same = np.array(pairs.same, dtype=bool)[keep]
    _, best = metrics.best_threshold_accuracy(scores, same)
    kfold, _ = metrics.kfold_accuracy(scores, same, stratified_folds(same, 10))
    every = all_pair_scores(images_of(ids, pairs), settings, model, policy=policy, workers=workers)
    figures = ModelFigures(
        model=model,
        contract=contract.fingerprint,
        images=len(pt.images),
        failures_to_enrol=pt.failures,
        pairs=len(keep),
        best_threshold_accuracy=best,
        kfold_accuracy=kfold,
        genuine_pairs=int(every.genuine.size),
        impostor_pairs=int(every.impostor.size),
        tar_at_far={f: metrics.tar_at_far(every.genuine, every.impostor, f) for f in FARS},
    )
    table = shipped_calibration(contract)
    if table is None:
        return figures
    t = table.threshold_for(TABLE_FMR)
    imp = np.sort(every.impostor)
    return replace(
        figures,
        table_threshold=t,
        fnmr_at_table=float(frac_lt(np.sort(every.genuine), np.array([t]))[0]),
        fmr_at_table=1.0 - float(frac_lt(imp, np.array([t]))[0]),
    )


def compare(
    pairs: PairSet,
    ids: IdentitySet,
    settings: Settings,
    models: Sequence[Model] = MODELS,
    *,
    workers: int | None = None,
) -> list[ModelFigures]:
    return [held_out_figures(pairs, ids, settings, m, workers=workers) for m in models]
