"""Calibration: turning a target false-match rate into a score threshold for one model.

A table ships with each model (``calibrations/*.json``) and can be rebuilt from any
labelled pairs with ``airside eval verify --calibrate``; one in the data directory takes
precedence over the shipped one. A table is valid only for the embedding contract it was
fitted on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from airside.biometrics.file_cache import FileCache
from airside.errors import NoCalibrationError
from airside.vision.contract import EmbeddingContract

FloatArray = npt.NDArray[np.float64]
_RATE_EPS = 1e-9
SHIPPED_DIR = Path(__file__).parent / "calibrations"


def resolvable(n: int, rate: float) -> bool:
    """Whether ``n`` samples can measure ``rate`` (at least one event expected)."""
    return n * rate >= 1.0 - _RATE_EPS


@dataclass
class CalibrationTable:
    """Score-threshold <-> FMR mapping for one model, fitted on an impostor set.

    Rows are ordered by decreasing FMR. ``model`` is the model/contract fingerprint the
    scores came from: a table is only valid for that exact model and preprocessing.
    ``impostors`` bounds what can be resolved: FMRs below ``1/impostors`` are refused.
    """

    model: str
    fmr: list[float]
    threshold: list[float]
    fnmr: list[float | None]
    impostors: int
    genuines: int
    source: str

    def __post_init__(self) -> None:
        """Reject inconsistent tables early rather than at lookup time."""
        if not self.fmr:
            raise ValueError("calibration table has no rows")
        if not (len(self.fmr) == len(self.threshold) == len(self.fnmr)):
            raise ValueError(
                "calibration table columns differ in length: "
                f"fmr={len(self.fmr)}, threshold={len(self.threshold)}, fnmr={len(self.fnmr)}"
            )
        if self.impostors < 1:
            raise ValueError(f"calibration table needs impostors >= 1, got {self.impostors}")
        fmr = np.asarray(self.fmr, dtype=np.float64)
        thr = np.asarray(self.threshold, dtype=np.float64)
        if not (np.all(np.isfinite(fmr)) and np.all(np.isfinite(thr))):
            raise ValueError("calibration table fmr/threshold values must be finite")
        if np.any((fmr <= 0.0) | (fmr >= 1.0)):
            raise ValueError("calibration table fmr values must lie in (0, 1)")
        order = np.argsort(-fmr, kind="stable")
        if np.any(np.diff(fmr[order]) == 0.0):
            raise ValueError("calibration table has duplicate fmr rows")
        if np.any(np.diff(thr[order]) < 0.0):
            raise ValueError("calibration thresholds must not decrease as FMR decreases")

    @property
    def finest_fmr(self) -> float:
        """The smallest FMR this table can set a threshold for."""
        return max(min(self.fmr), 1.0 / self.impostors)

    def _curve(self) -> tuple[FloatArray, FloatArray]:
        """log10(FMR) ascending with matching thresholds (descending), for interpolation."""
        fmr = np.asarray(self.fmr, dtype=np.float64)
        thr = np.asarray(self.threshold, dtype=np.float64)
        order = np.argsort(fmr)
        return np.log10(fmr[order]), thr[order]

    def threshold_for(self, fmr_target: float) -> float:
        """Threshold for an FMR target, interpolated linearly in log-FMR between rows.

        Raises ``ValueError`` for targets outside (0, 1), below the resolution ``1/impostors``
        (the data cannot support that claim), or outside the tabulated FMR range.
        """
        target = float(fmr_target)
        if not (0.0 < target < 1.0) or math.isnan(target):
            raise ValueError(f"FMR target must be in the open interval (0, 1), got {target!r}")
        if not resolvable(self.impostors, target):
            raise ValueError(
                f"FMR target {target:g} is below what this table can resolve: it was fitted on "
                f"{self.impostors} impostor scores, so the smallest measurable FMR is "
                f"1/{self.impostors} = {1.0 / self.impostors:.3g}; collect more impostor "
                "comparisons to calibrate lower"
            )
        log_fmr, thr = self._curve()
        lo, hi = 10.0 ** log_fmr[0], 10.0 ** log_fmr[-1]
        x = math.log10(target)
        slack = 1e-12
        if x < log_fmr[0] - slack or x > log_fmr[-1] + slack:
            raise ValueError(
                f"FMR target {target:g} is outside the calibrated range [{lo:.3g}, {hi:.3g}]"
            )
        return float(np.interp(x, log_fmr, thr))

    def fmr_for(self, score: float) -> float:
        """Estimated FMR at a threshold/score: the monotone inverse of :meth:`threshold_for`.

        Rows sharing a threshold collapse to their smallest FMR (the tightest bound at that
        threshold). Scores outside the tabulated thresholds are clamped to the end rows, so a
        score above the highest threshold reports the smallest tabulated FMR (an upper bound).
        """
        fmr = np.asarray(self.fmr, dtype=np.float64)
        thr = np.asarray(self.threshold, dtype=np.float64)
        order = np.lexsort((fmr, thr))  # by threshold, then FMR ascending within ties
        uniq, first = np.unique(thr[order], return_index=True)
        log_at = np.log10(fmr[order][first])  # decreasing, since FMR falls as threshold rises
        return float(10.0 ** np.interp(float(score), uniq, log_at))

    def to_json(self) -> dict[str, Any]:
        """Plain-dict form for ``json.dump``; floats are stored at full precision."""
        return {
            "model": self.model,
            "fmr": [float(v) for v in self.fmr],
            "threshold": [float(v) for v in self.threshold],
            "fnmr": [None if v is None else float(v) for v in self.fnmr],
            "impostors": int(self.impostors),
            "genuines": int(self.genuines),
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CalibrationTable:
        """Inverse of :meth:`to_json`, with a clear error for missing keys."""
        required = ("model", "fmr", "threshold", "fnmr", "impostors", "genuines", "source")
        missing = [key for key in required if key not in data]
        if missing:
            raise ValueError(f"calibration JSON is missing key(s): {', '.join(missing)}")
        return cls(
            model=str(data["model"]),
            fmr=[float(v) for v in data["fmr"]],
            threshold=[float(v) for v in data["threshold"]],
            fnmr=[None if v is None else float(v) for v in data["fnmr"]],
            impostors=int(data["impostors"]),
            genuines=int(data["genuines"]),
            source=str(data["source"]),
        )


def calibration_filename(contract: EmbeddingContract) -> str:
    """One file per contract: weights and preprocessing both change what a score means."""
    digest = hashlib.sha256(contract.fingerprint.encode()).hexdigest()[:16]
    return f"{contract.model_id}-v{contract.version}-{digest}.json"


def save_calibration(table: CalibrationTable, contract: EmbeddingContract, data_dir: Path) -> Path:
    """Write a deployment's own table (atomically) where :func:`load_calibration` prefers it."""
    path = deployed_calibration_path(contract, data_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # inside the 0700 data dir
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table.to_json(), indent=1))
    tmp.replace(path)
    _DEPLOYED.forget(path)
    return path


