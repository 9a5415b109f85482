"""Demographic differentials: per-group error rates at one operating threshold.

The threshold is set as in production, for a target FMR over *all* impostor pairs of the
evaluation; every group is then measured at that same threshold. A group label comes with
each pair: within-group pairs carry one value (``"african"``), cross-group pairs ``a|b``
(the two names in sorted order), unlabelled pairs nothing. Unlabelled pairs count towards
the overall threshold and rates but belong to no group.

Every rate is reported with its count (``errors`` of ``n``) and a Wilson 95% interval, and
never computed from an empty set: a group without impostor pairs has FMR ``None``, not 0.
A group is *measurable* for FMR when it could show the target FMR at least once
(``impostors * fmr_target >= 1``, the rule the calibration tables use), and for FNMR when it
has at least ``min_genuines`` genuine pairs. Groups that are not measurable stay in the
output, marked ``too_small``, and are left out of the differentials.

Differentials compare within-group rates only (cross-group pairs are shown, not ranked):
``fmr_differential`` is the highest measurable within-group FMR over the lowest. When the
lowest is zero the ratio is unbounded: it is reported as ``None`` with a note and a lower
bound (highest rate over the Wilson upper limit of the group with no errors).

Every group is measured at two thresholds for the same FMR target: the *in-domain* one
above, fitted on this evaluation's own impostor pairs (all cross-identity pairs: no
demographic label is used to set it), and, when given, the *deployment* one, the threshold
the model's installed or shipped FMR table gives for that target (``deployment``). The
first shows the groups' error rates where the target FMR really holds on these images; the
second shows what a deployment that trusts its table would see on them.

Demographic labels are accepted here and in the evaluation CLI only. Nothing outside
``airside.evaluation`` reads, stores or decides on them (tests/test_fairness.py checks).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from airside.biometrics.calibration import CalibrationTable, resolvable
from airside.biometrics.fair_calibration import (
    CohortNorm,
    FitParams,
    ImageStats,
    ZNorm,
    fit_fair_calibration,
)
from airside.evaluation.metrics import threshold_at_fmr, wilson_interval
from airside.evaluation.verification import all_pairs  # re-exported: every pair, scored

__all__ = [
    "METHODS",
    "DeploymentThreshold",
    "GroupedScores",
    "all_pairs",
    "crossfit_scores",
    "deployment_threshold",
    "fairness_summary",
    "group_names_of_pairs",
    "normalise_group_label",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

CROSS = "|"
IMPOSTOR_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)
GENUINE_QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5)
DEFAULT_MIN_GENUINES = 20


def normalise_group_label(value: str) -> str:
    """A pair's group label in canonical form: ``"b|a"`` becomes ``"a|b"``, ``"a|a"`` is
    ``"a"``, blanks are stripped; ``""`` means unlabelled."""
    text = value.strip()
    if not text:
        return ""
    parts = [p.strip() for p in text.split(CROSS)]
    if len(parts) > 2 or any(not p for p in parts):
        raise ValueError(
            f"group label {value!r} must be one name (within-group pair) or two names "
            f"joined by {CROSS!r} (cross-group pair)"
        )
    names = sorted(set(parts))
    return names[0] if len(names) == 1 else CROSS.join(names)


@dataclass(frozen=True)
class GroupedScores:
    """Scores of pairs, whether each is genuine, and each pair's group (-1: unlabelled)."""

    scores: FloatArray
    same: BoolArray
    group: IntArray
    names: list[str]

    def __post_init__(self) -> None:
        n = self.scores.shape[0]
        if self.same.shape[0] != n or self.group.shape[0] != n:
            raise ValueError("scores, same and group must have one entry per pair")
        if n and not np.all(np.isfinite(self.scores)):
            raise ValueError("pair scores must be finite")
        if n and (self.group.min() < -1 or self.group.max() >= len(self.names)):
            raise ValueError("group codes must index names (or be -1 for unlabelled)")

    @classmethod
    def from_labels(
        cls, scores: npt.ArrayLike, same: npt.ArrayLike, labels: Sequence[str]
    ) -> GroupedScores:
        """From one label per pair (``""``: unlabelled), as a pairs CSV gives them."""
        canon = [normalise_group_label(v) for v in labels]
        names = sorted({v for v in canon if v})
        index = {name: i for i, name in enumerate(names)}
        return cls(
            np.asarray(scores, dtype=np.float64).reshape(-1),
            np.asarray(same, dtype=bool).reshape(-1),
            np.array([index[v] if v else -1 for v in canon], dtype=np.int64),
            names,
        )

    def with_scores(self, scores: FloatArray) -> GroupedScores:
        """The same pairs and groups with other scores (a normalised version of them)."""
        return GroupedScores(
            np.asarray(scores, dtype=np.float64), self.same, self.group, self.names
        )


