"""A gallery's own FMR -> threshold table: thresholds fitted where the system runs.

The tables shipped with each model were fitted on LFW web photos; on another kind of photo
the same threshold gives another FMR (docs/thresholds.md measures it: on studio sets the
shipped SFace threshold for FMR 1e-3 lets through 6-28x that). A gallery's enrolled
subjects are distinct people, so every pair of templates of two different subjects is an
impostor pair captured by the deployment's own cameras and enrolment desk; their scores fit
a label-free table (``biometrics/label_free.py``, FNMR unknown) that decisions against the
gallery then use (``services/matching.py`` says in what order tables are chosen).

Templates are decrypted in memory only and scored in the gallery's transform: it is
orthogonal, so inner products, and therefore scores, are those of the plain templates. The
row keeps aggregates (the table's thresholds and pair counts) and the gallery as it was at
fit time (subjects, templates); later enrolments and erasures do not invalidate it (it
estimates a distribution), and the governance report shows its age and size.

Fitting or removing one changes what every later decision against the gallery means: an
administrator action (``calibration.fit_gallery``, ``calibration.remove_gallery``), audited
in the same transaction as the row.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from airside.biometrics.calibration import CalibrationTable, resolvable
from airside.biometrics.label_free import (
    MAX_TEMPLATES,
    fit_label_free,
    subject_pairs,
    subjects_needed,
)
from airside.errors import AirsideError
from airside.governance import audit
from airside.governance.principals import Principal
from airside.governance.template_protection import StoredTemplate
from airside.services.app import Airside
from airside.services.authz import authorize_gallery
from airside.services.gallery_view import GalleryView
from airside.store.tables import GalleryCalibration
from airside.store.tables import Template as TemplateRow
from airside.vision.contract import EmbeddingContract

FIT_GALLERY = "calibration.fit_gallery"
REMOVE_GALLERY = "calibration.remove_gallery"
SHOW = "calibration.show"
# How a decision names a gallery's own table (``threshold_table``).
ORIGIN_PREFIX = "gallery:"
# A floor under the pair rule: a tail estimated from fewer people rests on too few faces,
# however many pairs they make.
MIN_SUBJECTS = 20


class TooFewSubjects(AirsideError):
    """The gallery holds too few distinct people to resolve its own FMR target."""

    code = "too_few_subjects"


@dataclass
class GalleryTableSummary:
    """A gallery's fitted table: what it rests on and what it sets, nothing about anyone."""

    gallery: str
    model: str
    subjects: int  # distinct subjects at fit time
    templates: int  # templates scored
    impostor_pairs: int  # cross-subject template pairs scored
    finest_fmr: float
    fmr_target: float  # the gallery's
    threshold_at_target: float
    fitted_at: str
    fitted_by: str
    subjects_now: int  # the gallery's subjects when this summary was made

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def required_subjects(fmr_target: float, min_subjects: int = MIN_SUBJECTS) -> int:
    """Distinct people a gallery needs for a table that resolves ``fmr_target``: at least
    ``10 / fmr_target`` pairs of different people (biometrics/label_free.py says why), and
    at least ``min_subjects``."""
    return max(int(min_subjects), subjects_needed(fmr_target))


@functools.lru_cache(maxsize=256)
def _parsed(table_json: str) -> CalibrationTable:
    """Parsed once per distinct table: decisions read the row on every search."""
    return CalibrationTable.from_json(json.loads(table_json))


def table_of(s: Session, gallery: GalleryView) -> CalibrationTable | None:
    """The gallery's own table, if one is fitted for the gallery's contract (for decisions
    already authorised; the caller's transaction)."""
    row = s.execute(
        select(GalleryCalibration.model, GalleryCalibration.table_json).where(
            GalleryCalibration.gallery_id == gallery.id
        )
    ).one_or_none()
    if row is None or row[0] != gallery.contract_fingerprint:
        return None
    return _parsed(row[1])


def _subjects(s: Session, gallery_id: int) -> int:
    return int(
        s.scalar(
            select(func.count(func.distinct(TemplateRow.subject_id))).where(
                TemplateRow.gallery_id == gallery_id
            )
        )
        or 0
    )


def _summary(row: GalleryCalibration, gallery: GalleryView, subjects_now: int) -> (
    GalleryTableSummary
):  # fmt: skip
    table = _parsed(row.table_json)
    fitted = row.fitted_at if row.fitted_at.tzinfo else row.fitted_at.replace(tzinfo=UTC)
    return GalleryTableSummary(
        gallery=gallery.name,
        model=row.model,
        subjects=row.subjects,
        templates=row.templates,
        impostor_pairs=row.impostor_pairs,
        finest_fmr=table.finest_fmr,
        fmr_target=gallery.fmr_target,
        threshold_at_target=round(table.threshold_for(gallery.fmr_target), 6),
        fitted_at=fitted.isoformat(timespec="seconds"),
        fitted_by=row.fitted_by,
        subjects_now=subjects_now,
    )


