"""Label-free fair score calibration, and the cohort normalisations it is compared with.

A face model does not score every region of face space alike: dlib's ResNet gives pairs of
two different Black people markedly higher similarity than pairs of two white people, so one
global threshold lets many more false matches through for some people than for others. The
fix must not read anyone's demographic attributes. This module implements a cluster-based
score normalisation in the family of Fair Score Normalization (Terhörst et al., IJCB 2020)
and FairCal (Salvador et al., ICLR 2022): unsupervised k-means regions of face space, and
per-region statistics of *impostor* scores, so that a threshold means the same false-match
rate wherever a pair of faces lies. It is fitted on templates and "who is who" only (or
distinct people, e.g. a gallery's enrolled subjects, where every cross pair is an
impostor pair); it never sees a demographic label.

How (``FairCalibration``; docs/fairness.md has the measurements that chose it). Two
stages, each "regions of face space, and per region the mean and standard deviation of the
scores of impostor pairs with *both* faces in it":

1. *Local*: k-means regions of the embedding itself (neighbourhoods of similar-looking
   people). A pair's score becomes the mean of its two faces' z-scores against their own
   regions' impostor statistics. This equalises how crowded a neighbourhood is.
2. *Broad*: k-means regions of the top ``dims`` whitened principal components, which follow
   the broad appearance factors that shift whole score distributions; the stage-1 scores of
   each region's impostor pairs give its statistics, and the pair's score is normalised
   again the same way. This is what removes the differential between groups.

Each stage is found ``restarts`` times (different k-means seeds) and a face's statistics
are averaged over them. Every region must hold at least ``min_cluster_identities`` people,
each weighing the same in its centroid, so no centroid describes one person. FSN's own
statistic (pairs with *either* face in the region) is dominated by pairs with the majority
when a group is rare, and did not move the differential on LFW; FairCal's per-region
calibration needs genuine pairs, which a gallery of distinct people does not have.

The calibrated score ``m + s * z`` is put back on the scale of a typical region's raw
scores, and a new FMR->threshold table is fitted on the calibrated scores of the
calibration set, so thresholds are still chosen by FMR.

The artefact holds aggregates only: centroids of groups of at least five people, a mean
vector and a 4-column projection, and two numbers per region. It is saved next to the
calibration tables in the data directory (``calibrations/*.fair.json``), keyed by the
embedding contract, and refused for any other contract.

``ZNorm`` (symmetric Z-norm) and ``CohortNorm`` (nearest-impostor cohort, adaptive S-norm)
are the classical alternatives. Both need a cohort of individual templates at scoring time,
so they are for comparison in evaluations only and are not deployed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from airside.biometrics.calibration import CalibrationTable, calibration_filename
from airside.biometrics.file_cache import FileCache
from airside.errors import AirsideError, ContractMismatchError
from airside.vision.contract import EmbeddingContract

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
# (genuine, impostor, model, source) -> table: evaluation.metrics.fit_calibration
TableFitter = Callable[[FloatArray, FloatArray, str, str], CalibrationTable]

METHOD = "fsn-2stage-kmeans-znorm/v1"
# Which calibration produced a score when no fair calibration is installed: the raw cosine
# similarity against the model's FMR->threshold table.
RAW = "none"

# Refusals: a set too small to estimate per-region statistics.
MIN_IDENTITIES = 100
MIN_IMPOSTOR_PAIRS_PER_REGION = 50


class CalibrationSetError(AirsideError):
    """The calibration set cannot support a fair calibration (too small, wrong contract)."""

    code = "bad_calibration_set"


@dataclass(frozen=True)
class FitParams:
    """What shapes a fit. The defaults were chosen on LFW (docs/fairness.md)."""

    # Stage 1: regions of the embedding itself (neighbourhoods of similar-looking people).
    local_clusters: int = 40
    # Stage 2: regions of the top ``dims`` whitened principal components (broad appearance).
    dims: int = 4
    clusters: int = 40
    restarts: int = 4
    min_cluster_identities: int = 5
    seed: int = 0
    # Pairs for the FMR->threshold table come from at most this many images (all pairs
    # of 8000 images: 32 million comparisons).
    max_table_images: int = 8000

    def __post_init__(self) -> None:
        if not 1 <= self.dims <= 64:
            raise ValueError("dims must be between 1 and 64")
        if self.clusters < 2 or self.local_clusters < 2:
            raise ValueError("clusters must be at least 2")
        if self.restarts < 1:
            raise ValueError("restarts must be at least 1")
        if self.min_cluster_identities < 2:
            raise ValueError("min_cluster_identities must be at least 2")


# ---------------------------------------------------------------------------------------------
# input checks


def _unit_rows(vectors: npt.ArrayLike, dim: int | None) -> FloatArray:
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2:
        raise CalibrationSetError("templates must be a 2-D array (one row per face)")
    if dim is not None and x.shape[1] != dim:
        raise CalibrationSetError(
            f"templates have {x.shape[1]} values but the contract says {dim}: they come from "
            "another model; build the calibration from templates of this model"
        )
    if not np.all(np.isfinite(x)):
        raise CalibrationSetError("templates contain non-finite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0.0):
        raise CalibrationSetError("a template is all zeros")
    return np.asarray(x / norms, dtype=np.float64)


def _normalised(vectors: npt.ArrayLike, dim: int) -> FloatArray:
    """Rows scaled to unit length (the space the projection was fitted in)."""
    x = np.asarray(vectors, dtype=np.float64).reshape(-1, dim)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float64)


def _identity_codes(identities: Sequence[str], n: int) -> IntArray:
    if len(identities) != n:
        raise CalibrationSetError(f"{len(identities)} identities for {n} templates")
    if any(not str(i).strip() for i in identities):
        raise CalibrationSetError("every template needs an identity (who it is)")
    _, codes = np.unique(np.asarray([str(i) for i in identities]), return_inverse=True)
    return np.asarray(codes, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# k-means with a minimum number of people per region


def _assign(z: FloatArray, centroids: FloatArray) -> IntArray:
    """Nearest centroid (Euclidean) of each row."""
    d2 = (z * z).sum(1)[:, None] - 2.0 * z @ centroids.T + (centroids * centroids).sum(1)[None, :]
    return np.asarray(np.argmin(d2, axis=1), dtype=np.int64)


def _people(labels: IntArray, codes: IntArray, k: int) -> IntArray:
    """Distinct identities per cluster (distinct (cluster, identity) pairs, counted)."""
    base = int(codes.max()) + 1
    return np.bincount(np.unique(labels * base + codes) // base, minlength=k)


def kmeans(
    z: FloatArray,
    k: int,
    *,
    seed: int,
    codes: IntArray | None = None,
    min_identities: int = 1,
    iterations: int = 100,
) -> tuple[FloatArray, IntArray]:
    """Lloyd's k-means with k-means++ seeding (deterministic for a seed).

    With ``codes`` (who each row is), every person weighs the same in a centroid however
    many images they have, and a cluster holding fewer than ``min_identities`` people is
    dissolved (its centroid dropped, its rows reassigned) while the iterations go on: every
    centroid returned is an equal-weight mean over at least that many people.
    """
    n = z.shape[0]
    k = min(k, n)
    weight = np.ones(n)
    if codes is not None:
        weight = 1.0 / np.bincount(codes)[codes]
    rng = np.random.default_rng(seed)
    centroids = [z[int(rng.integers(n))]]
    d2 = np.full(n, np.inf)
    for _ in range(1, k):
        d2 = np.minimum(d2, ((z - centroids[-1]) ** 2).sum(1))
        total = float(d2.sum())
        pick = int(rng.integers(n)) if total <= 0.0 else int(rng.choice(n, p=d2 / total))
        centroids.append(z[pick])
    c = np.stack(centroids)
    labels = _assign(z, c)
    for _ in range(iterations):
        if codes is not None and min_identities > 1:
            people = _people(labels, codes, c.shape[0])
            small = np.flatnonzero(people < min_identities)
            if small.size and small.size < c.shape[0]:
                c = np.delete(c, small[np.argmin(people[small])], axis=0)
                labels = _assign(z, c)
                continue
        mass = np.bincount(labels, weights=weight, minlength=c.shape[0])
        sums = np.zeros_like(c)
        np.add.at(sums, labels, z * weight[:, None])
        keep = mass > 0
        c = sums[keep] / mass[keep, None]
        new_labels = _assign(z, c)
        if np.array_equal(new_labels, labels) and keep.all():
            break
        labels = new_labels
    return c, labels


# ---------------------------------------------------------------------------------------------
# the fair calibration: two stages of per-region impostor statistics


@dataclass(frozen=True)
class ImageStats:
    """Each face's region statistics, one column per stage (averaged over the restarts):
    what its scores are measured against. Shape ``(..., stages)``."""

    mu: FloatArray
    sigma: FloatArray


@dataclass
class Stage:
    """One normalisation stage: regions of a space (the embedding itself when ``basis`` is
    None, else a whitened principal-component projection), found ``restarts`` times, and
    the mean and std of the impostor scores (as the stage receives them) within each."""

    mean: FloatArray  # (dim,)
    basis: FloatArray | None  # (dim, dims), or None: the unit embedding itself
    centroids: list[FloatArray]  # per restart: (k_r, space dims)
    mu: list[FloatArray]  # per restart: (k_r,)
    sigma: list[FloatArray]  # per restart: (k_r,)

    def project(self, x: FloatArray) -> FloatArray:
        return x if self.basis is None else (x - self.mean) @ self.basis

    def transformed(self, forward: Callable[[np.ndarray], np.ndarray]) -> Stage:
        """This stage for vectors in an orthogonal transform ``v -> Q v``: the centroids
        (full space) or the projection (``(Qx - Q mean) . (Q basis) = (x - mean) . basis``)
        are carried into the transformed space; the transform is never undone."""
        if self.basis is None:
            cents = [np.asarray(forward(c), dtype=np.float64) for c in self.centroids]
            return Stage(self.mean, None, cents, self.mu, self.sigma)
        mean_t = np.asarray(forward(self.mean[None, :]), dtype=np.float64)[0]
        basis_t = np.asarray(forward(self.basis.T), dtype=np.float64).T
        return Stage(mean_t, basis_t, self.centroids, self.mu, self.sigma)

    def stats(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        z = self.project(x)
        mu = np.zeros(x.shape[0])
        sd = np.zeros(x.shape[0])
        for c, m, s in zip(self.centroids, self.mu, self.sigma, strict=True):
            labels = _assign(z, c)
            mu += m[labels]
            sd += s[labels]
        r = len(self.centroids)
        return mu / r, sd / r

    def extremes(self) -> tuple[float, float, float]:
        """Smallest mean, smallest and largest std over all regions (for search bounds)."""
        return (
            min(float(m.min()) for m in self.mu),
            min(float(s.min()) for s in self.sigma),
            max(float(s.max()) for s in self.sigma),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": [float(v) for v in self.mean],
            "basis": None if self.basis is None else [[float(v) for v in r] for r in self.basis],
            "centroids": [[[float(v) for v in row] for row in c] for c in self.centroids],
            "mu": [[float(v) for v in m] for m in self.mu],
            "sigma": [[float(v) for v in s] for s in self.sigma],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stage:
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float64),
            basis=None if data["basis"] is None else np.asarray(data["basis"], dtype=np.float64),
            centroids=[np.asarray(c, dtype=np.float64) for c in data["centroids"]],
            mu=[np.asarray(m, dtype=np.float64) for m in data["mu"]],
            sigma=[np.asarray(s, dtype=np.float64) for s in data["sigma"]],
        )

    def validate(self, dim: int) -> None:
        if self.mean.shape != (dim,):
            raise ValueError("fair calibration stage has the wrong dimension")
        space = dim if self.basis is None else self.basis.shape[1]
        if self.basis is not None and self.basis.shape[0] != dim:
            raise ValueError("fair calibration projection has the wrong shape")
        if not (len(self.centroids) == len(self.mu) == len(self.sigma) >= 1):
            raise ValueError("fair calibration restarts are inconsistent")
        for c, m, s in zip(self.centroids, self.mu, self.sigma, strict=True):
            if c.ndim != 2 or c.shape[1] != space or not c.shape[0] == m.shape[0] == s.shape[0]:
                raise ValueError("fair calibration regions are inconsistent")
            if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s)) and np.all(s > 0)):
                raise ValueError("fair calibration statistics must be finite, sigma > 0")


def _z(v: FloatArray, a_mu: Any, a_sd: Any, b_mu: Any, b_sd: Any) -> FloatArray:
    """The mean of the two faces' z-scores of ``v``."""
    return np.asarray(0.5 * ((v - a_mu) / a_sd + (v - b_mu) / b_sd), dtype=np.float64)


