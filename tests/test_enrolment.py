"""Enrolment stores a template only with a legal basis covering the gallery's purpose."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from tests.conftest import jpeg_bytes, png_bytes, register

from airside.config import Settings
from airside.errors import ConflictError, ConsentError, ContractMismatchError, NotFoundError
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries
from airside.services.app import Airside
from airside.services.enrolment import EnrolmentRefused, EnrolRow
from airside.store.tables import AuditRecord, LegalBasis, Subject, Template

OFFICER = Principal("officer-7", "admin")
CONSENT = BasisInput("consent", evidence_sha256="ab" * 32)


@pytest.fixture(autouse=True)
def _principals(app: Airside) -> None:
    register(app, OFFICER)


@pytest.fixture
def gallery(app: Airside) -> str:
    galleries.create_gallery(app, OFFICER, "boarding-KE123", "boarding:KE123:2026-11-26")
    return "boarding-KE123"


def count(app: Airside, model: type) -> int:
    with app.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_enrol_with_consent_stores_one_template(
    app: Airside, gallery: str, astronaut: np.ndarray
) -> None:
    res = enrolment.enrol(app, OFFICER, gallery, "PNR-1", [png_bytes(astronaut)], CONSENT)
    assert (res.subject, res.templates, res.added) == ("PNR-1", 1, 1)
    with app.session() as s:
        basis = s.scalar(select(LegalBasis))
        assert basis is not None
        assert (basis.kind, basis.purpose) == ("consent", "boarding:KE123:2026-11-26")


def test_enrol_without_basis_is_refused_and_writes_nothing_but_the_refusal(
    app: Airside, gallery: str, astronaut: np.ndarray
) -> None:
    with pytest.raises(ConsentError):
        enrolment.enrol(app, OFFICER, gallery, "PNR-1", [png_bytes(astronaut)])
    assert count(app, Template) == 0 and count(app, Subject) == 0
    with app.session() as s:
        last = s.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc())).first()
    assert last is not None and last.decision == "refused:no_legal_basis"


def test_basis_for_another_purpose_does_not_cover(
    app: Airside, gallery: str, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    galleries.create_gallery(app, OFFICER, "seamless", "seamless-travel")
    enrolment.enrol(app, OFFICER, "seamless", "PNR-1", [png_bytes(hopper)], CONSENT)
    with pytest.raises(ConsentError):
        enrolment.enrol(app, OFFICER, gallery, "PNR-1", [png_bytes(astronaut)])


def test_expired_basis_does_not_cover(app: Airside, gallery: str, astronaut: np.ndarray) -> None:
    past = BasisInput("consent", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(ConsentError, match="expired"):
        enrolment.enrol(app, OFFICER, gallery, "PNR-1", [png_bytes(astronaut)], past)


def test_public_task_needs_a_reference(app: Airside, gallery: str, astronaut: np.ndarray) -> None:
    with pytest.raises(ConsentError, match="needs a reference") as err:
        enrolment.enrol(
            app, OFFICER, gallery, "PNR-1", [png_bytes(astronaut)], BasisInput("public_task")
        )
    assert err.value.details == {"field": "basis_ref"}


def test_same_image_twice_is_idempotent(app: Airside, gallery: str, astronaut: np.ndarray) -> None:
    img = png_bytes(astronaut)
    enrolment.enrol(app, OFFICER, gallery, "PNR-1", [img], CONSENT)
    again = enrolment.enrol(app, OFFICER, gallery, "PNR-1", [img])
    assert (again.added, again.already_enrolled, again.templates) == (0, 1, 1)
    assert count(app, Template) == 1


def test_same_image_for_another_subject_is_refused(
    app: Airside, gallery: str, astronaut: np.ndarray
) -> None:
    img = png_bytes(astronaut)
    enrolment.enrol(app, OFFICER, gallery, "PNR-1", [img], CONSENT)
    with pytest.raises(ConflictError):
        enrolment.enrol(app, OFFICER, gallery, "PNR-2", [img], CONSENT)
    assert count(app, Template) == 1


def test_several_faces_are_refused(app: Airside, gallery: str, two_faces: np.ndarray) -> None:
    with pytest.raises(EnrolmentRefused) as e:
        enrolment.enrol(app, OFFICER, gallery, "PNR-1", [png_bytes(two_faces)], CONSENT)
    assert e.value.refusals[0].code == "several_faces"
    assert count(app, Template) == 0


def test_mission_patch_is_not_a_second_face(
    app: Airside, gallery: str, astronaut: np.ndarray
) -> None:
    res = enrolment.enrol(app, OFFICER, gallery, "PNR-1", [png_bytes(astronaut)], CONSENT)
    assert res.added == 1


def test_no_face_is_refused_with_its_reason(app: Airside, gallery: str) -> None:
    from skimage import data

    with pytest.raises(EnrolmentRefused, match="no face"):
        enrolment.enrol(app, OFFICER, gallery, "PNR-1", [png_bytes(data.chelsea())], CONSENT)


def test_capture_below_quality_bar_is_refused_with_reasons(
    app: Airside, astronaut: np.ndarray
) -> None:
    from PIL import Image

    galleries.create_gallery(app, OFFICER, "strict", "e-gate", quality_bar=60)
    small = np.asarray(Image.fromarray(astronaut).resize((256, 256)).resize((200, 200)))
    blurred = np.asarray(
        Image.fromarray(small).resize((100, 100)).resize((200, 200), Image.Resampling.BILINEAR)
    )
    with pytest.raises(EnrolmentRefused) as e:
        enrolment.enrol(app, OFFICER, "strict", "PNR-1", [png_bytes(blurred)], CONSENT)
    refusal = e.value.refusals[0]
    assert refusal.code == "quality"
    assert refusal.reasons and any("small" in r or "blur" in r for r in refusal.reasons)


def test_one_bad_photo_refuses_the_whole_enrolment(
    app: Airside, gallery: str, astronaut: np.ndarray, two_faces: np.ndarray
) -> None:
    with pytest.raises(EnrolmentRefused):
        enrolment.enrol(
            app,
            OFFICER,
            gallery,
            "PNR-1",
            [jpeg_bytes(astronaut), png_bytes(two_faces)],
            CONSENT,
        )
    assert count(app, Template) == 0 and count(app, Subject) == 0


def test_unknown_gallery_is_refused(app: Airside, astronaut: np.ndarray) -> None:
    with pytest.raises(NotFoundError):
        enrolment.enrol(app, OFFICER, "nope", "PNR-1", [png_bytes(astronaut)], CONSENT)


def test_gallery_of_another_model_is_refused(
    app: Airside, gallery: str, astronaut: np.ndarray
) -> None:
    from airside.store.tables import Gallery

    with app.session() as s:
        g = s.scalar(select(Gallery))
        assert g is not None
        g.contract_fingerprint = "arcface@1/0000/512d/arcface112-v1"
    with pytest.raises(ContractMismatchError):
        enrolment.enrol(app, OFFICER, gallery, "PNR-1", [png_bytes(astronaut)], CONSENT)


def test_batch_is_all_or_nothing_by_default(
    app: Airside, gallery: str, astronaut: np.ndarray, hopper: np.ndarray, two_faces: np.ndarray
) -> None:
    rows = [
        EnrolRow("A", png_bytes(astronaut), CONSENT),
        EnrolRow("B", png_bytes(two_faces), CONSENT),
        EnrolRow("C", png_bytes(hopper), CONSENT),
    ]
    with pytest.raises(EnrolmentRefused):
        enrolment.enrol_batch(app, OFFICER, gallery, rows)
    assert count(app, Template) == 0 and count(app, Subject) == 0


def test_batch_can_enrol_good_rows_and_list_refused(
    app: Airside, gallery: str, astronaut: np.ndarray, hopper: np.ndarray, two_faces: np.ndarray
) -> None:
    rows = [
        EnrolRow("A", png_bytes(astronaut), CONSENT),
        EnrolRow("B", png_bytes(two_faces), CONSENT),
        EnrolRow("C", png_bytes(hopper), CONSENT),
    ]
    res = enrolment.enrol_batch(app, OFFICER, gallery, rows, skip_refused=True)
    assert sorted(r.subject for r in res.enrolled) == ["A", "C"]
    assert [(n, s, r.code) for n, s, r in res.refused] == [(2, "B", "several_faces")]
    assert count(app, Template) == 2


def test_every_enrolment_is_audited_in_its_transaction(
    app: Airside, gallery: str, astronaut: np.ndarray
) -> None:
    enrolment.enrol(app, OFFICER, gallery, "PNR-1", [png_bytes(astronaut)], CONSENT)
    with app.session() as s:
        rec = s.scalar(select(AuditRecord).where(AuditRecord.action == "enrol"))
        tpl = s.scalar(select(Template))
    assert rec is not None and tpl is not None
    assert rec.actor == "officer-7" and rec.decision == "enrolled"
    from airside.governance.audit import subject_digest

    with app.session() as s:
        salt = s.scalar(select(Subject.audit_salt))
    assert salt is not None
    assert subject_digest(salt, tpl.source_sha256) in (rec.input_digest or "")
    assert tpl.source_sha256 not in (rec.input_digest or "")


def test_face_found_only_by_the_fallback_detector_is_not_enrolled(
    tmp_path: Path, astronaut: np.ndarray
) -> None:
    # dlib's HOG (AIRSIDE_FACE_DETECTOR=dlib) misses a face on its side; its CNN fallback
    # finds it, and enrolment refuses what only the fallback saw.
    dlib = Settings(data_dir=tmp_path / "dlib", face_detector="dlib", embedder_model="dlib")
    dlib_app = Airside(dlib)
    try:
        register(dlib_app, OFFICER)
        galleries.create_gallery(dlib_app, OFFICER, "g", "boarding:KE1")
        sideways = np.ascontiguousarray(np.rot90(astronaut))
        with pytest.raises(EnrolmentRefused) as e:
            enrolment.enrol(dlib_app, OFFICER, "g", "PNR-1", [png_bytes(sideways)], CONSENT)
        assert e.value.refusals[0].code == "quality"
        assert "fallback detector" in e.value.refusals[0].message
    finally:
        dlib_app.close()
