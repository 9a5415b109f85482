"""In-domain FMR tables: does a table fitted where the system runs keep its FMR label?

The experiment behind ``services/gallery_calibration.py`` (docs/thresholds.md, "In-domain
tables"). On a labelled set from another domain than the shipped tables' (LFW web photos),
e.g. ORL or Yale studio portraits, each person's images are split at random into an *enrol*
half and a *test* half:

- the enrol half plays a gallery: its cross-subject pairs (different people, no label
  needed) fit a label-free table (``biometrics/label_free.py``), as a gallery's subjects do;
- the test half measures, at the threshold each table sets for an FMR label, the real FMR
  (its cross-subject pairs) and FNMR (its same-subject pairs), for the in-domain table and
  for the table shipped with the model.

A label is reported only where both halves resolve it: at least ``EVENTS_PER_TARGET``
expected false matches among the enrol half's impostor pairs (the fit) and the test half's
(the measurement). Pairs are counted between templates here: a set of 40 or 15 people has
too few pairs of *people* for the service's own rule, which is stricter. The split is
repeated ``splits`` times (seeded); rates are pooled over splits, and the worst split's FMR
ratio is kept beside the pooled one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from airside.biometrics.calibration import CalibrationTable, shipped_calibration
from airside.biometrics.label_free import EVENTS_PER_TARGET, fit_label_free
from airside.config import Settings
from airside.evaluation.datasets import read_identities
from airside.evaluation.verification import all_pairs, identity_templates
from airside.vision.analyzer import FacePolicy
from airside.vision.contract import EmbeddingContract

FloatArray = npt.NDArray[np.float64]
LABELS = (1e-2, 1e-3)


@dataclass
class Rates:
    """One table's threshold for one label, and what it did on the test halves (pooled)."""

    threshold: float  # the first split's (they differ per split for the in-domain table)
    false_matches: int
    impostors: int
    false_non_matches: int
    genuines: int
    worst_fmr: float  # the highest FMR of any one split

    @property
    def fmr(self) -> float:
        return self.false_matches / self.impostors

    @property
    def fnmr(self) -> float:
        return self.false_non_matches / self.genuines

    def as_dict(self, label: float) -> dict[str, Any]:
        return {
            **asdict(self),
            "fmr": self.fmr,
            "fmr_over_label": self.fmr / label,
            "worst_fmr_over_label": self.worst_fmr / label,
            "fnmr": self.fnmr,
        }


@dataclass
class LabelResult:
    label: float
    in_domain: Rates
    shipped: Rates | None  # None: no table ships for the model


@dataclass
class InDomainReport:
    dataset: str
    model: str
    images: int
    failures_to_enrol: int
    people: int
    splits: int
    enrol_impostors: int  # per split (the first)
    test_impostors: int
    test_genuines: int
    results: list[LabelResult] = field(default_factory=list)
    unresolved: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "results"}
        out["results"] = [
            {
                "label": r.label,
                "in_domain": r.in_domain.as_dict(r.label),
                "shipped": None if r.shipped is None else r.shipped.as_dict(r.label),
            }
            for r in self.results
        ]
        return out


def split_halves(identities: Sequence[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each person's rows shuffled (seeded) and cut in two: the first ``ceil(n/2)`` enrol,
    the rest test. A person with one image only enrols."""
    rng = np.random.default_rng(seed)
    who = np.asarray(identities)
    enrol: list[int] = []
    test: list[int] = []
    for person in sorted(set(identities)):
        rows = rng.permutation(np.flatnonzero(who == person))
        cut = (len(rows) + 1) // 2
        enrol.extend(int(r) for r in rows[:cut])
        test.extend(int(r) for r in rows[cut:])
    return np.asarray(sorted(enrol)), np.asarray(sorted(test))


def _count(scores: FloatArray, threshold: float, *, above: bool) -> int:
    return int(np.count_nonzero(scores >= threshold if above else scores < threshold))


def measure(
    vectors: npt.ArrayLike,
    identities: Sequence[str],
    *,
    shipped: CalibrationTable | None,
    model: str,
    dataset: str,
    labels: Sequence[float] = LABELS,
    splits: int = 5,
    seed: int = 0,
    failures_to_enrol: int = 0,
) -> InDomainReport:
    """The experiment on templates already computed (unit rows, one per image)."""
    x = np.asarray(vectors, dtype=np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = list(identities)
    report: InDomainReport | None = None
    acc: dict[float, list[Rates | None]] = {}
    for k in range(splits):
        enrol, test = split_halves(ids, seed + k)
        enrol_ids = [ids[i] for i in enrol]
        table = fit_label_free(x[enrol], enrol_ids, model=model, source=f"{dataset} enrol half")
        _, _, scores, same = all_pairs(x[test], [ids[i] for i in test])
        impostor, genuine = scores[~same], scores[same]
        if report is None:
            report = InDomainReport(
                dataset=dataset, model=model, images=len(ids) + failures_to_enrol,
                failures_to_enrol=failures_to_enrol, people=len(set(ids)), splits=splits,
                enrol_impostors=table.impostors, test_impostors=int(impostor.size),
                test_genuines=int(genuine.size),
            )  # fmt: skip
            for label in labels:
                fits = table.impostors * label >= EVENTS_PER_TARGET
                measurable = impostor.size * label >= EVENTS_PER_TARGET
                if fits and measurable and genuine.size:
                    acc[label] = [None, None]
                else:
                    report.unresolved.append(label)
        for label, pooled in acc.items():
            tables = (table, shipped)
            for j, t in enumerate(tables):
                if t is None:
                    continue
                thr = t.threshold_for(label)
                fm = _count(impostor, thr, above=True)
                fnm = _count(genuine, thr, above=False)
                prev = pooled[j]
                if prev is None:
                    pooled[j] = Rates(thr, fm, impostor.size, fnm, genuine.size, fm / impostor.size)
                else:
                    prev.false_matches += fm
                    prev.impostors += impostor.size
                    prev.false_non_matches += fnm
                    prev.genuines += genuine.size
                    prev.worst_fmr = max(prev.worst_fmr, fm / impostor.size)
    assert report is not None, "splits must be at least 1"
    for label, (own, ship) in acc.items():
        assert own is not None
        report.results.append(LabelResult(label, own, ship))
    return report


def run(
    identities_csv: Path,
    settings: Settings,
    contract: EmbeddingContract,
    *,
    labels: Sequence[float] = LABELS,
    splits: int = 5,
    seed: int = 0,
    policy: FacePolicy = "central",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> InDomainReport:
    """The experiment on a labelled identities file, with the analyzer ``settings`` give
    (templates from the evaluation cache, or computed on all cores); ``contract`` is that
    analyzer's, whose shipped table is the comparison."""
    ids = read_identities(identities_csv)
    it = identity_templates(
        ids, settings, contract, policy=policy, workers=workers, progress=progress
    )
    if len(set(it.identities)) < 2:
        raise ValueError(f"{identities_csv}: fewer than two people have a usable face")
    return measure(
        it.unit_vectors(),
        it.identities,
        shipped=shipped_calibration(contract),
        model=contract.fingerprint,
        dataset=str(identities_csv),
        labels=labels,
        splits=splits,
        seed=seed,
        failures_to_enrol=it.failures,
    )