def fit_gallery_table(
    app: Airside, principal: Principal, gallery_name: str, *, min_subjects: int = MIN_SUBJECTS
) -> GalleryTableSummary:
    """Fit the gallery's own FMR -> threshold table on the cross-subject pairs of its
    enrolled templates, and store it (replacing an earlier one), audited in the same
    transaction. Refused (``too_few_subjects``, audited) when the gallery holds fewer
    people than :func:`required_subjects` of its FMR target."""
    gallery = authorize_gallery(app, principal, FIT_GALLERY, gallery_name)
    try:
        needed = required_subjects(gallery.fmr_target, min_subjects)
        dim = EmbeddingContract.from_json(gallery.contract_json).dim
        with app.session(readonly=True) as s:
            rows = [
                StoredTemplate(*r)
                for r in s.execute(
                    select(*StoredTemplate.columns()).where(TemplateRow.gallery_id == gallery.id)
                )
            ]
            subjects = len({r.subject_id for r in rows})
            if subjects < needed:
                raise TooFewSubjects(
                    f"gallery {gallery.name!r} holds {subjects} subjects; a table that "
                    f"resolves its FMR target {gallery.fmr_target:g} needs {needed} distinct "
                    f"people ({subject_pairs(needed)} pairs of different people, at least "
                    f"10 per expected false match)",
                    details={"limit": needed, "subjects": subjects},
                )
            if any(r.contract_fingerprint != gallery.contract_fingerprint for r in rows):
                raise AirsideError(
                    f"gallery {gallery.name!r} holds templates of another model",
                    code="contract_mismatch",
                )
            # In the gallery's transform, as stored: inner products are the plain ones.
            vectors = app.template_protector.decode(rows, dim, gallery.name)
        try:
            table = fit_label_free(
                vectors,
                [r.subject_id for r in rows],
                model=gallery.contract_fingerprint,
                source=f"{ORIGIN_PREFIX}{gallery.name}",
            )
        except ValueError as e:
            raise TooFewSubjects(str(e), details={"limit": needed}) from None
        del vectors
        if not resolvable(table.impostors, gallery.fmr_target):  # cannot happen past the rule
            raise TooFewSubjects(f"the pairs of {gallery.name!r} cannot resolve its target")
        with app.session() as s:
            s.execute(delete(GalleryCalibration).where(GalleryCalibration.gallery_id == gallery.id))
            row = GalleryCalibration(
                gallery_id=gallery.id,
                model=table.model,
                table_json=json.dumps(table.to_json(), separators=(",", ":")),
                subjects=subjects,
                templates=min(len(rows), MAX_TEMPLATES),  # a fixed subset beyond that
                impostor_pairs=table.impostors,
                fitted_at=datetime.now(UTC),
                fitted_by=principal.name,
            )
            s.add(row)
            s.flush()
            summary = _summary(row, gallery, subjects)
            audit.append(
                s,
                principal,
                FIT_GALLERY,
                decision="fitted",
                purpose=gallery.purpose,
                gallery=gallery.name,
                result={k: v for k, v in summary.as_dict().items() if k != "subjects_now"},
            )
    except AirsideError as e:
        app.audit_refusal(principal, FIT_GALLERY, e, purpose=gallery.purpose, gallery=gallery.name)
        raise
    return summary


def remove_gallery_table(app: Airside, principal: Principal, gallery_name: str) -> bool:
    """Stop using the gallery's own table (decisions go back to the deployment's or the
    shipped one). Audited; ``False`` when the gallery had none."""
    gallery = authorize_gallery(app, principal, REMOVE_GALLERY, gallery_name)
    with app.session() as s:
        row = s.get(GalleryCalibration, gallery.id)
        if row is None:
            return False
        s.delete(row)
        audit.append(
            s,
            principal,
            REMOVE_GALLERY,
            decision="removed",
            purpose=gallery.purpose,
            gallery=gallery.name,
            result={"model": gallery.contract_fingerprint},
        )
    return True


def gallery_table(
    app: Airside, principal: Principal, gallery_name: str
) -> GalleryTableSummary | None:
    """The gallery's own table, described (``None``: it has none)."""
    gallery = authorize_gallery(app, principal, SHOW, gallery_name)
    with app.session(readonly=True) as s:
        row = s.get(GalleryCalibration, gallery.id)
        if row is None:
            return None
        return _summary(row, gallery, _subjects(s, gallery.id))


@dataclass(frozen=True)
class TableStatus:
    """What the governance report says of one gallery's thresholds."""

    in_domain: bool
    subjects_needed: int
    fitted_at: str | None = None
    fitted_subjects: int | None = None


def status_in(s: Session, gallery: GalleryView) -> TableStatus:
    """Whether ``gallery`` decides with its own table (fitted when, on how many people), and
    how many people it needs to fit one (the caller's transaction)."""
    needed = required_subjects(gallery.fmr_target)
    row = s.get(GalleryCalibration, gallery.id)
    if row is None or row.model != gallery.contract_fingerprint:
        return TableStatus(False, needed)
    fitted = row.fitted_at if row.fitted_at.tzinfo else row.fitted_at.replace(tzinfo=UTC)
    return TableStatus(True, needed, fitted.isoformat(timespec="seconds"), row.subjects)
