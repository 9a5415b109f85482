"""Score rates and the FMR -> threshold fit that every match decision rests on.

Fitting a calibration table is part of deciding (the service layer installs the table that
later decisions read), so it lives here in ``biometrics``; ``evaluation.metrics`` builds its
reports on the same functions. Terms as in ``evaluation/metrics.py`` (ISO/IEC 19795-1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from airside.biometrics.calibration import CalibrationTable, resolvable

FloatArray = npt.NDArray[np.float64]

# Relative slack for ``n * rate`` products so that e.g. 0.001 * 1000 counts as 1 sample even
# when the float product lands a hair below 1.
_RATE_EPS = 1e-9


def checked_scores(values: npt.ArrayLike, name: str, *, allow_empty: bool = False) -> FloatArray:
    """Coerce to a 1-D float64 array and reject NaN/inf, which would silently skew rates."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} scores are empty; at least one score is required")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name} scores contain {bad} non-finite value(s) (NaN or inf)")
    return arr


def check_rate(rate: float, name: str) -> float:
    """Rates are probabilities of an error; 0 and 1 are not meaningful operating points."""
    rate = float(rate)
    if not (0.0 < rate < 1.0) or math.isnan(rate):
        raise ValueError(f"{name} must be in the open interval (0, 1), got {rate!r}")
    return rate


def above(x: float) -> float:
    """Smallest float strictly greater than ``x``: a threshold that rejects a score of ``x``."""
    return float(np.nextafter(x, np.inf))


def frac_ge(sorted_scores: FloatArray, thresholds: FloatArray) -> FloatArray:
    """Fraction of ``sorted_scores`` that are ``>= t`` for each threshold ``t``."""
    n = sorted_scores.size
    below = np.searchsorted(sorted_scores, thresholds, side="left")
    return np.asarray((n - below) / n, dtype=np.float64)


def frac_lt(sorted_scores: FloatArray, thresholds: FloatArray) -> FloatArray:
    """Fraction of ``sorted_scores`` that are ``< t`` for each threshold ``t``."""
    below = np.searchsorted(sorted_scores, thresholds, side="left")
    return np.asarray(below / sorted_scores.size, dtype=np.float64)


def threshold_at_fmr(impostor: npt.ArrayLike, fmr: float) -> float:
    """Smallest threshold whose empirical FMR is ``<= fmr``, so FMR never exceeds the target.

    With ``n`` impostor scores the achievable FMRs are multiples of ``1/n`` (the resolution):
    the result admits at most ``floor(fmr * n)`` impostors. It is the float just above the
    highest rejected impostor score, hence "smallest". If ``fmr < 1/n`` no impostor may be
    admitted and the threshold lies just above the maximum impostor score (measured FMR 0,
    which does *not* demonstrate a true FMR of ``fmr``; see :func:`tar_at_far`).
    """
    return threshold_sorted(np.sort(checked_scores(impostor, "impostor")), check_rate(fmr, "fmr"))


def threshold_sorted(imp: FloatArray, target: float) -> float:
    """``threshold_at_fmr`` on already sorted, validated scores (sort once, query many)."""
    n = imp.size
    allowed = min(n, math.floor(n * target * (1.0 + _RATE_EPS)))
    rejected = n - allowed
    if rejected == 0:
        return float(imp[0])
    return above(float(imp[rejected - 1]))


def default_fmr_grid(n_impostors: int) -> list[float]:
    """1-2-5 log-spaced FMRs from 1e-1 down to the resolution limit ``1/n`` (included)."""
    limit = 1.0 / n_impostors
    grid: list[float] = []
    decade = 1e-1
    while True:
        for mantissa in (1.0, 0.5, 0.2):
            value = float(f"{mantissa * decade:.1e}")  # exact decimal, e.g. 0.002 not 0.0020001
            if value < limit * (1.0 - _RATE_EPS):
                if not grid or not math.isclose(grid[-1], limit, rel_tol=1e-9):
                    grid.append(limit)
                return grid
            grid.append(value)
        decade /= 10.0


def fit_calibration(
    genuine: npt.ArrayLike,
    impostor: npt.ArrayLike,
    model: str,
    source: str,
    fmr_grid: Sequence[float] | None = None,
) -> CalibrationTable:
    """Fit a :class:`CalibrationTable` so deployments pick thresholds by FMR, not raw score.

    Rows sit on a log-spaced FMR grid (1e-1, 5e-2, 2e-2, 1e-2, ...) down to ``1/len(impostor)``,
    each threshold from :func:`threshold_at_fmr` (FMR never exceeds the row's target). FNMR per
    row is recorded when genuine scores are given, else ``None``. A custom ``fmr_grid`` must
    only contain resolvable rates in (0, 1).
    """
    imp = np.sort(checked_scores(impostor, "impostor"))
    gen = np.sort(checked_scores(genuine, "genuine", allow_empty=True))
    n = imp.size
    if fmr_grid is None:
        if not resolvable(n, 1e-1):
            raise ValueError(
                f"calibration needs at least 10 impostor scores to resolve FMR 1e-1, got {n}"
            )
        grid = default_fmr_grid(n)
    else:
        grid = sorted({check_rate(v, "fmr_grid value") for v in fmr_grid}, reverse=True)
        if not grid:
            raise ValueError("fmr_grid is empty")
        unresolvable = [v for v in grid if not resolvable(n, v)]
        if unresolvable:
            raise ValueError(
                f"fmr_grid values {unresolvable} are below the resolution 1/{n} = {1.0 / n:.3g} "
                f"of {n} impostor scores"
            )
    thresholds = [threshold_sorted(imp, rate) for rate in grid]  # a few rows, not per score
    fnmr: list[float | None]
    if gen.size:
        fnmr = [float(v) for v in frac_lt(gen, np.asarray(thresholds, dtype=np.float64))]
    else:
        fnmr = [None] * len(grid)
    return CalibrationTable(
        model=model,
        fmr=list(grid),
        threshold=thresholds,
        fnmr=fnmr,
        impostors=n,
        genuines=int(gen.size),
        source=source,
    )