def group_names_of_pairs(
    image_groups: Sequence[str],
) -> tuple[list[str], IntArray, Callable[[IntArray, IntArray], IntArray]]:
    """Pair groups from per-image groups, without a string per pair.

    Returns the pair group names (within-group names first, then ``a|b``), each image's
    group code (-1: unlabelled) and a vectorised function mapping two arrays of image
    indices to pair group codes (-1 when either image is unlabelled).
    """
    labels = [v.strip() for v in image_groups]
    for v in labels:
        if CROSS in v:
            raise ValueError(f"image group {v!r} contains {CROSS!r}, which marks cross-group pairs")
    base = sorted({v for v in labels if v})
    g = len(base)
    code_of = {name: i for i, name in enumerate(base)}
    image_code = np.array([code_of[v] if v else -1 for v in labels], dtype=np.int64)
    names = list(base)
    cross_index = np.full((g, g), -1, dtype=np.int64)
    for a in range(g):
        cross_index[a, a] = a
        for b in range(a + 1, g):
            cross_index[a, b] = cross_index[b, a] = len(names)
            names.append(f"{base[a]}{CROSS}{base[b]}")

    def pair_codes(i: IntArray, j: IntArray) -> IntArray:
        ci, cj = image_code[i], image_code[j]
        out = np.full(ci.shape, -1, dtype=np.int64)
        ok = (ci >= 0) & (cj >= 0)
        out[ok] = cross_index[ci[ok], cj[ok]]
        return out

    return names, image_code, pair_codes


def _rate(errors: int, n: int) -> tuple[float | None, list[float] | None]:
    """``errors / n`` and its Wilson 95% interval, or ``(None, None)`` when ``n == 0``."""
    if n == 0:
        return None, None
    lo, hi = wilson_interval(errors, n)
    return errors / n, [lo, hi]


