"""A gallery's own FMR -> threshold table, fitted label-free on its enrolled subjects:
decisions against the gallery use it and say so; only an administrator fits it, on enough
distinct people; it keeps thresholds, never a template; the governance report lists the
galleries that decide with a table fitted elsewhere."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace

import numpy as np
import pytest
from sqlalchemy import select
from tests.conftest import CliOnDir, png_bytes, register

from airside.biometrics.calibration import CalibrationTable
from airside.biometrics.label_free import (
    EVENTS_PER_TARGET,
    cross_subject_scores,
    fit_label_free,
    subject_pairs,
    subjects_needed,
)
from airside.config import Settings
from airside.errors import AccessDenied, AirsideError
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries, gallery_calibration, matching
from airside.services.app import Airside
from airside.services.captures import Capture, capture
from airside.services.gallery_calibration import TooFewSubjects
from airside.services.gallery_view import get_gallery
from airside.services.governance_report import build_report, render_html
from airside.store.tables import AuditRecord, Gallery, GalleryCalibration
from airside.vision.analyzer import FaceAnalyzer

ADMIN = Principal("thresholds-admin", "admin")
OPERATOR = Principal("gate-operator", "operator")
FMR = 1e-2  # the galleries' target: 46 distinct people resolve it


@pytest.fixture
def admins(app: Airside) -> None:
    register(app, ADMIN, OPERATOR)


@pytest.fixture(scope="module")
def face(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> Capture:
    """The astronaut's photo as captured: the face observation generated templates borrow."""
    res = capture(analyzer, png_bytes(astronaut), max_pixels=Settings().max_image_pixels)
    assert isinstance(res, Capture)
    return res


def enrol_generated(
    app: Airside, gallery: str, face: Capture, vectors: np.ndarray, owners: list[str]
) -> None:
    """Enrol ``vectors`` (one template each, for subject ``owners[i]``) through the
    enrolment service's own writer (legal basis, protection, audit): one real capture lends
    its face observation, each template its own source digest."""
    with app.session() as s:
        view = get_gallery(s, gallery)
        for i, (vec, who) in enumerate(zip(vectors, owners, strict=True)):
            digest = hashlib.sha256(f"{gallery}-{i}".encode()).hexdigest()
            cap = replace(face, source=f"generated-{i}", sha256=digest)
            enrolment.write_subject(
                s, ADMIN, view, app.analyzer.contract, who, BasisInput("consent"), [cap],
                vec[None, :], app.template_protector,
            )  # fmt: skip