def weights_key(fingerprint: str) -> str:
    """What a score depends on: weights digest, dimension and preprocessing. The model id
    and version before the first ``/`` are the names an operator registered the file
    under, and do not change a score."""
    return fingerprint.split("/", 1)[1] if "/" in fingerprint else fingerprint


def shipped_calibration(contract: EmbeddingContract) -> CalibrationTable | None:
    """The table Airside ships for these exact weights and preprocessing, whatever name
    the model was registered under (dlib's ResNet; OpenCV Zoo's SFace)."""
    key = weights_key(contract.fingerprint)
    for table in _shipped_tables():
        if weights_key(table.model) == key:
            return replace(table, model=contract.fingerprint)
    return None


@functools.cache
def _shipped_tables() -> tuple[CalibrationTable, ...]:
    """Read once: they are package data."""
    return tuple(
        CalibrationTable.from_json(json.loads(path.read_text()))
        for path in sorted(SHIPPED_DIR.glob("*.json"))
    )


def _read_table(path: Path) -> CalibrationTable:
    return CalibrationTable.from_json(json.loads(path.read_text()))


_DEPLOYED: FileCache[CalibrationTable] = FileCache(_read_table)


def deployed_calibration_path(contract: EmbeddingContract, data_dir: Path) -> Path:
    return data_dir / "calibrations" / calibration_filename(contract)


def load_calibration(contract: EmbeddingContract, data_dir: Path | None = None) -> CalibrationTable:
    """The deployment's table if there is one, else the one shipped for the weights. The
    deployment's file is re-read when it changes (``FileCache``), like the fair one."""
    return resolve_calibration(contract, data_dir)[0]


DEPLOYMENT = "deployment"  # the origin of a table installed in the data directory
SHIPPED = "shipped"  # the origin prefix of a table shipped with Airside (``shipped:<model>``)


def resolve_calibration(
    contract: EmbeddingContract, data_dir: Path | None = None
) -> tuple[CalibrationTable, str]:
    """:func:`load_calibration`'s table and where it came from: ``"deployment"`` (the data
    directory's) or ``"shipped:<model id>"`` (fitted on LFW web photos)."""
    if data_dir is not None:
        path = deployed_calibration_path(contract, data_dir)
        table = _DEPLOYED.get(path)
        if table is not None:
            if table.model != contract.fingerprint:
                raise ValueError(
                    f"{path}: calibration was fitted for {table.model}, not {contract.fingerprint}"
                )
            return table, DEPLOYMENT
    shipped = shipped_calibration(contract)
    if shipped is not None:
        return shipped, f"{SHIPPED}:{contract.model_id}"
    digest16 = contract.weights_sha256[:16]
    other = [t.model for t in _shipped_tables() if weights_key(t.model).startswith(digest16)]
    hint = (
        f" Airside ships a table for these weights with other preprocessing "
        f"({weights_key(other[0])}): a detector that gives 5 landmarks, such as YuNet, "
        "produces it."
        if other
        else ""
    )
    raise NoCalibrationError(
        f"no calibration table for model {contract.fingerprint}: no score threshold can be "
        f"set with it. Fit one on labelled faces (docs/models.md).{hint}",
        details={"next": "calibration.fit"},
    )
