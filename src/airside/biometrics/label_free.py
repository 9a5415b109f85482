"""Label-free FMR -> threshold tables: fitted on templates of distinct people only.

A gallery's enrolled subjects are distinct people, so every pair of templates of two
different subjects is an impostor pair; templates of one subject are never paired (they
would be genuine pairs, and a gallery does not know that two of its subjects are not the
same person twice). The impostor scores of those pairs, measured where the system runs,
fit a table whose FNMR column is ``None``: there are no genuine pairs to measure it on.

The table keeps aggregates only (thresholds at FMRs and the number of pairs), never a
template. Scores are inner products, so templates may be given in any orthogonal transform
(a gallery's secret ``Q``: ``(Q a)·(Q b) = a·b``) with the same result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from airside.biometrics.calibration import CalibrationTable
from airside.biometrics.score_rates import fit_calibration

FloatArray = npt.NDArray[np.float64]

# The fit must see at least this many impostor pairs *of different people* per FMR it is to
# set: with N pairs the threshold at FMR f admits about f*N impostor scores, and with
# f*N = 10 the measured FMR has a relative standard error of about 1/sqrt(10) ~ 32%
# (Poisson), so the table stays well within 2x of its label; at f*N = 1 (what
# ``calibration.resolvable`` accepts) it rests on the single highest score. Pairs are
# counted between subjects, not templates: several templates of the same two people are
# not independent impostor pairs.
EVENTS_PER_TARGET = 10
# Beyond this many templates the fit scores a fixed random subset (n*(n-1)/2 pairs: 4.5
# million scores, 36 MB): the table is a distribution estimate and needs no more.
MAX_TEMPLATES = 3000


def subjects_needed(fmr_target: float) -> int:
    """The fewest distinct people whose pairs, n*(n-1)/2, number at least
    ``EVENTS_PER_TARGET / fmr_target`` (1e-3: 142 people; 1e-2: 46)."""
    pairs = EVENTS_PER_TARGET / float(fmr_target)
    n = math.ceil((1.0 + math.sqrt(1.0 + 8.0 * pairs)) / 2.0)
    while n > 2 and (n - 1) * (n - 2) / 2.0 >= pairs * (1.0 - 1e-12):
        n -= 1
    return max(2, n)


def subject_pairs(subjects: int) -> int:
    return subjects * (subjects - 1) // 2


def cross_subject_scores(
    vectors: npt.ArrayLike, owners: Sequence[object], *, block: int = 512
) -> FloatArray:
    """Scores (inner products) of every pair of rows owned by different subjects, each pair
    once. Computed in blocks so memory grows with the pairs kept, not a full Gram matrix."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[0] != len(owners):
        raise ValueError(f"{len(owners)} owners for vectors of shape {v.shape}")
    codes = np.unique(np.asarray([str(o) for o in owners]), return_inverse=True)[1]
    n = v.shape[0]
    out: list[FloatArray] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = v[start:stop] @ v[start:].T  # rows start..stop against start..n
        rows = np.arange(start, stop)[:, None]
        cols = np.arange(start, n)[None, :]
        keep = (cols > rows) & (codes[start:stop, None] != codes[None, start:])
        out.append(sims[keep].astype(np.float64))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)


def subset(owners: Sequence[object], limit: int = MAX_TEMPLATES, seed: int = 0) -> np.ndarray:
    """Indices of at most ``limit`` templates, every subject's first template first (so no
    one is left out while others keep several), the rest drawn at random (fixed seed)."""
    n = len(owners)
    if n <= limit:
        return np.arange(n)
    at: dict[str, int] = {}
    for i, o in enumerate(owners):
        at.setdefault(str(o), i)
    first = sorted(at.values())
    rng = np.random.default_rng(seed)
    if len(first) >= limit:
        return np.sort(rng.choice(np.asarray(first), size=limit, replace=False))
    rest = np.setdiff1d(np.arange(n), np.asarray(first))
    extra = rng.choice(rest, size=limit - len(first), replace=False)
    return np.sort(np.concatenate([np.asarray(first), extra]))


def fit_label_free(
    vectors: npt.ArrayLike, owners: Sequence[object], *, model: str, source: str
) -> CalibrationTable:
    """The FMR -> threshold table of the cross-subject pairs of ``vectors`` (FNMR ``None``).
    Raises ``ValueError`` when the pairs cannot resolve FMR 1e-1."""
    idx = subset(owners)
    v = np.asarray(vectors)[idx]
    who = [owners[int(i)] for i in idx]
    impostor = cross_subject_scores(v, who)
    return fit_calibration(np.zeros(0), impostor, model=model, source=source)
