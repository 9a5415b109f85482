"""A gallery is bound to the embedder it was created with: galleries of dlib's ResNet keep
working after the default became SFace, a gallery can be created with another embedder,
and one whose embedder this installation cannot build is refused until migrated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import png_bytes, register

from airside.biometrics.calibration import CalibrationTable, save_calibration
from airside.config import Settings
from airside.errors import ContractMismatchError
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries, matching
from airside.services.app import Airside
from airside.services.audit_service import verify_chain
from airside.store.tables import AuditRecord

ADMIN = Principal("officer", "admin")
CONSENT = BasisInput("consent")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def _open(data_dir: Path, **settings: object) -> Airside:
    app = Airside(Settings(data_dir=data_dir, **settings))
    register(app, ADMIN)
    return app


@pytest.fixture
def dlib_gallery(data_dir: Path, astronaut: np.ndarray, hopper: np.ndarray) -> Iterator[Path]:
    """A gallery enrolled by an installation that ran dlib's models."""
    app = _open(data_dir, embedder_model="dlib", face_detector="dlib")
    try:
        galleries.create_gallery(app, ADMIN, "old", "boarding")
        enrolment.enrol(app, ADMIN, "old", "astro", [png_bytes(astronaut)], CONSENT)
        enrolment.enrol(app, ADMIN, "old", "grace", [png_bytes(hopper)], CONSENT)
    finally:
        app.close()
    yield data_dir


def test_a_dlib_gallery_keeps_identifying_after_the_default_changes(
    dlib_gallery: Path, astronaut: np.ndarray
) -> None:
    app = _open(dlib_gallery)
    try:
        assert app.analyzer.contract.model_id == "sface:sface"
        res = matching.identify(app, ADMIN, "old", png_bytes(astronaut))
        assert res.match and res.candidates[0].subject == "astro"
        v = matching.verify_subject(app, ADMIN, "old", "grace", png_bytes(astronaut))
        assert not v.match
    finally:
        app.close()


def test_a_dlib_gallery_keeps_enrolling_with_dlib(
    dlib_gallery: Path, astronaut: np.ndarray, two_faces: np.ndarray
) -> None:
    app = _open(dlib_gallery)
    try:
        face = two_faces[:, : two_faces.shape[1] // 2]
        r = enrolment.enrol(app, ADMIN, "old", "astro2", [png_bytes(face)], CONSENT)
        assert r.templates == 1
        info = {g.name: g for g in galleries.list_galleries(app, ADMIN)}["old"]
        assert info.contract.startswith("dlib-resnet@")
    finally:
        app.close()


def test_new_galleries_take_the_default_sface(data_dir: Path, astronaut: np.ndarray) -> None:
    app = _open(data_dir)
    try:
        info = galleries.create_gallery(app, ADMIN, "new", "boarding")
        assert info.contract.startswith("sface:sface@")
    finally:
        app.close()


def test_a_gallery_can_be_created_with_dlib_in_an_sface_installation(
    data_dir: Path, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    app = _open(data_dir)
    try:
        info = galleries.create_gallery(app, ADMIN, "d", "boarding", embedder="dlib")
        assert info.contract.startswith("dlib-resnet@")
        enrolment.enrol(app, ADMIN, "d", "grace", [png_bytes(hopper)], CONSENT)
        res = matching.identify(app, ADMIN, "d", png_bytes(hopper))
        assert res.match and res.candidates[0].subject == "grace"
        with app.session() as s:
            created = s.query(AuditRecord).filter(AuditRecord.action == "gallery.create").one()
            assert "dlib-resnet@" in created.result
        assert verify_chain(app, ADMIN).ok
    finally:
        app.close()


def test_a_gallery_whose_model_is_gone_is_refused_until_migrated(
    data_dir: Path, astronaut: np.ndarray
) -> None:
    from tests.tiny_onnx import linear_embedder

    from airside.vision.model_files import add_model

    app = _open(data_dir)
    try:
        src = linear_embedder(data_dir.parent / "in" / "tiny.onnx")
        add_model(app.settings.model_registry, src, "arcface", name="tiny", licence="MIT")
        contract = app.analyzer_named("tiny").contract
        table = CalibrationTable(contract.fingerprint, [0.1, 0.01], [0.2, 0.5], [None, None],
                                 impostors=1000, genuines=0, source="a test")  # fmt: skip
        save_calibration(table, contract, app.settings.data_dir)
        galleries.create_gallery(app, ADMIN, "t", "boarding", embedder="tiny", fmr_target=0.1)
    except Exception:
        app.close()
        raise
    app.close()
    (data_dir / "models" / "tiny.manifest.json").unlink()
    app = _open(data_dir)
    try:
        with pytest.raises(ContractMismatchError, match="migrate the gallery"):
            matching.identify(app, ADMIN, "t", png_bytes(astronaut))
    finally:
        app.close()


def test_an_e_gate_gallery_can_choose_the_fused_contract(
    data_dir: Path, astronaut: np.ndarray, hopper: np.ndarray, two_faces: np.ndarray
) -> None:
    app = _open(data_dir)
    try:
        info = galleries.create_gallery(app, ADMIN, "egate", "border:egate", embedder="fused")
        assert info.contract.startswith("fused") and "/256d/" in info.contract
        enrolment.enrol(app, ADMIN, "egate", "astro", [png_bytes(astronaut)], CONSENT)
        enrolment.enrol(app, ADMIN, "egate", "grace", [png_bytes(hopper)], CONSENT)
        live = two_faces[:, : two_faces.shape[1] // 2]  # another capture of the astronaut
        same = matching.verify_subject(app, ADMIN, "egate", "astro", png_bytes(live))
        other = matching.verify_subject(app, ADMIN, "egate", "grace", png_bytes(live))
        assert same.match and not other.match
        assert same.threshold_table.startswith("shipped:fused")
    finally:
        app.close()