def population(dim: int, subjects: int, per: int = 1, seed: int = 0) -> tuple[np.ndarray, list]:
    """``subjects`` people of ``per`` templates each, around a random unit centre each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(subjects, dim))
    x = np.repeat(centres, per, axis=0) + 0.3 * rng.normal(size=(subjects * per, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), [f"G-{i // per}" for i in range(subjects * per)]


@pytest.fixture
def gate(
    app: Airside, admins: None, astronaut: np.ndarray, face: Capture
) -> tuple[np.ndarray, list]:
    """Gallery ``gate`` (FMR 1e-2): the astronaut, enrolled from her photo, and 49 generated
    people of two templates each."""
    galleries.create_gallery(app, ADMIN, "gate", "boarding:KE1", fmr_target=FMR)
    enrolment.enrol(app, ADMIN, "gate", "PNR-A", [png_bytes(astronaut)], BasisInput("consent"))
    x, owners = population(app.analyzer.contract.dim, 49, per=2)
    enrol_generated(app, "gate", face, x, owners)
    return x, owners


def _records(app: Airside, action: str) -> list[AuditRecord]:
    with app.session() as s:
        return list(
            s.scalars(
                select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.seq)
            )
        )


def _own_table(app: Airside, gallery: str) -> CalibrationTable:
    with app.session() as s:
        table = gallery_calibration.table_of(s, get_gallery(s, gallery))
    assert table is not None
    return table


# --------------------------------------------------------------------------------------------
# the label-free fit


def test_the_subject_rule_asks_ten_pairs_of_people_per_expected_false_match() -> None:
    for fmr in (1e-1, 1e-2, 1e-3, 2e-4):
        n = subjects_needed(fmr)
        assert subject_pairs(n) >= EVENTS_PER_TARGET / fmr > subject_pairs(n - 1)


def test_only_pairs_of_different_subjects_are_impostor_pairs() -> None:
    x, owners = population(16, 7, per=3, seed=1)
    expected = [
        float(x[i] @ x[j])
        for i in range(len(owners))
        for j in range(i + 1, len(owners))
        if owners[i] != owners[j]
    ]
    got = cross_subject_scores(x, owners, block=4)
    assert sorted(got) == pytest.approx(sorted(expected), abs=1e-6)


def test_a_label_free_table_leaves_fnmr_unknown() -> None:
    x, owners = population(16, 20, per=2, seed=2)
    table = fit_label_free(x, owners, model="m", source="s")
    assert table.genuines == 0 and all(v is None for v in table.fnmr)
    assert table.impostors == len(cross_subject_scores(x, owners))


# --------------------------------------------------------------------------------------------
# decisions


def test_without_its_own_table_a_gallery_decides_with_the_models_and_says_so(
    app: Airside, admins: None, astronaut: np.ndarray
) -> None:
    galleries.create_gallery(app, ADMIN, "small", "boarding:KE2", fmr_target=FMR)
    enrolment.enrol(app, ADMIN, "small", "PNR-A", [png_bytes(astronaut)], BasisInput("consent"))
    shipped = f"shipped:{app.analyzer.contract.model_id}"
    model_table = app.calibration(app.analyzer.contract)

    res = matching.verify_subject(app, OPERATOR, "small", "PNR-A", png_bytes(astronaut))

    assert res.threshold == pytest.approx(model_table.threshold_for(FMR))
    assert (res.threshold_table, res.threshold_in_domain) == (shipped, False)
    assert res.as_dict()["threshold_table"] == shipped
    assert res.as_dict()["threshold_in_domain"] is False
    record = json.loads(_records(app, "verify.subject")[-1].result)
    assert (record["threshold_table"], record["threshold_in_domain"]) == (shipped, False)
    found = matching.identify(app, OPERATOR, "small", png_bytes(astronaut))
    assert (found.threshold_table, found.threshold_in_domain) == (shipped, False)
    assert json.loads(_records(app, "identify")[-1].result)["threshold_table"] == shipped


def test_two_photos_compared_without_a_gallery_name_the_models_table(
    app: Airside, admins: None, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    res = matching.verify_images(app, OPERATOR, png_bytes(astronaut), png_bytes(hopper))
    assert res.threshold_table == f"shipped:{app.analyzer.contract.model_id}"
    assert res.as_dict()["threshold_in_domain"] is False
    assert json.loads(_records(app, "verify")[-1].result)["threshold_table"] == res.threshold_table


def test_after_fitting_decisions_against_the_gallery_use_its_own_threshold(
    app: Airside, gate: tuple[np.ndarray, list], astronaut: np.ndarray
) -> None:
    before = matching.verify_subject(app, OPERATOR, "gate", "PNR-A", png_bytes(astronaut))

    summary = gallery_calibration.fit_gallery_table(app, ADMIN, "gate")

    own = _own_table(app, "gate")
    res = matching.verify_subject(app, OPERATOR, "gate", "PNR-A", png_bytes(astronaut))
    assert res.threshold == pytest.approx(own.threshold_for(FMR))
    assert res.threshold != pytest.approx(before.threshold)
    assert summary.threshold_at_target == pytest.approx(res.threshold, abs=1e-6)
    assert (res.threshold_table, res.threshold_in_domain) == ("gallery:gate", True)
    assert res.match and res.as_dict()["threshold_table"] == "gallery:gate"
    record = json.loads(_records(app, "verify.subject")[-1].result)
    assert (record["threshold_table"], record["threshold_in_domain"]) == ("gallery:gate", True)
    found = matching.identify(app, OPERATOR, "gate", png_bytes(astronaut))
    assert found.threshold == pytest.approx(own.threshold_for(found.comparison_fmr))
    assert (found.threshold_table, found.threshold_in_domain) == ("gallery:gate", True)
    assert found.match and found.candidates[0].subject == "PNR-A"
    record = json.loads(_records(app, "identify")[-1].result)
    assert (record["threshold_table"], record["threshold_in_domain"]) == ("gallery:gate", True)


def test_an_fmr_finer_than_the_gallerys_table_resolves_is_refused_and_audited(
    app: Airside, gate: tuple[np.ndarray, list], astronaut: np.ndarray
) -> None:
    gallery_calibration.fit_gallery_table(app, ADMIN, "gate")
    finer = _own_table(app, "gate").finest_fmr / 10

    with pytest.raises(AirsideError, match="gallery:gate table") as refused:
        matching.verify_subject(app, OPERATOR, "gate", "PNR-A", png_bytes(astronaut), fmr=finer)

    assert refused.value.code == "bad_request"
    assert _records(app, "verify.subject")[-1].decision == "refused:bad_request"


def test_the_table_is_fitted_on_the_plain_scores_of_different_subjects(
    app: Airside, gate: tuple[np.ndarray, list], face: Capture
) -> None:
    x, owners = gate
    own_face = app.analyzer.embed([face.face])[0]
    everyone = np.vstack([x, own_face[None, :] / np.linalg.norm(own_face)])

    summary = gallery_calibration.fit_gallery_table(app, ADMIN, "gate")

    # Stored encrypted and in the gallery's secret transform, which keeps inner products.
    plain = fit_label_free(everyone, [*owners, "PNR-A"], model="m", source="s")
    own = _own_table(app, "gate")
    assert own.impostors == plain.impostors == summary.impostor_pairs
    assert own.fmr == plain.fmr
    assert own.threshold == pytest.approx(plain.threshold, abs=1e-5)
    assert (summary.subjects, summary.templates) == (len(set(owners)) + 1, len(owners) + 1)


def test_the_table_keeps_thresholds_never_a_template(
    app: Airside, gate: tuple[np.ndarray, list]
) -> None:
    x, _ = gate
    gallery_calibration.fit_gallery_table(app, ADMIN, "gate")
    with app.session() as s:
        row = s.scalars(select(GalleryCalibration)).one()
        stored = json.loads(row.table_json)
    assert set(stored) == {"model", "fmr", "threshold", "fnmr", "impostors", "genuines",
                           "source"}  # fmt: skip
    numbers = {float(v) for v in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", row.table_json)}
    assert len(numbers) <= 3 * len(stored["fmr"])
    assert not numbers & {float(v) for v in x.ravel()}


def test_removing_the_table_returns_decisions_to_the_models_and_is_audited(
    app: Airside, gate: tuple[np.ndarray, list], astronaut: np.ndarray
) -> None:
    gallery_calibration.fit_gallery_table(app, ADMIN, "gate")

    assert gallery_calibration.remove_gallery_table(app, ADMIN, "gate") is True

    assert gallery_calibration.remove_gallery_table(app, ADMIN, "gate") is False
    assert gallery_calibration.gallery_table(app, ADMIN, "gate") is None
    res = matching.verify_subject(app, OPERATOR, "gate", "PNR-A", png_bytes(astronaut))
    assert not res.threshold_in_domain and res.threshold_table.startswith("shipped:")
    assert [(r.decision, r.gallery) for r in _records(app, "calibration.remove_gallery")] == [
        ("removed", "gate")
    ]


# --------------------------------------------------------------------------------------------
# who may fit one, and on what


def test_fitting_is_audited_with_what_the_table_rests_on(
    app: Airside, gate: tuple[np.ndarray, list]
) -> None:
    summary = gallery_calibration.fit_gallery_table(app, ADMIN, "gate")
    [record] = _records(app, "calibration.fit_gallery")
    assert (record.actor, record.decision, record.gallery) == (ADMIN.name, "fitted", "gate")
    result = json.loads(record.result)
    assert result["subjects"] == summary.subjects == len(set(gate[1])) + 1
    assert result["impostor_pairs"] == summary.impostor_pairs
    assert result["model"] == app.analyzer.contract.fingerprint


def test_a_gallery_of_too_few_people_for_its_target_is_refused_and_audited(
    app: Airside, admins: None, face: Capture
) -> None:
    galleries.create_gallery(app, ADMIN, "few", "boarding:KE3", fmr_target=FMR)
    x, owners = population(app.analyzer.contract.dim, subjects_needed(FMR) - 1, per=3)
    enrol_generated(app, "few", face, x, owners)

    with pytest.raises(TooFewSubjects) as refused:
        gallery_calibration.fit_gallery_table(app, ADMIN, "few")

    assert refused.value.code == "too_few_subjects"
    assert refused.value.details["limit"] == subjects_needed(FMR)
    assert gallery_calibration.gallery_table(app, ADMIN, "few") is None
    [record] = _records(app, "calibration.fit_gallery")
    assert (record.decision, record.gallery) == ("refused:too_few_subjects", "few")


def test_only_an_administrator_fits_a_gallerys_table(
    app: Airside, gate: tuple[np.ndarray, list]
) -> None:
    with pytest.raises(AccessDenied):
        gallery_calibration.fit_gallery_table(app, OPERATOR, "gate")

    assert gallery_calibration.gallery_table(app, ADMIN, "gate") is None
    [record] = _records(app, "calibration.fit_gallery")
    assert (record.actor, record.decision) == (OPERATOR.name, "refused:forbidden")


# --------------------------------------------------------------------------------------------
# the governance report, the gallery's end, the CLI


def test_the_governance_report_lists_galleries_without_a_table_of_their_own(
    app: Airside, gate: tuple[np.ndarray, list], astronaut: np.ndarray
) -> None:
    galleries.create_gallery(app, ADMIN, "small", "boarding:KE2", fmr_target=FMR)
    enrolment.enrol(app, ADMIN, "small", "PNR-A", [png_bytes(astronaut)], BasisInput("consent"))
    gallery_calibration.fit_gallery_table(app, ADMIN, "gate")

    report = build_report(app, ADMIN)

    assert report.as_dict()["without_in_domain_table"] == [
        {"gallery": "small", "subjects": 1, "needed": subjects_needed(FMR), "can_fit": False}
    ]
    fitted = next(g for g in report.galleries if g.name == "gate")
    assert fitted.in_domain_table and fitted.table_subjects == fitted.subjects
    html = render_html(report)
    assert "none of its own" in html and "too few subjects to fit one" in html


def test_a_gallerys_table_goes_with_the_gallery(
    app: Airside, gate: tuple[np.ndarray, list]
) -> None:
    gallery_calibration.fit_gallery_table(app, ADMIN, "gate")
    with app.session() as s:
        s.delete(s.scalars(select(Gallery).where(Gallery.name == "gate")).one())
    with app.session() as s:
        assert s.scalars(select(GalleryCalibration)).all() == []


def test_the_cli_fits_shows_and_removes_a_gallerys_table(
    cli_on_dir: CliOnDir, analyzer: FaceAnalyzer, face: Capture
) -> None:
    from airside.services.principal_admin import ensure_local_admin

    app = Airside(Settings(data_dir=cli_on_dir.data_dir), analyzer_factory=lambda _s: analyzer)
    try:
        register(app, ADMIN)
        galleries.create_gallery(app, ensure_local_admin(app), "gate", "p", fmr_target=FMR)
        x, owners = population(analyzer.contract.dim, subjects_needed(FMR))
        enrol_generated(app, "gate", face, x, owners)
    finally:
        app.close()

    fitted = cli_on_dir("calibrate", "--gallery", "gate", "--table", "--json")
    shown = cli_on_dir("calibrate", "--gallery", "gate", "--table", "--show", "--json")
    removed = cli_on_dir("calibrate", "--gallery", "gate", "--table", "--remove", "--json")

    assert fitted.exit_code == 0, fitted.output
    assert json.loads(fitted.stdout)["subjects"] == subjects_needed(FMR)
    assert json.loads(shown.stdout)["installed"]["gallery"] == "gate"
    assert json.loads(removed.stdout) == {"removed": True}
