"""A gallery's own fair calibration, fitted label-free on its enrolled subjects: kept with
the gallery (not installed for the model), used by decisions against that gallery only and
named in their results and records, before the model's; removed, decisions go back; only an
administrator builds or removes it; it goes with its gallery and keeps no template."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from tests.conftest import CliOnDir, png_bytes, register
from tests.test_fair_calibration import population
from tests.test_gallery_calibration import ADMIN, FMR, OPERATOR, enrol_generated

from airside.biometrics.fair_calibration import (
    RAW,
    FitParams,
    fair_calibration_path,
    fit_fair_calibration,
    load_fair_calibration,
    save_fair_calibration,
)
from airside.config import Settings
from airside.errors import AccessDenied
from airside.evaluation.metrics import fit_calibration
from airside.governance.consent import BasisInput
from airside.services import calibration_service, enrolment, galleries, matching
from airside.services.app import Airside
from airside.services.captures import Capture, capture
from airside.services.governance_report import build_report
from airside.store.tables import AuditRecord, Gallery, GalleryFairCalibration
from airside.vision.analyzer import FaceAnalyzer

PEOPLE = 120  # a fair calibration needs 100 distinct people


@pytest.fixture(scope="module")
def face(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> Capture:
    """The astronaut's photo as captured: the face observation generated templates borrow."""
    res = capture(analyzer, png_bytes(astronaut), max_pixels=Settings().max_image_pixels)
    assert isinstance(res, Capture)
    return res


def enrol_people(app: Airside, gallery: str, face: Capture, seed: int = 3) -> np.ndarray:
    """``PEOPLE`` generated people of two templates each, enrolled in ``gallery``."""
    x, ids, _ = population(np.random.default_rng(seed), PEOPLE, d=app.analyzer.contract.dim)
    enrol_generated(app, gallery, face, x.astype(np.float32), [f"G-{i}" for i in ids])
    return x


@pytest.fixture
def gate(app: Airside, astronaut: np.ndarray, face: Capture) -> np.ndarray:
    """Gallery ``gate``: the astronaut from her photo and ``PEOPLE`` generated people; and
    gallery ``lounge`` of the same model: the astronaut only. Returns gate's generated
    templates."""
    register(app, ADMIN, OPERATOR)
    for name in ("gate", "lounge"):
        galleries.create_gallery(app, ADMIN, name, f"boarding:{name}", fmr_target=FMR)
        enrolment.enrol(app, ADMIN, name, "PNR-A", [png_bytes(astronaut)], BasisInput("consent"))
    return enrol_people(app, "gate", face)


def _records(app: Airside, action: str) -> list[AuditRecord]:
    with app.session() as s:
        return list(
            s.scalars(
                select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.seq)
            )
        )


def _build(app: Airside) -> calibration_service.CalibrationSummary:
    return calibration_service.build_from_gallery(app, ADMIN, "gate", own=True)


# --------------------------------------------------------------------------------------------
# where it is kept


def test_an_own_calibration_is_kept_with_the_gallery_not_installed_for_the_model(
    app: Airside, gate: np.ndarray
) -> None:
    summary = _build(app)

    contract = app.analyzer.contract
    assert not fair_calibration_path(contract, app.settings.data_dir).exists()
    assert load_fair_calibration(contract, app.settings.data_dir) is None
    shown = calibration_service.installed_own(app, ADMIN, "gate")
    assert shown is not None and shown.name == summary.name
    assert summary.name.startswith("gallery:gate/") and summary.identities == PEOPLE + 1
    assert calibration_service.installed_own(app, ADMIN, "lounge") is None


def test_building_one_is_audited_as_the_gallerys(app: Airside, gate: np.ndarray) -> None:
    summary = _build(app)

    [record] = _records(app, "calibration.build")
    assert (record.actor, record.decision, record.gallery) == (ADMIN.name, "built", "gate")
    result = json.loads(record.result)
    assert (result["scope"], result["calibration"]) == ("gallery", summary.name)
    assert result["model"] == app.analyzer.contract.fingerprint


