"""Verification and identification decide with thresholds set as false-match rates."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from sqlalchemy import select
from tests.conftest import jpeg_bytes, png_bytes, register

from airside.config import Settings
from airside.errors import ConsentError, ContractMismatchError, NotFoundError
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries, matching
from airside.services.app import Airside
from airside.store.tables import AuditRecord, LegalBasis
from airside.vision.contract import EmbeddingContract, Template, similarity

AGENT = Principal("gate-agent", "admin")


@pytest.fixture(autouse=True)
def _principals(app: Airside) -> None:
    register(app, AGENT)


def altered(astronaut: np.ndarray) -> bytes:
    img = Image.fromarray(astronaut)
    img = img.resize((int(img.width * 0.7), int(img.height * 0.7)))
    img = ImageEnhance.Brightness(img).enhance(1.25)
    return jpeg_bytes(np.asarray(img), quality=40)


@pytest.fixture
def enrolled(app: Airside, astronaut: np.ndarray) -> str:
    galleries.create_gallery(app, AGENT, "manifest", "boarding:KE123")
    enrolment.enrol(app, AGENT, "manifest", "PNR-1", [png_bytes(astronaut)], BasisInput("consent"))
    return "manifest"


def test_same_person_altered_capture_verifies(app: Airside, astronaut: np.ndarray) -> None:
    res = matching.verify_images(app, AGENT, png_bytes(astronaut), altered(astronaut))
    assert res.match and res.score >= res.threshold
    assert res.fmr_target == pytest.approx(1e-3)


def test_different_people_do_not_verify(
    app: Airside, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    res = matching.verify_images(app, AGENT, png_bytes(astronaut), png_bytes(hopper))
    assert not res.match and res.score < res.threshold


def test_stricter_fmr_raises_the_threshold(app: Airside, astronaut: np.ndarray) -> None:
    a, b = png_bytes(astronaut), altered(astronaut)
    loose = matching.verify_images(app, AGENT, a, b, fmr=1e-2)
    strict = matching.verify_images(app, AGENT, a, b, fmr=1e-5)
    assert strict.threshold > loose.threshold
    assert strict.score == pytest.approx(loose.score)


def test_identify_finds_the_enrolled_traveller(
    app: Airside, enrolled: str, astronaut: np.ndarray
) -> None:
    res = matching.identify(app, AGENT, enrolled, altered(astronaut))
    assert res.match and res.candidates[0].subject == "PNR-1"


def test_identify_says_no_match_for_someone_not_enrolled(
    app: Airside, enrolled: str, hopper: np.ndarray
) -> None:
    res = matching.identify(app, AGENT, enrolled, png_bytes(hopper))
    assert not res.match
    assert res.candidates and res.candidates[0].score < res.threshold


def test_identify_returns_one_candidate_per_subject(
    app: Airside, enrolled: str, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    enrolment.enrol(app, AGENT, enrolled, "PNR-1", [altered(astronaut)])
    enrolment.enrol(app, AGENT, enrolled, "PNR-2", [png_bytes(hopper)], BasisInput("consent"))
    res = matching.identify(app, AGENT, enrolled, png_bytes(astronaut), k=5)
    subjects = [c.subject for c in res.candidates]
    assert subjects == ["PNR-1", "PNR-2"]
    assert res.candidates[0].score >= res.candidates[1].score


def test_index_is_loaded_from_the_store_in_a_new_process(
    app: Airside, enrolled: str, astronaut: np.ndarray
) -> None:
    fresh = Airside(app.settings, analyzer_factory=lambda _s: app.analyzer)
    try:
        res = matching.identify(fresh, AGENT, enrolled, altered(astronaut))
    finally:
        fresh.close()
    assert res.match and res.candidates[0].subject == "PNR-1"


def test_every_search_is_audited(app: Airside, enrolled: str, hopper: np.ndarray) -> None:
    matching.identify(app, AGENT, enrolled, png_bytes(hopper))
    with app.session() as s:
        rec = s.scalars(select(AuditRecord).where(AuditRecord.action == "identify")).one()
    assert rec.actor == "gate-agent" and rec.gallery == enrolled and rec.decision == "no_match"
    assert rec.input_digest and len(rec.input_digest) == 64


def test_the_log_keeps_a_keyed_digest_of_the_probe_not_its_hash(
    app: Airside, enrolled: str, hopper: np.ndarray, tmp_path: Path
) -> None:
    probe = png_bytes(hopper)
    matching.identify(app, AGENT, enrolled, probe)
    with app.session() as s:
        rec = s.scalars(select(AuditRecord).where(AuditRecord.action == "identify")).one()
    raw = hashlib.sha256(probe).hexdigest()
    assert rec.input_digest == app.probe_digest(raw) and rec.input_digest != raw
    elsewhere = Airside(Settings(data_dir=tmp_path / "elsewhere"))
    try:  # another installation (another key) cannot link the record to the photo
        assert elsewhere.probe_digest(raw) != rec.input_digest
    finally:
        elsewhere.close()


def test_verify_against_enrolled_subject(
    app: Airside, enrolled: str, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    assert matching.verify_subject(app, AGENT, enrolled, "PNR-1", altered(astronaut)).match
    assert not matching.verify_subject(app, AGENT, enrolled, "PNR-1", png_bytes(hopper)).match


def test_verify_against_unknown_subject_is_refused(
    app: Airside, enrolled: str, astronaut: np.ndarray
) -> None:
    with pytest.raises(NotFoundError):
        matching.verify_subject(app, AGENT, enrolled, "PNR-404", png_bytes(astronaut))


def test_withdrawn_basis_stops_verification(
    app: Airside, enrolled: str, astronaut: np.ndarray
) -> None:
    from datetime import UTC, datetime

    with app.session() as s:
        for b in s.scalars(select(LegalBasis)):
            b.withdrawn_at = datetime.now(UTC)
    with pytest.raises(ConsentError):
        matching.verify_subject(app, AGENT, enrolled, "PNR-1", png_bytes(astronaut))


def test_templates_of_different_contracts_are_never_compared() -> None:
    a = EmbeddingContract("dlib-resnet", "1", "aa" * 32, 4, "chip150")
    b = EmbeddingContract("arcface", "1", "bb" * 32, 4, "arcface112")
    ta = Template.from_embedding(np.ones(4), a)
    tb = Template.from_embedding(np.ones(4), b)
    assert similarity(ta, Template.from_embedding(np.ones(4), a)) == pytest.approx(1.0)
    with pytest.raises(ContractMismatchError):
        similarity(ta, tb)


def test_an_enrolment_by_another_process_is_seen_by_the_next_search(
    app: Airside, enrolled: str, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    assert not matching.identify(app, AGENT, enrolled, png_bytes(hopper)).match
    other = Airside(app.settings, analyzer_factory=lambda _s: app.analyzer)
    try:
        enrolment.enrol(other, AGENT, enrolled, "PNR-2", [png_bytes(hopper)], BasisInput("consent"))
    finally:
        other.close()
    res = matching.identify(app, AGENT, enrolled, jpeg_bytes(hopper, quality=60))
    assert res.match and res.candidates[0].subject == "PNR-2"


def test_a_batch_of_faces_is_searched_in_one_transaction_with_a_record_each(
    app: Airside,
    enrolled: str,
    astronaut: np.ndarray,
    hopper: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a camera does with the faces of one frame: every search checked and audited,
    but one transaction for them all, and the fair calibration looked up once."""
    galleries.create_gallery(app, AGENT, "crew", "boarding:KE123")
    analyzer = app.analyzer
    vecs = analyzer.embed([analyzer.observe(astronaut)[0], analyzer.observe(hopper)[0]])
    probes = [
        matching.Probe(v, 80.0, hashlib.sha256(bytes([i])).hexdigest(), {"track": i})
        for i, v in enumerate(vecs)
    ]
    with app.session() as s:
        before = len(s.scalars(select(AuditRecord).where(AuditRecord.action == "identify")).all())
    sessions, lookups = [0], [0]
    real_session, real_lookup = app.session, matching.load_fair_calibration

    def session(**kw: bool) -> Any:
        sessions[0] += 1
        return real_session(**kw)

    def lookup(*a: Any) -> Any:
        lookups[0] += 1
        return real_lookup(*a)

    monkeypatch.setattr(app, "session", session)
    monkeypatch.setattr(matching, "load_fair_calibration", lookup)
    [[a_manifest, a_crew], [h_manifest, h_crew]] = matching.identify_many(
        app, AGENT, [enrolled, "crew"], probes, contract=analyzer.contract, k=1
    )
    monkeypatch.undo()
    assert a_manifest.match and a_manifest.candidates[0].subject == "PNR-1"
    assert not h_manifest.match and not a_crew.candidates and not h_crew.candidates
    assert sessions[0] == 2 + 1  # each gallery's authorisation, then one for every search
    assert lookups[0] == 1
    with app.session() as s:
        records = s.scalars(select(AuditRecord).where(AuditRecord.action == "identify")).all()
    assert len(records) - before == 4  # one per face and gallery
    single = matching.identify_embedding(
        app, AGENT, enrolled, vecs[0], contract=analyzer.contract, quality=80.0,
        input_sha256=probes[0].input_sha256, k=1,
    )  # fmt: skip
    assert single.candidates[0].score == pytest.approx(a_manifest.candidates[0].score)