def _quantiles(values: FloatArray, qs: Sequence[float]) -> dict[str, float | None]:
    """Quantiles the sample can support (at least one value beyond each), else ``None``."""
    out: dict[str, float | None] = {}
    for q in qs:
        tail = min(q, 1.0 - q)
        out[f"{q:g}"] = (
            float(np.quantile(values, q)) if values.size and values.size * tail >= 1.0 else None
        )
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or ``None`` when either is missing or ``b`` is zero (never divides by 0)."""
    if a is None or b is None or b == 0.0:
        return None
    return a / b


def _differential(
    groups: Mapping[str, Mapping[str, Any]], rate: str, count: str, errors: str, flag: str
) -> dict[str, Any]:
    """max/min of ``rate`` over measurable within-group entries, with how it was formed."""
    rows = [
        (name, float(g[rate]), int(g[errors]), int(g[count]))
        for name, g in groups.items()
        if g["kind"] == "within" and g[flag] and g[rate] is not None
    ]
    result: dict[str, Any] = {"value": None, "max_group": None, "min_group": None, "note": None}
    if len(rows) < 2:
        result["note"] = (
            f"fewer than two groups have enough pairs to measure {rate.upper()} "
            f"({len(rows)} measurable)"
        )
        return result
    hi = max(rows, key=lambda r: r[1])
    lo = min(rows, key=lambda r: r[1])
    result["max_group"], result["min_group"] = hi[0], lo[0]
    if lo[1] > 0.0:
        result["value"] = hi[1] / lo[1]
    elif hi[1] == 0.0:
        result["note"] = f"no group has any {errors.replace('_', ' ')}: the ratio is undefined"
    else:
        upper = wilson_interval(lo[2], lo[3])[1]
        bound = hi[1] / upper
        what = f"group {lo[0]!r} has no {errors.replace('_', ' ')} in {lo[3]} pairs"
        result["note"] = (
            f"{what}: the ratio is unbounded; at least {bound:.3g} (against its 95% upper "
            f"limit {upper:.3g})"
            if bound > 1.0
            else f"{what}: the ratio is unbounded, but too few pairs to show it above 1 (its "
            f"95% upper limit {upper:.3g} exceeds the highest rate {hi[1]:.3g})"
        )
        result["lower_bound"] = bound
    return result


@dataclass(frozen=True)
class DeploymentThreshold:
    """The threshold a deployment uses for the FMR target and the table it comes from, or
    ``threshold=None`` with the reason there is none (``note``)."""

    threshold: float | None
    source: str
    note: str | None = None


def deployment_threshold(
    table: CalibrationTable | None, fmr_target: float, source: str, note: str | None = None
) -> DeploymentThreshold:
    """``table``'s threshold for ``fmr_target``; a target the table cannot set (finer than
    it resolves, outside its rows) or no table at all gives ``None`` and the reason."""
    if table is None:
        return DeploymentThreshold(None, source, note or "no FMR table")
    try:
        return DeploymentThreshold(table.threshold_for(fmr_target), source)
    except ValueError as e:
        return DeploymentThreshold(None, source, str(e))


def _counts(scores: FloatArray, same: BoolArray, threshold: float) -> dict[str, Any]:
    """Pairs, errors and rates (with Wilson intervals) of these pairs at ``threshold``."""
    match = scores >= threshold
    n_gen = int(np.count_nonzero(same))
    n_imp = int(same.size) - n_gen
    fm = int(np.count_nonzero(match & ~same))
    fnm = n_gen - int(np.count_nonzero(match & same))
    fmr, fmr_ci = _rate(fm, n_imp)
    fnmr, fnmr_ci = _rate(fnm, n_gen)
    return {
        "impostors": n_imp,
        "false_matches": fm,
        "fmr": fmr,
        "fmr_ci": fmr_ci,
        "genuines": n_gen,
        "false_non_matches": fnm,
        "fnmr": fnmr,
        "fnmr_ci": fnmr_ci,
    }


def _at_deployment(
    data: GroupedScores,
    members: Mapping[str, IntArray],
    groups: Mapping[str, Mapping[str, Any]],
    deployment: DeploymentThreshold,
) -> dict[str, Any]:
    """Overall and per-group rates at the deployment threshold, and their differentials
    (the same groups, measurability and rules as at the in-domain threshold)."""
    out: dict[str, Any] = {
        "threshold": deployment.threshold,
        "source": deployment.source,
        "note": deployment.note,
    }
    if deployment.threshold is None:
        return out
    scores, same, t = data.scores, data.same, float(deployment.threshold)
    overall = _counts(scores, same, t)
    overall["tar"] = None if overall["fnmr"] is None else 1.0 - overall["fnmr"]
    rows: dict[str, dict[str, Any]] = {}
    for name, idx in members.items():
        row = _counts(scores[idx], same[idx], t)
        for key in ("kind", "fmr_measurable", "fnmr_measurable"):
            row[key] = groups[name][key]
        row["fmr_ratio_to_overall"] = _ratio(row["fmr"], overall["fmr"])
        row["fnmr_ratio_to_overall"] = _ratio(row["fnmr"], overall["fnmr"])
        rows[name] = row
    fmr_diff = _differential(rows, "fmr", "impostors", "false_matches", "fmr_measurable")
    fnmr_diff = _differential(rows, "fnmr", "genuines", "false_non_matches", "fnmr_measurable")
    out.update(
        overall=overall,
        groups=rows,
        fmr_differential=fmr_diff["value"],
        fmr_differential_detail=fmr_diff,
        fnmr_differential=fnmr_diff["value"],
        fnmr_differential_detail=fnmr_diff,
    )
    return out


def fairness_summary(
    data: GroupedScores,
    *,
    fmr_target: float = 1e-3,
    threshold: float | None = None,
    min_genuines: int = DEFAULT_MIN_GENUINES,
    deployment: DeploymentThreshold | None = None,
) -> dict[str, Any]:
    """Per-group FMR and FNMR, with counts, intervals and differentials, at the in-domain
    threshold and (with ``deployment``) at the deployment's.

    ``threshold`` defaults to the in-domain one: the threshold that gives ``fmr_target``
    over every impostor pair of ``data`` (:func:`airside.evaluation.metrics.
    threshold_at_fmr`: the measured FMR never exceeds the target, so ties at the boundary
    are rejected together). A comparison is a match when ``score >= threshold``. With
    ``deployment``, the same rates at the deployment's threshold are under ``"deployment"``
    (``None`` without it).
    """
    if not (0.0 < fmr_target < 1.0):
        raise ValueError(f"the FMR target must be in (0, 1), got {fmr_target!r}")
    if min_genuines < 1:
        raise ValueError("min_genuines must be at least 1")
    scores, same, group = data.scores, data.same, data.group
    imp_all = scores[~same]
    threshold_given = threshold
    if threshold is None:
        if imp_all.size == 0:
            raise ValueError("no impostor pairs: cannot set a threshold for an FMR target")
        if not resolvable(imp_all.size, fmr_target):
            raise ValueError(
                f"{imp_all.size} impostor pairs cannot set a threshold for FMR {fmr_target:g}: "
                f"that needs at least {math.ceil(1.0 / fmr_target)}"
            )
        threshold = threshold_at_fmr(imp_all, fmr_target)
    t = float(threshold)
    overall = _counts(scores, same, t)
    overall["tar"] = None if overall["fnmr"] is None else 1.0 - overall["fnmr"]
    # Group pairs once (sort by code) rather than one full-length mask per group.
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(-1, len(data.names) + 1))
    groups: dict[str, dict[str, Any]] = {}
    members: dict[str, IntArray] = {}
    for k, name in enumerate(data.names):
        idx = order[bounds[k + 1] : bounds[k + 2]]
        members[name] = idx
        s_g, same_g = scores[idx], same[idx]
        row = _counts(s_g, same_g, t)
        row["kind"] = "cross" if CROSS in name else "within"
        row["fmr_measurable"] = resolvable(row["impostors"], fmr_target)
        row["fnmr_measurable"] = row["genuines"] >= min_genuines
        reasons = []
        if not row["fmr_measurable"]:
            reasons.append(
                f"{row['impostors']} impostor pairs (FMR {fmr_target:g} needs "
                f"{math.ceil(1.0 / fmr_target)})"
            )
        if not row["fnmr_measurable"]:
            reasons.append(f"{row['genuines']} genuine pairs (FNMR needs {min_genuines})")
        row["status"] = "too_small" if len(reasons) == 2 else "partial" if reasons else "ok"
        row["too_small"] = reasons
        row["fmr_ratio_to_overall"] = _ratio(row["fmr"], overall["fmr"])
        row["fnmr_ratio_to_overall"] = _ratio(row["fnmr"], overall["fnmr"])
        row["impostor_quantiles"] = _quantiles(s_g[~same_g], IMPOSTOR_QUANTILES)
        row["genuine_quantiles"] = _quantiles(s_g[same_g], GENUINE_QUANTILES)
        groups[name] = row
    unlabelled = order[bounds[0] : bounds[1]]
    fmr_diff = _differential(groups, "fmr", "impostors", "false_matches", "fmr_measurable")
    fnmr_diff = _differential(groups, "fnmr", "genuines", "false_non_matches", "fnmr_measurable")
    return {
        "threshold": t,
        "threshold_basis": (
            f"in-domain: FMR {fmr_target:g} over all {overall['impostors']} impostor pairs of "
            "this evaluation"
            if threshold_given is None
            else "given"
        ),
        "fmr_target": fmr_target,
        "overall": overall,
        "groups": groups,
        "unlabelled": {
            "impostors": int(np.count_nonzero(~same[unlabelled])),
            "genuines": int(np.count_nonzero(same[unlabelled])),
        },
        "fmr_differential": fmr_diff["value"],
        "fmr_differential_detail": fmr_diff,
        "fnmr_differential": fnmr_diff["value"],
        "fnmr_differential_detail": fnmr_diff,
        "min_genuines": min_genuines,
        "deployment": None
        if deployment is None
        else _at_deployment(data, members, groups, deployment),
    }


# ---------------------------------------------------------------------------------------------
# normalisations compared in one run, cross-fitted by identity

METHODS = ("fair", "znorm", "cohort")
METHOD_TITLES = {
    "raw": "raw similarity (no calibration)",
    "fair": "fair calibration (label-free, cluster z-norm)",
    "znorm": "Z-norm (symmetric, whole cohort)",
    "cohort": "nearest-impostor cohort (adaptive S-norm)",
    "installed": "the installed fair calibration",
}


def identity_folds(identities: Sequence[str], folds: int) -> IntArray:
    """A fixed fold per identity (CRC-32 of the name), the same in every run."""
    return np.array([zlib.crc32(str(v).encode()) % folds for v in identities], dtype=np.int64)


def crossfit_scores(
    vectors: npt.ArrayLike,
    identities: Sequence[str],
    i: IntArray,
    j: IntArray,
    scores: FloatArray,
    method: str,
    *,
    folds: int = 5,
    params: FitParams | None = None,
    cohort_top: int = 50,
) -> FloatArray:
    """``scores`` (pairs ``i[k], j[k]``) normalised by ``method``, each pair by a model
    fitted on the other identity folds only: neither face, nor anyone else of the same
    identity, was in the data its normalisation was learnt from. Only templates and
    identities go into a fit (never a group label).
    """
    if method not in METHODS:
        raise ValueError(f"unknown normalisation {method!r}; choose from {', '.join(METHODS)}")
    if folds < 3:
        raise ValueError("cross-fitting needs at least 3 identity folds")
    x = np.asarray(vectors, dtype=np.float64)
    names = np.asarray([str(v) for v in identities])
    fold = identity_folds(list(names), folds)
    fa, fb = fold[i], fold[j]
    out = np.empty_like(scores, dtype=np.float64)
    for a in range(folds):
        for b in range(a, folds):
            sel = np.flatnonzero(((fa == a) & (fb == b)) | ((fa == b) & (fb == a)))
            if sel.size == 0:
                continue
            train = (fold != a) & (fold != b)
            used = np.unique(np.concatenate([i[sel], j[sel]]))
            if method == "fair":
                model = fit_fair_calibration(
                    x[train], list(names[train]), None, source="cross-fit", params=params
                )
                st = model.image_stats(x[used])
                norm: Callable[[FloatArray, ImageStats, ImageStats], FloatArray] = model.normalise
            else:
                cohort = (
                    ZNorm.fit(x[train])
                    if method == "znorm"
                    else CohortNorm.fit(x[train], cohort_top)
                )
                st = cohort.image_stats(x[used])
                norm = cohort.normalise
            pos = np.searchsorted(used, np.concatenate([i[sel], j[sel]]))
            pa, pb = pos[: sel.size], pos[sel.size :]
            out[sel] = norm(
                scores[sel],
                ImageStats(st.mu[pa], st.sigma[pa]),
                ImageStats(st.mu[pb], st.sigma[pb]),
            )
    return out