def test_a_refit_replaces_the_gallerys_own(app: Airside, gate: np.ndarray) -> None:
    _build(app)
    refit = calibration_service.build_from_gallery(
        app, ADMIN, "gate", own=True, params=FitParams(seed=1)
    )

    with app.session() as s:
        assert len(s.scalars(select(GalleryFairCalibration)).all()) == 1
    shown = calibration_service.installed_own(app, ADMIN, "gate")
    assert shown is not None and shown.name == refit.name


# --------------------------------------------------------------------------------------------
# decisions


def test_decisions_against_the_gallery_use_its_own_and_say_so(
    app: Airside, gate: np.ndarray, astronaut: np.ndarray
) -> None:
    summary = _build(app)

    res = matching.verify_subject(app, OPERATOR, "gate", "PNR-A", png_bytes(astronaut))
    found = matching.identify(app, OPERATOR, "gate", png_bytes(astronaut))

    for r in (res, found):
        assert r.calibration == summary.name
        assert (r.threshold_table, r.threshold_in_domain) == (f"fair:{summary.name}", True)
    assert res.match and found.match and found.candidates[0].subject == "PNR-A"
    for action in ("verify.subject", "identify"):
        record = json.loads(_records(app, action)[-1].result)
        assert record["calibration"] == summary.name and record["threshold_in_domain"] is True


def test_another_gallery_of_the_same_model_is_unaffected(
    app: Airside, gate: np.ndarray, astronaut: np.ndarray
) -> None:
    _build(app)

    res = matching.verify_subject(app, OPERATOR, "lounge", "PNR-A", png_bytes(astronaut))

    assert res.calibration == RAW and res.threshold_table.startswith("shipped:")
    assert not res.threshold_in_domain
    assert "calibration" not in json.loads(_records(app, "verify.subject")[-1].result)


def test_a_batch_over_several_galleries_uses_each_gallerys_own(
    app: Airside, gate: np.ndarray, face: Capture
) -> None:
    summary = _build(app)
    contract = app.analyzer.contract
    vec = app.analyzer.embed([face.face])[0]
    probe = matching.Probe(vec, face.face.quality.score, face.sha256)

    [[at_gate, at_lounge]] = matching.identify_many(
        app, OPERATOR, ["gate", "lounge"], [probe], contract=contract
    )

    assert (at_gate.calibration, at_gate.threshold_in_domain) == (summary.name, True)
    assert (at_lounge.calibration, at_lounge.threshold_in_domain) == (RAW, False)


def _install_for_the_model(app: Airside) -> str:
    contract = app.analyzer.contract
    x, ids, _ = population(np.random.default_rng(5), 200, d=contract.dim)

    def fitter(g: np.ndarray, i: np.ndarray, model: str, source: str) -> Any:
        return fit_calibration(g, i, model=model, source=source)

    cal = fit_fair_calibration(x, ids, contract, source="test", table_fitter=fitter)
    save_fair_calibration(cal, contract, app.settings.data_dir)
    return cal.name


def test_the_gallerys_own_comes_before_the_one_installed_for_the_model(
    app: Airside, gate: np.ndarray, astronaut: np.ndarray
) -> None:
    wide = _install_for_the_model(app)
    summary = _build(app)

    at_gate = matching.identify(app, OPERATOR, "gate", png_bytes(astronaut))
    at_lounge = matching.identify(app, OPERATOR, "lounge", png_bytes(astronaut))

    assert at_gate.calibration == summary.name != wide
    assert (at_lounge.calibration, at_lounge.threshold_table) == (wide, f"fair:{wide}")
    assert not at_lounge.threshold_in_domain


def test_removing_it_returns_decisions_to_the_models_and_is_audited(
    app: Airside, gate: np.ndarray, astronaut: np.ndarray
) -> None:
    summary = _build(app)

    assert calibration_service.remove_own(app, ADMIN, "gate") is True

    assert calibration_service.remove_own(app, ADMIN, "gate") is False
    assert calibration_service.installed_own(app, ADMIN, "gate") is None
    res = matching.verify_subject(app, OPERATOR, "gate", "PNR-A", png_bytes(astronaut))
    assert res.calibration == RAW and res.threshold_table.startswith("shipped:")
    [record] = _records(app, "calibration.remove")
    assert (record.decision, record.gallery) == ("removed", "gate")
    assert json.loads(record.result)["calibration"] == summary.name


