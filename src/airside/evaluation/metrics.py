"""Biometric evaluation metrics (ISO/IEC 19795-1 terminology).

Scores are similarities: higher means more alike, and a comparison is a *match decision*
when ``score >= threshold``. Every function here is vectorised (sort + ``searchsorted``),
so evaluating millions of comparisons costs O(n log n) and no Python loop over scores.

Terminology:

* FMR (false match rate): fraction of impostor comparisons with ``score >= t``.
* FNMR (false non-match rate): fraction of genuine comparisons with ``score < t``.
* FPIR / FNIR: the 1:N (identification) analogues, per NIST FRVT 1:N.

Empirical rates measured from ``n`` samples have a resolution of ``1/n``: a rate smaller than
``1/n`` cannot be observed (it is indistinguishable from zero), so functions that target an
operating point refuse to report one that the data cannot resolve (they return ``nan`` or
raise ``ValueError``, as documented on each).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from airside.biometrics.calibration import CalibrationTable, resolvable
from airside.biometrics.score_rates import above as _above
from airside.biometrics.score_rates import check_rate as _check_rate
from airside.biometrics.score_rates import checked_scores as _scores
from airside.biometrics.score_rates import fit_calibration, threshold_at_fmr
from airside.biometrics.score_rates import frac_ge as _frac_ge
from airside.biometrics.score_rates import frac_lt as _frac_lt
from airside.biometrics.score_rates import threshold_sorted as _threshold_sorted

__all__ = [
    "CalibrationTable",
    "ErrorCurve",
    "best_threshold_accuracy",
    "eer",
    "error_curve",
    "fit_calibration",
    "identification_metrics",
    "kfold_accuracy",
    "tar_at_far",
    "threshold_at_fmr",
    "wilson_interval",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ErrorCurve:
    """FMR and FNMR evaluated at every distinct threshold (ascending).

    ``fmr[i]`` is the fraction of impostor scores ``>= thresholds[i]`` and ``fnmr[i]`` the
    fraction of genuine scores ``< thresholds[i]``; the last threshold lies just above the
    largest score, so the curve always runs from (FMR 1, FNMR 0) to (FMR 0, FNMR 1).
    """

    thresholds: FloatArray
    fmr: FloatArray
    fnmr: FloatArray


def error_curve(genuine: npt.ArrayLike, impostor: npt.ArrayLike) -> ErrorCurve:
    """Exact empirical FMR/FNMR trade-off, the basis for DET curves and the EER."""
    gen = np.sort(_scores(genuine, "genuine"))
    imp = np.sort(_scores(impostor, "impostor"))
    values = np.unique(np.concatenate([gen, imp]))
    thresholds = np.append(values, _above(float(values[-1])))
    return ErrorCurve(
        thresholds=thresholds,
        fmr=_frac_ge(imp, thresholds),
        fnmr=_frac_lt(gen, thresholds),
    )


def eer(genuine: npt.ArrayLike, impostor: npt.ArrayLike) -> float:
    """Equal error rate: where FMR and FNMR cross, linearly interpolated between thresholds.

    A single summary of separability that does not depend on choosing an operating point.
    """
    curve = error_curve(genuine, impostor)
    diff = curve.fmr - curve.fnmr  # non-increasing; +1 at the first threshold, -1 at the last
    i = int(np.argmax(diff <= 0.0))
    d0, d1 = float(diff[i - 1]), float(diff[i])
    alpha = d0 / (d0 - d1)
    f0, f1 = float(curve.fmr[i - 1]), float(curve.fmr[i])
    return f0 + alpha * (f1 - f0)


def tar_at_far(genuine: npt.ArrayLike, impostor: npt.ArrayLike, far: float) -> float:
    """True accept rate (1 - FNMR) at the threshold for ``far``; NaN if not measurable.

    Returns ``nan`` when ``len(impostor) < 1/far``: with too few impostors the rate is below
    the resolution and any reported TAR would be meaningless (callers serialise it as null).
    """
    gen = _scores(genuine, "genuine")
    imp = _scores(impostor, "impostor")
    target = _check_rate(far, "far")
    if not resolvable(imp.size, target):
        return float("nan")
    t = threshold_at_fmr(imp, target)
    return float(np.count_nonzero(gen >= t) / gen.size)


def _labels(same: npt.ArrayLike, n: int) -> npt.NDArray[np.bool_]:
    """Validate the same/different labels that accompany pair scores."""
    lab = np.asarray(same).reshape(-1)
    if lab.size != n:
        raise ValueError(f"same has {lab.size} labels but there are {n} scores")
    return lab.astype(bool)


def best_threshold_accuracy(scores: npt.ArrayLike, same: npt.ArrayLike) -> tuple[float, float]:
    """Threshold maximising pair accuracy (``score >= t`` means same) and that accuracy.

    All thresholds between two consecutive distinct scores give the same accuracy; we return
    the midpoint of the best gap (not an observed score) so that unseen pairs sitting just
    below the training boundary are not systematically misclassified. Ties go to the most
    lenient (lowest) threshold. Returning the lowest score means "accept all"; a value just
    above the maximum means "reject all".
    """
    s = _scores(scores, "pair")
    lab = _labels(same, s.size)
    pos = np.sort(s[lab])
    neg = np.sort(s[~lab])
    values = np.unique(s)
    cands = np.append(values, _above(float(values[-1])))
    true_accepts = pos.size - np.searchsorted(pos, cands, side="left")
    true_rejects = np.searchsorted(neg, cands, side="left")
    acc = (true_accepts + true_rejects) / s.size
    i = int(np.argmax(acc))
    if i == 0 or i == values.size:
        thr = float(cands[i])
    else:
        lo, hi = float(values[i - 1]), float(values[i])
        thr = (lo + hi) / 2.0
        if not lo < thr <= hi:  # adjacent floats: the midpoint may round down onto ``lo``
            thr = hi
    return thr, float(acc[i])


def kfold_accuracy(
    scores: npt.ArrayLike, same: npt.ArrayLike, folds: int | npt.ArrayLike
) -> tuple[float, float]:
    """LFW-protocol accuracy: threshold chosen on the other folds, measured on the held-out one.

    ``folds`` is either a fold count (contiguous, equal-as-possible splits in the given order,
    matching LFW's ``pairs.txt`` layout) or an array of per-pair fold labels. Returns the mean
    and population standard deviation (``ddof=0``) of the per-fold accuracies, so the
    threshold is never tuned on the pairs it is scored on.
    """
    s = _scores(scores, "pair")
    lab = _labels(same, s.size)
    if isinstance(folds, int | np.integer):
        k = int(folds)
        if k < 2 or k > s.size:
            raise ValueError(f"folds must be between 2 and the number of pairs ({s.size}), got {k}")
        fold_of = np.repeat(np.arange(k), [len(c) for c in np.array_split(np.arange(s.size), k)])
    else:
        fold_of = np.asarray(folds).reshape(-1)
        if fold_of.size != s.size:
            raise ValueError(f"folds has {fold_of.size} labels but there are {s.size} scores")
    fold_ids = np.unique(fold_of)
    if fold_ids.size < 2:
        raise ValueError("kfold_accuracy needs at least two distinct folds")
    accs = np.empty(fold_ids.size, dtype=np.float64)
    for j, fold in enumerate(fold_ids):  # loop over folds (<= a handful), not over scores
        test = fold_of == fold
        thr, _ = best_threshold_accuracy(s[~test], lab[~test])
        accs[j] = np.mean((s[test] >= thr) == lab[test])
    return float(np.mean(accs)), float(np.std(accs))


def _rate_key(rate: float) -> str:
    """Stable dictionary key for a rate, e.g. 0.01 -> "0.01", 0.003 -> "0.003"."""
    return f"{rate:g}"


def identification_metrics(
    mated_top1_ids: npt.ArrayLike,
    mated_top1_scores: npt.ArrayLike,
    mated_true_ids: npt.ArrayLike,
    mated_true_scores: npt.ArrayLike,
    nonmated_top1_scores: npt.ArrayLike,
    fpir_targets: Sequence[float] = (0.01, 0.003),
) -> dict[str, Any]:
    """Rank-1 accuracy and FNIR at FPIR for 1:N search, per NIST FRVT 1:N.

    For each FPIR target the threshold ``T`` is the smallest score such that the fraction of
    non-mated searches whose top-1 score is ``>= T`` is at most the target. FNIR(T) is the
    fraction of mated searches where the mate is *not* returned at rank 1 with a score
    ``>= T``. ``mated_true_scores`` is the mate's score (NaN if the mate was not in the
    candidate list; that search then counts as a miss). Rates needing more non-mated searches
    than available (fewer than ``1/fpir``) are NaN, as are their thresholds.

    Returns ``{"rank1": float, "fnir_at_fpir": {key: float}, "thresholds": {key: float}}`` with
    keys formatted like ``"0.01"``.
    """
    top1_ids = np.asarray(mated_top1_ids).reshape(-1)
    true_ids = np.asarray(mated_true_ids).reshape(-1)
    top1_scores = _scores(mated_top1_scores, "mated top-1")
    true_scores = np.asarray(mated_true_scores, dtype=np.float64).reshape(-1)
    nonmated = np.sort(_scores(nonmated_top1_scores, "non-mated top-1", allow_empty=True))
    n = top1_ids.size
    if n == 0:
        raise ValueError("identification_metrics needs at least one mated search")
    if not (top1_scores.size == true_ids.size == true_scores.size == n):
        raise ValueError(
            "mated arrays must have equal length: "
            f"top1_ids={n}, top1_scores={top1_scores.size}, "
            f"true_ids={true_ids.size}, true_scores={true_scores.size}"
        )
    if np.any(np.isinf(true_scores)):
        raise ValueError("mated true scores must be finite or NaN (mate not in candidate list)")
    hit = top1_ids == true_ids
    fnir: dict[str, float] = {}
    thresholds: dict[str, float] = {}
    for target in fpir_targets:  # a few operating points, not a loop over scores
        rate = _check_rate(target, "fpir target")
        key = _rate_key(rate)
        if not resolvable(nonmated.size, rate):
            fnir[key] = float("nan")
            thresholds[key] = float("nan")
            continue
        t = _threshold_sorted(nonmated, rate)
        with np.errstate(invalid="ignore"):
            found = hit & (true_scores >= t)
        fnir[key] = float(1.0 - np.count_nonzero(found) / n)
        thresholds[key] = t
    return {"rank1": float(np.mean(hit)), "fnir_at_fpir": fnir, "thresholds": thresholds}


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k/n``.

    Preferred over the normal approximation because error rates sit near 0, where the normal
    interval collapses to zero width. ``n == 0`` carries no information: ``(nan, nan)``.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    z2 = z * z
    denom = n + z2
    centre = (k + z2 / 2.0) / denom
    half = (z / denom) * math.sqrt(n * p * (1.0 - p) + z2 / 4.0)
    return max(0.0, centre - half), min(1.0, centre + half)
