"""The label-free fair calibration: what it does to scores, where it lives, who may build
it, that decisions use it when present (and are unchanged when absent), and the LFW
measurement (slow, needs ../shared/data)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from tests.conftest import png_bytes, register

from airside.biometrics.fair_calibration import (
    RAW,
    CalibrationSetError,
    CohortNorm,
    FairCalibration,
    FitParams,
    ImageStats,
    ZNorm,
    fair_calibration_path,
    fit_fair_calibration,
    load_fair_calibration,
    save_fair_calibration,
)
from airside.errors import AccessDenied, ContractMismatchError
from airside.evaluation.fairness import (
    GroupedScores,
    all_pairs,
    fairness_summary,
    group_names_of_pairs,
)
from airside.evaluation.metrics import fit_calibration
from airside.governance.consent import BasisInput
from airside.governance.gallery_transform import GalleryTransform
from airside.governance.principals import Principal
from airside.services import calibration_service, enrolment, galleries, matching
from airside.services.app import Airside
from airside.store.tables import AuditRecord
from airside.vision.contract import EmbeddingContract

ADMIN = Principal("calibration-admin", "admin")
OPERATOR = Principal("gate-operator", "operator")


def _fitter(g: np.ndarray, i: np.ndarray, model: str, source: str) -> Any:
    return fit_calibration(g, i, model=model, source=source)


def population(
    rng: np.random.Generator, n_ids: int, per: int = 2, d: int = 32
) -> tuple[np.ndarray, list[str], list[str]]:
    """Two populations of people: in ``B`` faces are packed tighter (as dlib packs the faces
    of Black people), so impostor pairs within B score higher than within A."""
    xs, ids, groups = [], [], []
    tag = int(rng.integers(1 << 30))
    for g, (axis, spread) in enumerate(((0, 1.0), (1, 0.55))):
        centre = np.zeros(d)
        centre[axis] = 1.0
        for k in range(n_ids // 2):
            u = centre + spread * 3.0 * rng.normal(size=d) / np.sqrt(d)
            u /= np.linalg.norm(u)
            for _ in range(per):
                v = u + 0.225 * rng.normal(size=d) / np.sqrt(d)
                xs.append(v / np.linalg.norm(v))
                ids.append(f"{tag}-{g}-{k}")
                groups.append("AB"[g])
    return np.stack(xs), ids, groups


def pair_stats(cal: FairCalibration, x: np.ndarray, i: np.ndarray, j: np.ndarray) -> Any:
    st = cal.image_stats(x)
    return ImageStats(st.mu[i], st.sigma[i]), ImageStats(st.mu[j], st.sigma[j])


@pytest.fixture(scope="module")
def synthetic() -> dict[str, Any]:
    rng = np.random.default_rng(1)
    xc, ic, _ = population(rng, 300)
    xt, it, gt = population(rng, 300)
    cal = fit_fair_calibration(xc, ic, None, source="synthetic", table_fitter=_fitter)
    return {"cal": cal, "train": (xc, ic), "test": (xt, it, gt)}


# --------------------------------------------------------------------------------------------
# the method


def test_the_calibration_cuts_the_differential_without_reading_a_group(
    synthetic: dict[str, Any],
) -> None:
    cal: FairCalibration = synthetic["cal"]
    x, ids, groups = synthetic["test"]  # other people than the calibration set
    names, _, codes = group_names_of_pairs(groups)
    i, j, s, same = all_pairs(x, ids)
    data = GroupedScores(s, same, codes(i, j), names)
    raw = fairness_summary(data)
    fair = fairness_summary(data.with_scores(cal.normalise(s, *pair_stats(cal, x, i, j))))
    assert raw["fmr_differential"] > 10
    assert fair["fmr_differential"] < raw["fmr_differential"] / 5
    assert fair["overall"]["tar"] >= raw["overall"]["tar"] - 0.01


def test_regions_each_hold_several_people_and_the_artefact_no_template(
    synthetic: dict[str, Any],
) -> None:
    cal: FairCalibration = synthetic["cal"]
    x, ids = synthetic["train"]
    local, broad = cal.stages
    assert local.basis is None  # stage 1: regions of the embedding itself
    assert broad.basis is not None and broad.basis.shape == (32, cal.params.dims)
    for stage in cal.stages:
        z = stage.project(x)
        for centroids in stage.centroids:
            labels = ((z[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
            people = [
                len({ids[k] for k in np.flatnonzero(labels == c)}) for c in range(len(centroids))
            ]
            # every centroid is an equal-weight mean over several people, never one face
            assert min(people) >= cal.params.min_cluster_identities
    assert cal.table is not None and cal.table.impostors > 100_000
    assert "centroids" in json.dumps(cal.to_json())  # aggregates only: no per-face rows
    assert all(len(c) < len(x) / 5 for st in cal.stages for c in st.centroids)


def test_normalised_scores_are_symmetric_and_increase_with_the_score(
    synthetic: dict[str, Any],
) -> None:
    cal: FairCalibration = synthetic["cal"]
    x = synthetic["test"][0][:2]
    a, b = cal.image_stats(x[:1]), cal.image_stats(x[1:])
    grid = np.linspace(-0.5, 1.0, 50)
    ab = cal.normalise(grid, a, b)
    assert np.allclose(ab, cal.normalise(grid, b, a))
    assert np.all(np.diff(ab) > 0)
    for s in (0.2, 0.8):
        assert cal.upper_bound(s, a) >= cal.normalise([s], a, b)[0]


def test_upper_bound_covers_every_region(synthetic: dict[str, Any]) -> None:
    cal: FairCalibration = synthetic["cal"]
    x = synthetic["test"][0]
    probe = cal.image_stats(x[:1])
    others = cal.image_stats(x)
    for s in (-0.3, 0.0, 0.5, 0.95):
        assert cal.upper_bound(s, probe) >= cal.normalise(np.full(len(x), s), probe, others).max()


def test_stats_in_a_gallery_transform_equal_those_of_the_plain_templates(
    synthetic: dict[str, Any],
) -> None:
    cal: FairCalibration = synthetic["cal"]
    x = synthetic["test"][0][:20]
    tf = GalleryTransform.from_seed(b"k" * 32, 32)
    plain = cal.image_stats(x)
    hidden = cal.image_stats_transformed(tf.forward(x), tf.forward)
    assert np.allclose(plain.mu, hidden.mu) and np.allclose(plain.sigma, hidden.sigma)


def test_a_set_too_small_or_of_another_model_is_refused() -> None:
    rng = np.random.default_rng(0)
    x, ids, _ = population(rng, 60)
    with pytest.raises(CalibrationSetError, match="holds 60 people"):
        fit_fair_calibration(x, ids, None, source="t")
    contract = EmbeddingContract("m", "1", "0" * 64, 128, "p")
    x, ids, _ = population(rng, 200)
    with pytest.raises(CalibrationSetError, match="another model"):
        fit_fair_calibration(x, ids, contract, source="t")
    with pytest.raises(CalibrationSetError, match="identities for"):
        fit_fair_calibration(x, ids[:-1], None, source="t")


def test_fit_params_are_checked() -> None:
    with pytest.raises(ValueError, match="clusters"):
        FitParams(clusters=1)
    with pytest.raises(ValueError, match="dims"):
        FitParams(dims=0)


def test_znorm_and_cohort_norm_standardise_against_their_cohort() -> None:
    rng = np.random.default_rng(3)
    cohort, _, _ = population(rng, 100)
    probe = cohort[:3]
    z = ZNorm.fit(cohort)
    st = z.image_stats(probe)
    sims = probe @ cohort.T
    assert np.allclose(st.mu, sims.mean(1)) and np.allclose(st.sigma, sims.std(1))
    c = CohortNorm.fit(cohort, top=10)
    st = c.image_stats(probe)
    top = -np.sort(-sims, axis=1)[:, :10]
    assert np.allclose(st.mu, top.mean(1)) and np.allclose(st.sigma, top.std(1))
    with pytest.raises(ValueError, match="top"):
        CohortNorm.fit(cohort, top=1)


# --------------------------------------------------------------------------------------------
# storage


def _contract_cal(
    contract: EmbeddingContract, seed: int = 5
) -> tuple[FairCalibration, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    x, ids, _ = population(rng, 200, d=contract.dim)
    cal = fit_fair_calibration(x, ids, contract, source="test", table_fitter=_fitter)
    return cal, x, ids


def test_save_and_load_round_trip_per_contract(tmp_path: Path) -> None:
    contract = EmbeddingContract("m", "1", "a" * 64, 32, "p")
    cal, _, _ = _contract_cal(contract)
    path = save_fair_calibration(cal, contract, tmp_path)
    assert path == fair_calibration_path(contract, tmp_path)
    assert path.parent == tmp_path / "calibrations" and path.name.endswith(".fair.json")
    loaded = load_fair_calibration(contract, tmp_path)
    assert loaded is not None
    assert loaded.name == cal.name and loaded.fingerprint == cal.fingerprint
    assert loaded.table is not None and cal.table is not None
    assert loaded.table.threshold_for(1e-3) == pytest.approx(cal.table.threshold_for(1e-3))
    other = replace(contract, version="2")
    assert load_fair_calibration(other, tmp_path) is None  # per contract
    with pytest.raises(ContractMismatchError):
        save_fair_calibration(cal, other, tmp_path)


def test_a_file_for_another_contract_or_unreadable_is_refused(tmp_path: Path) -> None:
    contract = EmbeddingContract("m", "1", "a" * 64, 32, "p")
    cal, _, _ = _contract_cal(contract)
    path = save_fair_calibration(cal, contract, tmp_path)
    doc = json.loads(path.read_text())
    doc["model"] = "someone-else"
    doc["table"]["model"] = "someone-else"
    path.write_text(json.dumps(doc))
    with pytest.raises(ContractMismatchError, match="someone-else"):
        load_fair_calibration(contract, tmp_path)
    path.write_text("{not json")
    with pytest.raises(CalibrationSetError, match="unreadable"):
        load_fair_calibration(contract, tmp_path)


# --------------------------------------------------------------------------------------------
# decisions use it when present, and are unchanged when absent


@pytest.fixture
def admins(app: Airside) -> None:
    register(app, ADMIN, OPERATOR)


def _install(app: Airside) -> FairCalibration:
    cal, _, _ = _contract_cal(app.analyzer.contract)
    save_fair_calibration(cal, app.analyzer.contract, app.settings.data_dir)
    return cal


def test_verification_without_a_fair_calibration_reports_none(
    app: Airside, admins: None, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    res = matching.verify_images(app, ADMIN, png_bytes(astronaut), png_bytes(hopper))
    assert res.calibration == RAW and res.as_dict()["calibration"] == "none"
    assert res.threshold == pytest.approx(
        app.calibration(app.analyzer.contract).threshold_for(1e-3)
    )


def test_verification_calibrates_the_score_and_records_which_calibration(
    app: Airside, admins: None, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    raw = matching.verify_images(app, ADMIN, png_bytes(astronaut), png_bytes(hopper))
    cal = _install(app)
    res = matching.verify_images(app, ADMIN, png_bytes(astronaut), png_bytes(hopper))
    assert res.calibration == cal.name and res.as_dict()["calibration"] == cal.name
    assert cal.table is not None
    assert res.threshold == pytest.approx(cal.table.threshold_for(1e-3))
    va, vb = (app.analyzer.embed([_face(app, img)])[0] for img in (astronaut, hopper))
    expected = cal.normalise(raw.score, cal.image_stats(va), cal.image_stats(vb))[0]
    assert res.score == pytest.approx(expected, abs=1e-5)
    assert res.score != pytest.approx(raw.score)
    with app.session() as s:
        rec = s.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc())).first()
        assert rec is not None and rec.action == "verify"
        assert json.loads(rec.result)["calibration"] == cal.name


def test_identification_ranks_by_calibrated_score(
    app: Airside, admins: None, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    galleries.create_gallery(app, ADMIN, "manifest", "boarding:KE123")
    for ref, img in (("PNR-1", astronaut), ("PNR-2", hopper)):
        enrolment.enrol(app, ADMIN, "manifest", ref, [png_bytes(img)], BasisInput("consent"))
    before = matching.identify(app, ADMIN, "manifest", png_bytes(astronaut))
    assert before.calibration == RAW
    cal = _install(app)
    res = matching.identify(app, ADMIN, "manifest", png_bytes(astronaut))
    assert res.calibration == cal.name and res.as_dict()["calibration"] == cal.name
    assert [c.subject for c in res.candidates] == ["PNR-1", "PNR-2"]
    assert res.candidates[0].score > res.candidates[1].score
    assert cal.table is not None
    assert res.threshold == pytest.approx(cal.table.threshold_for(res.comparison_fmr))
    sv = matching.verify_subject(app, ADMIN, "manifest", "PNR-1", png_bytes(astronaut))
    assert sv.calibration == cal.name
    assert sv.score == pytest.approx(res.candidates[0].score, abs=1e-5)
    with app.session() as s:
        rec = s.scalars(select(AuditRecord).where(AuditRecord.action == "identify")).all()[-1]
        assert json.loads(rec.result)["calibration"] == cal.name


# --------------------------------------------------------------------------------------------
# the service: admin only, audited, per contract


def _audit(app: Airside, action: str) -> list[AuditRecord]:
    with app.session() as s:
        return list(s.scalars(select(AuditRecord).where(AuditRecord.action == action)))


def test_only_an_administrator_builds_a_calibration_and_it_is_audited(
    app: Airside, admins: None
) -> None:
    contract = app.analyzer.contract
    rng = np.random.default_rng(7)
    x, ids, _ = population(rng, 200, d=contract.dim)
    with pytest.raises(AccessDenied):
        calibration_service.build_from_templates(
            app, OPERATOR, x, ids, contract=contract, source="ids.csv"
        )
    assert load_fair_calibration(contract, app.settings.data_dir) is None
    summary = calibration_service.build_from_templates(
        app, ADMIN, x, ids, contract=contract, source="ids.csv"
    )
    assert Path(summary.path).exists() and summary.identities == 200
    assert summary.threshold_at_1e3 is not None
    built = [r for r in _audit(app, "calibration.build") if r.decision == "built"]
    assert len(built) == 1 and json.loads(built[0].result)["calibration"] == summary.name
    refused = [r for r in _audit(app, "calibration.build") if r.decision.startswith("refused")]
    assert refused and refused[0].actor == OPERATOR.name
    shown = calibration_service.installed(app, ADMIN)
    assert shown is not None and shown.name == summary.name
    assert calibration_service.remove(app, ADMIN) is True
    assert calibration_service.remove(app, ADMIN) is False
    assert calibration_service.installed(app, ADMIN) is None
    assert [r.decision for r in _audit(app, "calibration.remove")] == ["removed"]


def test_templates_of_another_contract_are_refused(app: Airside, admins: None) -> None:
    other = replace(app.analyzer.contract, version="other")
    rng = np.random.default_rng(8)
    x, ids, _ = population(rng, 200, d=other.dim)
    with pytest.raises(ContractMismatchError):
        calibration_service.build_from_templates(
            app, ADMIN, x, ids, contract=other, source="ids.csv"
        )
    assert any(r.decision.startswith("refused") for r in _audit(app, "calibration.build"))


def test_building_from_a_gallery_uses_its_plain_templates_and_refuses_a_small_one(
    app: Airside,
    admins: None,
    astronaut: np.ndarray,
    hopper: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    galleries.create_gallery(app, ADMIN, "gate", "boarding:KE123")
    for ref, img in (("PNR-1", astronaut), ("PNR-2", hopper)):
        enrolment.enrol(app, ADMIN, "gate", ref, [png_bytes(img)], BasisInput("consent"))
    with pytest.raises(CalibrationSetError, match="holds 2 people"):
        calibration_service.build_from_gallery(app, ADMIN, "gate")
    refusal = _audit(app, "calibration.build")[-1]
    assert refusal.decision.startswith("refused") and refusal.gallery == "gate"
    seen: dict[str, Any] = {}

    def spy(vectors: np.ndarray, identities: list[str], contract: Any, **kw: Any) -> Any:
        seen["vectors"], seen["identities"] = np.asarray(vectors), list(identities)
        raise CalibrationSetError("stop here")

    monkeypatch.setattr(calibration_service, "fit_fair_calibration", spy)
    with pytest.raises(CalibrationSetError, match="stop here"):
        calibration_service.build_from_gallery(app, ADMIN, "gate")
    # Stored in the gallery's secret transform, handed to the fit in plain form: a plain
    # probe of the same face scores ~1 against its own template.
    probe = matching.verify_images(app, ADMIN, png_bytes(astronaut), png_bytes(astronaut))
    assert probe.score > 0.99
    assert len(set(seen["identities"])) == 2
    norms = np.linalg.norm(seen["vectors"], axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4)
    own = app.analyzer.embed([_face(app, astronaut)])[0]
    sims = seen["vectors"] @ (own / np.linalg.norm(own))
    assert sims.max() > 0.999


def _face(app: Airside, img: np.ndarray) -> Any:
    from airside.services.captures import Capture, capture

    res = capture(app.analyzer, png_bytes(img), max_pixels=app.settings.max_image_pixels)
    assert isinstance(res, Capture)
    return res.face


def test_calibrated_search_widens_until_its_best_candidate_is_exact(
    app: Airside, admins: None, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    from PIL import Image, ImageEnhance

    galleries.create_gallery(app, ADMIN, "crowd", "boarding:KE123")
    for n, (base, level) in enumerate(
        [(astronaut, 1.0), (hopper, 1.0), (astronaut, 0.8), (hopper, 0.8), (astronaut, 1.2),
         (hopper, 1.2)]
    ):  # fmt: skip
        img = np.asarray(ImageEnhance.Brightness(Image.fromarray(base)).enhance(level))
        enrolment.enrol(app, ADMIN, "crowd", f"P{n}", [png_bytes(img)], BasisInput("consent"))
    _install(app)
    probe = png_bytes(hopper)
    # k=1 searches 4 raw candidates first, fewer than the 6 templates: the bound decides.
    res = matching.identify(app, ADMIN, "crowd", probe, k=1)
    every = {
        f"P{n}": matching.verify_subject(app, ADMIN, "crowd", f"P{n}", probe).score
        for n in range(6)
    }
    best = max(every, key=lambda ref: every[ref])
    assert res.candidates[0].subject == best
    assert res.candidates[0].score == pytest.approx(every[best], abs=1e-5)
