"""Building, inspecting and removing the fair calibration of the model in use.

A fair calibration (``biometrics/fair_calibration.py``, docs/fairness.md) belongs to one
embedding contract and is fitted on templates and who is who only; no demographic attribute
is read, accepted or stored here. It can be built

- from labelled face images (``airside calibrate --identities IDS.csv``): the CLI computes
  the templates (cached, on all cores) and hands them over with their identities; or
- from a gallery's enrolled subjects (``airside calibrate --gallery NAME``): distinct
  people, so every cross pair is an impostor pair, captured by the deployment's own
  cameras. Templates are decrypted and taken out of the gallery's transform in memory only;
  the calibration keeps aggregates, never a template.

Building or removing one changes what every later score means, so each is an
administrator action (``calibration.build`` / ``calibration.remove``), audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from airside.biometrics.contract import EmbeddingContract, require_same
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
from airside.errors import AirsideError, NotFoundError
from airside.governance import audit
from airside.governance.principals import Principal
from airside.governance.template_protection import StoredTemplate
from airside.services.app import Airside
from airside.services.authz import authorize, authorize_gallery
from airside.store.tables import Template as TemplateRow

BUILD = "calibration.build"
REMOVE = "calibration.remove"
SHOW = "calibration.show"


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
    from airside.evaluation.metrics import fit_calibration

    return fit_calibration(genuine, impostor, model=model, source=source)


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
) -> CalibrationSummary:
    """Fit and install a fair calibration from a gallery's enrolled templates: each
    subject is a different person, so pairs of subjects are impostor pairs (and a
    subject's several templates, genuine pairs)."""
    gallery = authorize_gallery(app, principal, BUILD, gallery_name)
    contract = app.analyzer.contract
    try:
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
        app.audit_refusal(principal, BUILD, err, purpose=gallery.purpose, gallery=gallery.name)
        raise err from None


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
