"""Fitting the calibrations that decisions rest on: the FMR -> threshold table of the model
in use (``fit_fmr_table``) and its fair calibration (built, inspected, removed).

A fair calibration (``biometrics/fair_calibration.py``, docs/fairness.md) belongs to one
embedding contract and is fitted on templates and who is who only; no demographic attribute
is read, accepted or stored here. It can be built

- from labelled face images (``airside calibrate --identities IDS.csv``): the CLI computes
  the templates (cached, on all cores) and hands them over with their identities; or
- from a gallery's enrolled subjects (``airside calibrate --gallery NAME``): distinct
  people, so every cross pair is an impostor pair, captured by the deployment's own
  cameras. Templates are decrypted and taken out of the gallery's transform in memory only;
  the calibration keeps aggregates, never a template. With ``own=True`` the same fit is
  kept as the gallery's own (a row of ``gallery_fair_calibrations``, replaced by a refit,
  deleted with the gallery) instead of the contract-wide file: decisions against that
  gallery use it first (``services/matching.py``), other galleries are unaffected.

Fitting, building or removing either changes what every later score means, so each is an
administrator action (``calibration.fit``, ``calibration.build``, ``calibration.remove``),
audited. Both files are read through one ``FileCache`` each, so running processes follow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from airside.biometrics.calibration import CalibrationTable, deployed_calibration_path
from airside.biometrics.fair_calibration import (
    CalibrationSetError,
    FairCalibration,
    FitParams,
    fair_calibration_path,
    fit_fair_calibration,
    load_fair_calibration,
    remove_fair_calibration,
    save_fair_calibration,
)
from airside.biometrics.score_rates import fit_calibration
from airside.errors import AirsideError, NotFoundError
from airside.governance import audit
from airside.governance.principals import Principal
from airside.governance.template_protection import StoredTemplate
from airside.services.app import Airside
from airside.services.authz import authorize, authorize_gallery
from airside.services.gallery_view import GalleryView
from airside.store.tables import GalleryFairCalibration
from airside.store.tables import Template as TemplateRow
from airside.vision.contract import EmbeddingContract, require_same

FIT_TABLE = "calibration.fit"
BUILD = "calibration.build"
REMOVE = "calibration.remove"
SHOW = "calibration.show"
# How results and records name a gallery's own fair calibration:
# "gallery:<gallery>/<method>:<fingerprint>" (the contract-wide one: "<method>:<fingerprint>").
OWN_PREFIX = "gallery:"


@dataclass
class OwnFairCalibration(FairCalibration):
    """A gallery's own fair calibration: the same calibration, named after its gallery in
    results and records; fitted on the gallery's own subjects, its table is in the domain
    the gallery decides in."""

    gallery: str = ""

    @property
    def name(self) -> str:
        return f"{OWN_PREFIX}{self.gallery}/{super().name}"


@dataclass
class CalibrationSummary:
    """What was built (or is installed): enough to judge it, nothing about anyone."""

    name: str
    model: str
    path: str
    source: str
    images: int
    identities: int
    regions: list[list[int]]  # per stage, per restart
    impostor_pairs: int
    genuine_pairs: int
    finest_fmr: float
    threshold_at_1e3: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarise(cal: FairCalibration, path: str) -> CalibrationSummary:
    table = cal.table
    t3: float | None = None
    if table is not None:
        try:
            t3 = round(table.threshold_for(1e-3), 6)
        except ValueError:
            t3 = None
    return CalibrationSummary(
        name=cal.name,
        model=cal.model,
        path=path,
        source=cal.source,
        images=cal.images,
        identities=cal.identities,
        regions=cal.regions,
        impostor_pairs=0 if table is None else table.impostors,
        genuine_pairs=0 if table is None else table.genuines,
        finest_fmr=float("nan") if table is None else table.finest_fmr,
        threshold_at_1e3=t3,
    )


def _fitter(genuine: np.ndarray, impostor: np.ndarray, model: str, source: str) -> Any:
    return fit_calibration(genuine, impostor, model=model, source=source)


@dataclass
class TableSummary:
    """An FMR -> threshold table that was fitted: where it went and what it rests on."""

    path: str
    installed: bool  # in the data directory, where decisions read it
    model: str
    source: str
    impostors: int
    genuines: int
    finest_fmr: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def may_fit_table(app: Airside, principal: Principal) -> None:
    """Refuse (and audit) a caller who may not fit a table, before the scores that would
    feed it are computed (an evaluation run can take hours)."""
    authorize(app, principal, FIT_TABLE)


def fit_fmr_table(
    app: Airside,
    principal: Principal,
    genuine: np.ndarray,
    impostor: np.ndarray,
    contract: EmbeddingContract,
    *,
    source: str,
    out: Path | None = None,
) -> tuple[CalibrationTable, TableSummary]:
    """Fit the FMR -> threshold table of ``contract`` from labelled scores and install it in
    the data directory, where every later decision with that model reads it (or, with
    ``out``, only write it there). An administrator action (``calibration.fit``), audited
    in the same transaction as the file's move into place: a table is never in use without
    its record."""
    authorize(app, principal, FIT_TABLE)
    try:
        table = fit_calibration(genuine, impostor, model=contract.fingerprint, source=source)
    except ValueError as e:
        err = CalibrationSetError(str(e))
        app.audit_refusal(principal, FIT_TABLE, err, extra={"source": source})
        raise err from None
    path = out if out is not None else deployed_calibration_path(contract, app.settings.data_dir)
    summary = TableSummary(
        path=str(path), installed=out is None, model=contract.fingerprint, source=source,
        impostors=table.impostors, genuines=table.genuines, finest_fmr=table.finest_fmr,
    )  # fmt: skip
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table.to_json(), indent=1) + "\n")
    except OSError as e:
        unwritable = AirsideError(
            f"cannot write the calibration table to {path}: {e.strerror}", code="cannot_write"
        )
        app.audit_refusal(principal, FIT_TABLE, unwritable, extra={"source": source})
        raise unwritable from None
    try:
        with app.session() as s:
            audit.append(
                s, principal, FIT_TABLE, decision="installed" if out is None else "written",
                result={k: v for k, v in summary.as_dict().items() if k != "path"},
            )  # fmt: skip
            tmp.replace(path)  # before the commit: the record is never missing for a table
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return table, summary


def _build(
    app: Airside,
    principal: Principal,
    vectors: np.ndarray,
    identities: Sequence[str],
    contract: EmbeddingContract,
    *,
    source: str,
    params: FitParams | None,
    gallery: str | None = None,
    purpose: str | None = None,
) -> CalibrationSummary:
    cal = fit_fair_calibration(
        vectors, identities, contract, source=source, params=params, table_fitter=_fitter
    )
    path = save_fair_calibration(cal, contract, app.settings.data_dir)
    summary = summarise(cal, str(path))
    try:
        with app.session() as s:
            audit.append(
                s,
                principal,
                BUILD,
                decision="built",
                purpose=purpose,
                gallery=gallery,
                result={
                    "calibration": summary.name,
                    "model": summary.model,
                    "source": summary.source,
                    "images": summary.images,
                    "identities": summary.identities,
                    "impostor_pairs": summary.impostor_pairs,
                },
            )
    except BaseException:
        remove_fair_calibration(contract, app.settings.data_dir)  # never one unaudited
        raise
    return summary


def build_from_templates(
    app: Airside,
    principal: Principal,
    vectors: np.ndarray,
    identities: Sequence[str],
    *,
    contract: EmbeddingContract,
    source: str,
    params: FitParams | None = None,
) -> CalibrationSummary:
    """Fit and install a fair calibration from templates of face images and who is who.

    ``contract`` is what made the templates; it must be the contract of the model in use
    (a calibration for another model's templates is refused)."""
    authorize(app, principal, BUILD)
    try:
        require_same(contract, app.analyzer.contract)
        return _build(
            app, principal, np.asarray(vectors), identities, contract, source=source,
            params=params,
        )  # fmt: skip
    except (AirsideError, ValueError) as e:
        err = e if isinstance(e, AirsideError) else CalibrationSetError(str(e))
        app.audit_refusal(principal, BUILD, err, extra={"source": source})
        raise err from None


def build_from_gallery(
    app: Airside,
    principal: Principal,
    gallery_name: str,
    *,
    params: FitParams | None = None,
    own: bool = False,
) -> CalibrationSummary:
    """Fit and install a fair calibration from a gallery's enrolled templates: each
    subject is a different person, so pairs of subjects are impostor pairs (and a
    subject's several templates, genuine pairs).

    ``own``: keep it as the gallery's own (replacing an earlier one), audited in the same
    transaction as its row, instead of installing it for every gallery of the contract."""
    gallery = authorize_gallery(app, principal, BUILD, gallery_name)
    try:
        # The gallery's own model (a gallery of dlib's ResNet in an SFace installation).
        contract = app.analyzer_for(gallery.contract_fingerprint).contract
        require_same(contract, gallery.contract_fingerprint)
        dim = EmbeddingContract.from_json(gallery.contract_json).dim
        with app.session() as s:
            rows = [
                StoredTemplate(*r)
                for r in s.execute(
                    select(*StoredTemplate.columns()).where(TemplateRow.gallery_id == gallery.id)
                )
            ]
            if not rows:
                raise NotFoundError(f"gallery {gallery_name!r} has no templates")
            tf = app.template_protector.gallery_transform(s, gallery.id, dim)
            stored = app.template_protector.decode(rows, dim, gallery.name)
        vectors = tf.inverse(stored)  # in memory only, for the fit
        identities = [str(r.subject_id) for r in rows]
        if own:
            return _build_own(app, principal, gallery, vectors, identities, contract, params)
        return _build(
            app,
            principal,
            vectors,
            identities,
            contract,
            source=f"gallery:{gallery.name}",
            params=params,
            gallery=gallery.name,
            purpose=gallery.purpose,
        )
    except (AirsideError, ValueError) as e:
        err = e if isinstance(e, AirsideError) else CalibrationSetError(str(e))
        app.audit_refusal(
            principal, BUILD, err, purpose=gallery.purpose, gallery=gallery.name,
            extra={"scope": "gallery"} if own else None,
        )  # fmt: skip
        raise err from None


def _own(cal: FairCalibration, gallery: str) -> OwnFairCalibration:
    fields = {k: getattr(cal, k) for k in cal.__dataclass_fields__}
    return OwnFairCalibration(**fields, gallery=gallery)


def _build_own(
    app: Airside,
    principal: Principal,
    gallery: GalleryView,
    vectors: np.ndarray,
    identities: Sequence[str],
    contract: EmbeddingContract,
    params: FitParams | None,
) -> CalibrationSummary:
    cal = fit_fair_calibration(
        vectors, identities, contract, source=f"{OWN_PREFIX}{gallery.name}", params=params,
        table_fitter=_fitter,
    )  # fmt: skip
    del vectors
    own = _own(cal, gallery.name)
    summary = summarise(own, f"{OWN_PREFIX}{gallery.name}")
    # The row keeps the fit's aggregates only: centroids of regions of at least
    # ``min_cluster_identities`` people (each weighing the same), a mean vector and a
    # projection, two statistics per region, the FMR table of calibrated scores. Never a
    # template (tests/test_gallery_fair_calibration.py compares it with the enrolled ones).
    fair_json = json.dumps(cal.to_json(), separators=(",", ":"))
    with app.session() as s:
        s.execute(
            delete(GalleryFairCalibration).where(GalleryFairCalibration.gallery_id == gallery.id)
        )
        s.add(
            GalleryFairCalibration(
                gallery_id=gallery.id,
                model=cal.model,
                fair_json=fair_json,
                subjects=cal.identities,
                fitted_at=datetime.now(UTC),
                fitted_by=principal.name,
            )
        )
        audit.append(
            s,
            principal,
            BUILD,
            decision="built",
            purpose=gallery.purpose,
            gallery=gallery.name,
            result={
                "scope": "gallery",
                "calibration": summary.name,
                "model": summary.model,
                "source": summary.source,
                "images": summary.images,
                "identities": summary.identities,
                "impostor_pairs": summary.impostor_pairs,
            },
        )
    return summary


def _parse_own(gallery: str, fair_json: str) -> OwnFairCalibration:
    try:
        cal = FairCalibration.from_json(json.loads(fair_json))
    except ValueError as e:  # JSONDecodeError included
        raise CalibrationSetError(
            f"gallery {gallery!r}: unreadable fair calibration of its own ({e}); rebuild it "
            "or remove it"
        ) from None
    return _own(cal, gallery)


# Parsed once per fit: (gallery id, gallery name, model, fitted at) -> the calibration.
_OWN_CACHE: dict[tuple[int, str, str, str], OwnFairCalibration] = {}
_OWN_CACHE_SIZE = 64


def own_fair_calibration(s: Session, gallery: GalleryView) -> OwnFairCalibration | None:
    """The gallery's own fair calibration, if one is fitted for the gallery's contract (for
    decisions already authorised; the caller's transaction). Its JSON is read and parsed
    again only after a refit."""
    row = s.execute(
        select(GalleryFairCalibration.model, GalleryFairCalibration.fitted_at).where(
            GalleryFairCalibration.gallery_id == gallery.id
        )
    ).one_or_none()
    if row is None or row[0] != gallery.contract_fingerprint:
        return None
    key = (gallery.id, gallery.name, str(row[0]), str(row[1]))
    cal = _OWN_CACHE.get(key)
    if cal is None:
        text = s.scalar(
            select(GalleryFairCalibration.fair_json).where(
                GalleryFairCalibration.gallery_id == gallery.id
            )
        )
        if text is None:  # removed meanwhile
            return None
        cal = _parse_own(gallery.name, text)
        if len(_OWN_CACHE) >= _OWN_CACHE_SIZE:
            _OWN_CACHE.clear()
        _OWN_CACHE[key] = cal
    return cal


def has_own_in(s: Session, gallery: GalleryView) -> bool:
    """Whether ``gallery`` has a fair calibration of its own for its contract (the caller's
    transaction; the governance report)."""
    model = s.scalar(
        select(GalleryFairCalibration.model).where(GalleryFairCalibration.gallery_id == gallery.id)
    )
    return model == gallery.contract_fingerprint


def installed_own(
    app: Airside, principal: Principal, gallery_name: str
) -> CalibrationSummary | None:
    """The gallery's own fair calibration, described (``None``: it has none)."""
    gallery = authorize_gallery(app, principal, SHOW, gallery_name)
    with app.session(readonly=True) as s:
        row = s.get(GalleryFairCalibration, gallery.id)
        if row is None:
            return None
        return summarise(_parse_own(gallery.name, row.fair_json), f"{OWN_PREFIX}{gallery.name}")


def remove_own(app: Airside, principal: Principal, gallery_name: str) -> bool:
    """Stop applying the gallery's own fair calibration (decisions against it go back to
    the contract-wide one, if any, else raw similarities). Audited; ``False`` when the
    gallery had none."""
    gallery = authorize_gallery(app, principal, REMOVE, gallery_name)
    with app.session() as s:
        row = s.get(GalleryFairCalibration, gallery.id)
        if row is None:
            return False
        try:
            name: str | None = _parse_own(gallery.name, row.fair_json).name
        except CalibrationSetError:
            name = None  # an unreadable one can still be removed
        model = row.model
        s.delete(row)
        audit.append(
            s,
            principal,
            REMOVE,
            decision="removed",
            purpose=gallery.purpose,
            gallery=gallery.name,
            result={"scope": "gallery", "calibration": name, "model": model},
        )
    return True


def installed(app: Airside, principal: Principal) -> CalibrationSummary | None:
    """The fair calibration the model in use applies now, if any."""
    authorize(app, principal, SHOW)
    contract = app.analyzer.contract
    cal = load_fair_calibration(contract, app.settings.data_dir)
    if cal is None:
        return None
    return summarise(cal, str(fair_calibration_path(contract, app.settings.data_dir)))


def remove(app: Airside, principal: Principal) -> bool:
    """Stop applying the fair calibration (scores go back to raw similarities and the
    model's table). Audited; ``False`` when none was installed."""
    authorize(app, principal, REMOVE)
    contract = app.analyzer.contract
    try:
        current = load_fair_calibration(contract, app.settings.data_dir)
    except (AirsideError, ValueError):
        current = None  # an unreadable file can still be removed
    path = fair_calibration_path(contract, app.settings.data_dir)
    if not path.exists():
        return False
    with app.session() as s:
        audit.append(
            s,
            principal,
            REMOVE,
            decision="removed",
            result={
                "calibration": None if current is None else current.name,
                "model": contract.fingerprint,
            },
        )
        remove_fair_calibration(contract, app.settings.data_dir)
    return True