@dataclass
class FairCalibration:
    """Two stages of per-region impostor statistics, and the FMR table of the result."""

    model: str
    method: str
    stages: list[Stage]
    scale: tuple[float, float]  # (m, s): calibrated = m + s * z
    table: CalibrationTable | None
    source: str
    images: int
    identities: int
    params: FitParams = field(default_factory=FitParams)
    created: str = ""

    @property
    def dim(self) -> int:
        return int(self.stages[0].mean.shape[0])

    @property
    def fingerprint(self) -> str:
        """A short digest naming exactly this calibration (recorded with every score)."""
        doc = self.to_json()
        doc.pop("created", None)
        blob = json.dumps(doc, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def name(self) -> str:
        """What results record as the calibration that produced their scores."""
        return f"{self.method}:{self.fingerprint}"

    @property
    def regions(self) -> list[list[int]]:
        """Regions per restart, per stage."""
        return [[int(c.shape[0]) for c in st.centroids] for st in self.stages]

    # -- scoring -------------------------------------------------------------------------------

    def _stats(self, x: FloatArray, stages: Sequence[Stage]) -> ImageStats:
        cols = [st.stats(x) for st in stages]
        return ImageStats(
            np.stack([c[0] for c in cols], axis=-1), np.stack([c[1] for c in cols], axis=-1)
        )

    def image_stats(self, vectors: npt.ArrayLike) -> ImageStats:
        """Region statistics of plain (untransformed) templates."""
        return self._stats(_normalised(vectors, self.dim), self.stages)

    def image_stats_transformed(
        self, vectors: npt.ArrayLike, forward: Callable[[np.ndarray], np.ndarray]
    ) -> ImageStats:
        """Region statistics of templates kept in a gallery's secret orthogonal transform
        (``forward``: ``v -> Q v``), computed without undoing the transform."""
        stages = [st.transformed(forward) for st in self.stages]
        return self._stats(_normalised(vectors, self.dim), stages)

    def normalise(self, scores: npt.ArrayLike, a: ImageStats, b: ImageStats) -> FloatArray:
        """Calibrated scores of pairs (elementwise: ``scores[i]`` pairs ``a[i]`` with
        ``b[i]``; either side may be a single face, broadcast against the other)."""
        v = np.asarray(scores, dtype=np.float64)
        for k in range(len(self.stages)):
            v = _z(v, a.mu[..., k], a.sigma[..., k], b.mu[..., k], b.sigma[..., k])
        m, sc = self.scale
        return np.asarray(m + sc * v, dtype=np.float64)

    def upper_bound(self, score: float, probe: ImageStats) -> float:
        """The highest calibrated score any face could reach with a raw score ``<= score``
        against this probe (each stage is increasing in its input; ``(v - mu) / sigma``
        is largest for the smallest mean and, by sign, the smallest or largest std)."""
        v = float(score)
        for k, st in enumerate(self.stages):
            mu_min, sd_min, sd_max = st.extremes()
            other = max((v - mu_min) / sd_min, (v - mu_min) / sd_max)
            own = (v - float(np.ravel(probe.mu[..., k])[0])) / float(
                np.ravel(probe.sigma[..., k])[0]
            )
            v = 0.5 * (own + other)
        m, sc = self.scale
        return m + sc * v

    # -- persistence ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "fair-calibration",
            "model": self.model,
            "method": self.method,
            "stages": [st.to_json() for st in self.stages],
            "scale": [float(self.scale[0]), float(self.scale[1])],
            "table": None if self.table is None else self.table.to_json(),
            "source": self.source,
            "images": int(self.images),
            "identities": int(self.identities),
            "params": asdict(self.params),
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FairCalibration:
        if data.get("kind") != "fair-calibration":
            raise ValueError("not a fair calibration file")
        if data.get("method") != METHOD:
            raise ValueError(
                f"fair calibration method {data.get('method')!r} is not supported "
                f"(this version reads {METHOD!r}); rebuild it"
            )
        try:
            cal = cls(
                model=str(data["model"]),
                method=str(data["method"]),
                stages=[Stage.from_json(s) for s in data["stages"]],
                scale=(float(data["scale"][0]), float(data["scale"][1])),
                table=None if data["table"] is None else CalibrationTable.from_json(data["table"]),
                source=str(data["source"]),
                images=int(data["images"]),
                identities=int(data["identities"]),
                params=FitParams(**data["params"]),
                created=str(data.get("created", "")),
            )
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError(f"fair calibration file is malformed: {e}") from None
        cal.validate()
        return cal

    def validate(self) -> None:
        if not self.stages:
            raise ValueError("fair calibration has no stages")
        for st in self.stages:
            st.validate(self.dim)
        if not (self.scale[1] > 0 and math.isfinite(self.scale[0])):
            raise ValueError("fair calibration scale must be finite and positive")
        if self.table is not None and self.table.model != self.model:
            raise ValueError("fair calibration table belongs to another model")


def _pca(x: FloatArray, dims: int) -> tuple[FloatArray, FloatArray]:
    mean = x.mean(axis=0)
    _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
    d = min(dims, vt.shape[0])
    spread = sv[:d] / math.sqrt(x.shape[0])
    spread = np.where(spread > 0, spread, 1.0)
    return mean, np.asarray(vt[:d].T / spread, dtype=np.float64)


def _within_pairs(x: FloatArray, codes: IntArray, rows: IntArray) -> tuple[IntArray, IntArray]:
    """Impostor pairs (global row indices) with both faces among ``rows``."""
    upper = np.triu(codes[rows][:, None] != codes[rows][None, :], 1)
    a, b = np.nonzero(upper)
    return rows[a], rows[b]


def _fit_stage(
    x: FloatArray,
    codes: IntArray,
    space: tuple[FloatArray, FloatArray | None],
    k: int,
    p: FitParams,
    previous: Callable[[FloatArray, IntArray, IntArray], FloatArray],
) -> tuple[Stage, float, float]:
    """Regions of ``space`` (restarts), each with the mean and std of ``previous(score)``
    over its impostor pairs. Returns the stage and the pooled mean and std."""
    mean, basis = space
    stage = Stage(mean, basis, [], [], [])
    z = stage.project(x)
    people = int(np.unique(codes).size)
    pooled: list[tuple[float, float, int]] = []
    for r in range(p.restarts):
        c, labels = kmeans(
            z, k, seed=p.seed + r, codes=codes, min_identities=p.min_cluster_identities
        )
        if _people(labels, codes, len(c)).min() < p.min_cluster_identities:
            raise CalibrationSetError(
                f"the calibration set ({people} people) cannot be split into regions of at "
                f"least {p.min_cluster_identities} people; add more people"
            )
        mu = np.zeros(len(c))
        sd = np.zeros(len(c))
        count = np.zeros(len(c), dtype=np.int64)
        for j in range(len(c)):
            a, b = _within_pairs(x, codes, np.flatnonzero(labels == j))
            if a.size:
                v = previous(np.einsum("ij,ij->i", x[a], x[b]), a, b)
                mu[j], sd[j], count[j] = float(v.mean()), float(v.std()), a.size
        ok = (count >= MIN_IMPOSTOR_PAIRS_PER_REGION) & (sd > 0)
        if not ok.any():
            raise CalibrationSetError(
                "no region of the calibration set has enough impostor pairs "
                f"({MIN_IMPOSTOR_PAIRS_PER_REGION}); add more people"
            )
        # A region too thin to estimate from borrows the set-wide (pair-weighted) values.
        w = count[ok].astype(np.float64)
        m_all = float(np.average(mu[ok], weights=w))
        s_all = float(np.average(sd[ok], weights=w))
        stage.centroids.append(c)
        stage.mu.append(np.where(ok, mu, m_all))
        stage.sigma.append(np.where(ok, sd, s_all))
        pooled.append((m_all, s_all, int(w.sum())))
    return stage, float(np.mean([q[0] for q in pooled])), float(np.mean([q[1] for q in pooled]))


def fit_fair_calibration(
    vectors: npt.ArrayLike,
    identities: Sequence[str],
    contract: EmbeddingContract | None,
    *,
    source: str,
    params: FitParams | None = None,
    table_fitter: TableFitter | None = None,
    min_identities: int | None = None,
) -> FairCalibration:
    """Fit on templates and who is who (``identities``: any label per template, the same
    for the same person, e.g. a subject reference). Nothing else is read.

    Refuses (``CalibrationSetError``) templates of another contract's dimension, and a set of
    fewer than ``min_identities`` people. ``table_fitter`` (``evaluation.metrics.
    fit_calibration``) fits the FMR->threshold table of the calibrated scores that a
    deployment needs; without it there is none (cross-validated evaluations set thresholds
    on their own pairs).
    """
    p = params or FitParams()
    dim = contract.dim if contract is not None else None
    x = _unit_rows(vectors, dim)
    codes = _identity_codes(identities, x.shape[0])
    people = int(np.unique(codes).size)
    need = max(MIN_IDENTITIES if min_identities is None else min_identities,
               2 * p.min_cluster_identities)  # fmt: skip
    if people < need:
        raise CalibrationSetError(
            f"the calibration set holds {people} people; a fair calibration needs at least "
            f"{need} (per-region statistics from fewer are noise)"
        )
    # Fewer regions for small sets: each must hold enough people for its statistics.
    k_cap = max(2, people // (5 * p.min_cluster_identities))
    zero = np.zeros(x.shape[1])
    local, m1, s1 = _fit_stage(
        x, codes, (zero, None), min(p.local_clusters, k_cap), p, lambda v, a, b: v
    )
    mu1, sd1 = local.stats(x)

    def after_local(v: FloatArray, a: IntArray, b: IntArray) -> FloatArray:
        return _z(v, mu1[a], sd1[a], mu1[b], sd1[b])

    broad, _, _ = _fit_stage(x, codes, _pca(x, p.dims), min(p.clusters, k_cap), p, after_local)
    cal = FairCalibration(
        model=contract.fingerprint if contract is not None else "",
        method=METHOD,
        stages=[local, broad],
        scale=(m1, s1),
        table=None,
        source=source,
        images=int(x.shape[0]),
        identities=people,
        params=p,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if table_fitter is not None:
        gen, imp = calibrated_pair_scores(cal, x, codes)
        if imp.size < 10:
            raise CalibrationSetError("the calibration set has fewer than 10 impostor pairs")
        cal.table = table_fitter(gen, imp, cal.model, source)
    return cal


def calibrated_pair_scores(
    cal: FairCalibration, x: FloatArray, codes: IntArray
) -> tuple[FloatArray, FloatArray]:
    """Calibrated genuine and impostor scores of every pair of (up to max_table_images)
    calibration templates: what the FMR->threshold table is fitted on."""
    n = x.shape[0]
    limit = cal.params.max_table_images
    if n > limit:
        pick = np.sort(np.random.default_rng(cal.params.seed).choice(n, limit, replace=False))
        x, codes = x[pick], codes[pick]
        n = limit
    stats = cal.image_stats(x)
    gen: list[FloatArray] = []
    imp: list[FloatArray] = []
    xf = x.astype(np.float32)
    block = 512
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = (xf[start:stop] @ xf.T).astype(np.float64)
        rows = np.arange(start, stop)
        upper = np.arange(n)[None, :] > rows[:, None]
        calib = cal.normalise(
            sims,
            ImageStats(stats.mu[rows][:, None, :], stats.sigma[rows][:, None, :]),
            ImageStats(stats.mu[None, :, :], stats.sigma[None, :, :]),
        )
        same = codes[rows][:, None] == codes[None, :]
        gen.append(calib[upper & same])
        imp.append(calib[upper & ~same])
    return np.concatenate(gen), np.concatenate(imp)


# ---------------------------------------------------------------------------------------------
# storage beside the calibration tables


def fair_calibration_path(contract: EmbeddingContract, data_dir: Path) -> Path:
    name = calibration_filename(contract).removesuffix(".json") + ".fair.json"
    return data_dir / "calibrations" / name


def save_fair_calibration(
    cal: FairCalibration, contract: EmbeddingContract, data_dir: Path
) -> Path:
    """Write atomically where :func:`load_fair_calibration` finds it (one per contract)."""
    if cal.model != contract.fingerprint:
        raise ContractMismatchError(
            f"this fair calibration was fitted for {cal.model}, not {contract.fingerprint}"
        )
    if cal.table is None:
        raise ValueError("a fair calibration without its FMR table cannot be deployed")
    path = fair_calibration_path(contract, data_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cal.to_json()) + "\n")
    tmp.replace(path)
    _CACHE.forget(path)
    return path


def remove_fair_calibration(contract: EmbeddingContract, data_dir: Path) -> bool:
    path = fair_calibration_path(contract, data_dir)
    _CACHE.forget(path)
    if path.exists():
        path.unlink()
        return True
    return False


def _read_fair_calibration(path: Path) -> FairCalibration:
    try:
        return FairCalibration.from_json(json.loads(path.read_text()))
    except ValueError as e:  # JSONDecodeError included
        raise CalibrationSetError(
            f"{path}: unreadable fair calibration ({e}); rebuild it or remove it"
        ) from None


_CACHE: FileCache[FairCalibration] = FileCache(_read_fair_calibration)


def load_fair_calibration(
    contract: EmbeddingContract, data_dir: Path | None
) -> FairCalibration | None:
    """The deployment's fair calibration for ``contract``, or ``None`` when there is none.

    Re-read when the file changes (``FileCache``), so a long-running process picks up a
    rebuilt calibration at its next decision. A file for another contract, or one that
    does not parse, is refused loudly (``ContractMismatchError`` / ``CalibrationSetError``)
    rather than silently ignored: decisions would otherwise change meaning without notice.
    """
    if data_dir is None:
        return None
    path = fair_calibration_path(contract, data_dir)
    cal = _CACHE.get(path)
    if cal is not None and cal.model != contract.fingerprint:
        raise ContractMismatchError(
            f"{path}: fair calibration was fitted for {cal.model}, not {contract.fingerprint}"
        )
    return cal


# ---------------------------------------------------------------------------------------------
# classical cohort normalisations (evaluation only: they need a cohort of templates)


@dataclass
class ZNorm:
    """Symmetric Z-norm (S-norm): each face's scores against an impostor cohort give it a
    mean and standard deviation; a pair's score is the mean of its two z-scores."""

    cohort: FloatArray

    @classmethod
    def fit(cls, vectors: npt.ArrayLike) -> ZNorm:
        return cls(_unit_rows(vectors, None).astype(np.float32))

    def image_stats(self, vectors: npt.ArrayLike) -> ImageStats:
        x = _unit_rows(vectors, self.cohort.shape[1]).astype(np.float32)
        mu = np.empty(x.shape[0])
        sd = np.empty(x.shape[0])
        for start in range(0, x.shape[0], 1024):
            sims = (x[start : start + 1024] @ self.cohort.T).astype(np.float64)
            mu[start : start + 1024], sd[start : start + 1024] = self._row_stats(sims)
        return ImageStats(mu, np.where(sd > 0, sd, 1e-6))

    def _row_stats(self, sims: FloatArray) -> tuple[FloatArray, FloatArray]:
        return sims.mean(axis=1), sims.std(axis=1)

    @staticmethod
    def normalise(scores: npt.ArrayLike, a: ImageStats, b: ImageStats) -> FloatArray:
        s = np.asarray(scores, dtype=np.float64)
        return np.asarray(0.5 * ((s - a.mu) / a.sigma + (s - b.mu) / b.sigma), dtype=np.float64)


@dataclass
class CohortNorm(ZNorm):
    """Nearest-impostor cohort normalisation (adaptive S-norm): like :class:`ZNorm`, but
    each face's statistics come from its ``top`` most similar cohort faces only, the
    impostors it is most likely to be confused with."""

    top: int = 50

    @classmethod
    def fit(cls, vectors: npt.ArrayLike, top: int = 50) -> CohortNorm:
        if top < 2:
            raise ValueError("the nearest-impostor cohort needs top >= 2")
        return cls(_unit_rows(vectors, None).astype(np.float32), top)

    def _row_stats(self, sims: FloatArray) -> tuple[FloatArray, FloatArray]:
        k = min(self.top, sims.shape[1])
        nearest = -np.partition(-sims, k - 1, axis=1)[:, :k]
        return nearest.mean(axis=1), nearest.std(axis=1)