# --------------------------------------------------------------------------------------------
# who may, and what it keeps


def test_only_an_administrator_builds_or_removes_one_and_refusals_are_audited(
    app: Airside, gate: np.ndarray
) -> None:
    with pytest.raises(AccessDenied):
        calibration_service.build_from_gallery(app, OPERATOR, "gate", own=True)
    _build(app)
    with pytest.raises(AccessDenied):
        calibration_service.remove_own(app, OPERATOR, "gate")

    assert calibration_service.installed_own(app, ADMIN, "gate") is not None
    for action in ("calibration.build", "calibration.remove"):
        refused = [r for r in _records(app, action) if r.decision.startswith("refused")]
        assert [(r.actor, r.decision) for r in refused] == [(OPERATOR.name, "refused:forbidden")]


def test_it_goes_with_its_gallery(app: Airside, gate: np.ndarray) -> None:
    _build(app)

    with app.session() as s:
        s.delete(s.scalars(select(Gallery).where(Gallery.name == "gate")).one())

    with app.session() as s:
        assert s.scalars(select(GalleryFairCalibration)).all() == []


def _vectors(doc: Any, dim: int) -> list[list[float]]:
    """Every list of ``dim`` numbers anywhere in ``doc``."""
    if isinstance(doc, dict):
        return [v for x in doc.values() for v in _vectors(x, dim)]
    if isinstance(doc, list):
        if len(doc) == dim and all(isinstance(v, float) for v in doc):
            return [doc]
        return [v for x in doc for v in _vectors(x, dim)]
    return []


def test_the_stored_calibration_holds_no_template(
    app: Airside, gate: np.ndarray, face: Capture
) -> None:
    _build(app)

    with app.session() as s:
        [row] = s.scalars(select(GalleryFairCalibration)).all()
        stored = np.array(_vectors(json.loads(row.fair_json), app.analyzer.contract.dim))
    enrolled = np.vstack([gate, app.analyzer.embed([face.face])])
    stored = stored[np.linalg.norm(stored, axis=1) > 0]  # stage 1's mean is zero
    assert len(stored) > 0  # centroids, a mean and a projection: vectors, but no one's
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    enrolled /= np.linalg.norm(enrolled, axis=1, keepdims=True)
    assert np.abs(stored @ enrolled.T).max() < 0.99


def test_the_governance_report_says_which_galleries_have_their_own(
    app: Airside, gate: np.ndarray
) -> None:
    _build(app)

    report = build_report(app, ADMIN)

    own = {g.name: g.own_fair_calibration for g in report.galleries}
    assert own == {"gate": True, "lounge": False}
    assert [g["gallery"] for g in report.as_dict()["without_in_domain_table"]] == ["lounge"]


def test_the_cli_builds_shows_and_removes_a_gallerys_own(
    cli_on_dir: CliOnDir, analyzer: FaceAnalyzer, face: Capture
) -> None:
    from airside.services.principal_admin import ensure_local_admin

    app = Airside(Settings(data_dir=cli_on_dir.data_dir), analyzer_factory=lambda _s: analyzer)
    try:
        register(app, ADMIN)
        galleries.create_gallery(app, ensure_local_admin(app), "gate", "p", fmr_target=FMR)
        enrol_people(app, "gate", face)
    finally:
        app.close()

    built = cli_on_dir("calibrate", "--gallery", "gate", "--own", "--json")
    shown = cli_on_dir("calibrate", "--gallery", "gate", "--own", "--show", "--json")
    removed = cli_on_dir("calibrate", "--gallery", "gate", "--own", "--remove", "--json")

    assert built.exit_code == 0, built.output
    assert json.loads(built.stdout)["name"].startswith("gallery:gate/")
    assert json.loads(shown.stdout)["installed"]["name"] == json.loads(built.stdout)["name"]
    assert json.loads(removed.stdout) == {"removed": True}
    assert not fair_calibration_path(analyzer.contract, cli_on_dir.data_dir).exists()
