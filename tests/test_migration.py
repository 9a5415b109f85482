"""``gallery migrate``: a gallery moves to another model only through fresh images.

Two real contracts: the dlib default analyzer, and one built from a tiny generic ONNX
embedder registered in the models directory (ArcFace alignment, eye centres from dlib).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, update
from tests.conftest import png_bytes, register
from tests.tiny_onnx import linear_embedder
from typer.testing import CliRunner

from airside.biometrics.calibration import save_calibration
from airside.cli.main import app as cli_app
from airside.errors import AccessDenied, AirsideError, ConflictError, ContractMismatchError
from airside.evaluation.metrics import fit_calibration
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries, matching
from airside.services.app import Airside
from airside.services.migration import NO_RETAINED_IMAGE, analyzer_for_model, migrate_gallery
from airside.services.model_admin import register_model, unregister_model
from airside.store.tables import AuditRecord, Gallery, Subject
from airside.store.tables import Template as TemplateRow
from airside.vision.analyzer import FaceAnalyzer
from airside.vision.contract import Template, similarity

ADMIN = Principal("admin-1", "admin")
AGENT = Principal("agent-1", "operator")


@pytest.fixture
def photos(tmp_path: Path, astronaut: np.ndarray, hopper: np.ndarray) -> dict[str, Path]:
    folder = tmp_path / "fresh"
    folder.mkdir()
    out = {"astro": folder / "astro.png", "grace": folder / "grace.png"}
    out["astro"].write_bytes(png_bytes(astronaut))
    out["grace"].write_bytes(png_bytes(hopper))
    return out


@pytest.fixture
def tiny(app: Airside, tmp_path: Path) -> FaceAnalyzer:
    """Model 'tiny' registered, calibrated, and the analyzer it describes."""
    register(app, ADMIN, AGENT)
    src = linear_embedder(tmp_path / "in" / "tiny.onnx")
    register_model(app, ADMIN, src, "generic", licence="MIT", name="tiny", mean=127.5, std=127.5)
    analyzer = analyzer_for_model(app.settings, "tiny")
    rng = np.random.default_rng(0)
    table = fit_calibration(
        rng.normal(0.95, 0.02, 500), rng.normal(0.3, 0.1, 100_000),
        analyzer.contract.fingerprint, "test",
    )  # fmt: skip
    save_calibration(table, analyzer.contract, app.settings.data_dir)
    return analyzer


@pytest.fixture
def gallery(app: Airside, tiny: FaceAnalyzer, photos: dict[str, Path]) -> str:
    galleries.create_gallery(app, ADMIN, "travel", "seamless-travel", retain_seconds=86_400)
    for subject, path in photos.items():
        enrolment.enrol(app, ADMIN, "travel", subject, [path], BasisInput("consent"))
    return "travel"


def contract_of(app: Airside, name: str) -> str:
    with app.session() as s:
        return str(s.scalar(select(Gallery.contract_fingerprint).where(Gallery.name == name)))


def test_supplied_subjects_are_reenrolled_and_the_rest_listed(
    app: Airside, tiny: FaceAnalyzer, gallery: str, photos: dict[str, Path]
) -> None:
    rep = migrate_gallery(app, ADMIN, gallery, "tiny", images={"astro": [photos["astro"]]})
    assert (rep.target, rep.created, rep.retained_images) == ("travel@tiny", True, 0)
    assert rep.reenrolled == ["astro"]
    assert rep.recapture == [{"subject": "grace", "reason": NO_RETAINED_IMAGE}]
    assert contract_of(app, "travel@tiny") == tiny.contract.fingerprint == rep.contract
    assert contract_of(app, gallery) == app.analyzer.contract.fingerprint  # untouched


def test_without_fresh_images_everyone_must_be_captured_again(
    app: Airside, tiny: FaceAnalyzer, gallery: str
) -> None:
    rep = migrate_gallery(app, ADMIN, gallery, "tiny")
    assert rep.reenrolled == []
    assert [r["subject"] for r in rep.recapture] == ["astro", "grace"]
    assert {r["reason"] for r in rep.recapture} == {NO_RETAINED_IMAGE}


def test_each_gallery_is_searched_with_its_own_model_and_templates_never_mix(
    app: Airside, tiny: FaceAnalyzer, gallery: str, photos: dict[str, Path], astronaut: np.ndarray
) -> None:
    migrate_gallery(app, ADMIN, gallery, "tiny", images={"astro": [photos["astro"]]})
    probe = png_bytes(astronaut)
    # The installation's own model still searches the old gallery; the new one is searched
    # with the model it was migrated to, by the same installation.
    res = matching.identify(app, AGENT, "travel@tiny", probe)
    assert res.match and res.candidates[0].subject == "astro"
    assert app.analyzer_for(tiny.contract) is not app.analyzer
    assert app.analyzer_for(tiny.contract).contract == tiny.contract
    moved = Airside(app.settings, analyzer_factory=lambda _s: tiny)
    try:
        res = matching.identify(moved, AGENT, "travel@tiny", probe)
        assert res.match and res.candidates[0].subject == "astro"
    finally:
        moved.close()
    faces = app.analyzer.observe(astronaut)
    a = Template.from_embedding(app.analyzer.embed(faces[:1])[0], app.analyzer.contract)
    b = Template.from_embedding(tiny.embed(tiny.observe(astronaut)[:1])[0], tiny.contract)
    with pytest.raises(ContractMismatchError):
        similarity(a, b)


def test_consent_for_the_purpose_carries_over(
    app: Airside, tiny: FaceAnalyzer, gallery: str, photos: dict[str, Path]
) -> None:
    migrate_gallery(app, ADMIN, gallery, "tiny", images={"grace": [photos["grace"]]})
    with app.session() as s:
        row = s.scalars(
            select(TemplateRow).join(Gallery).where(Gallery.name == "travel@tiny")
        ).one()
        assert row.legal_basis_id is not None
        assert s.scalar(select(Gallery.purpose).where(Gallery.name == "travel@tiny")) == (
            "seamless-travel"
        )


def test_migration_never_extends_retention(
    app: Airside, tiny: FaceAnalyzer, gallery: str, photos: dict[str, Path]
) -> None:
    now = datetime.now(UTC)
    enrolled_at = {"astro": now - timedelta(hours=3), "grace": now - timedelta(hours=30)}
    with app.session() as s:
        for ref, t in enrolled_at.items():
            sid = s.scalar(select(Subject.id).where(Subject.reference == ref))
            s.execute(update(TemplateRow).where(TemplateRow.subject_id == sid).values(created_at=t))
    rep = migrate_gallery(app, ADMIN, gallery, "tiny", images={k: [p] for k, p in photos.items()})
    assert rep.reenrolled == ["astro"]
    assert rep.recapture == [{"subject": "grace", "reason": "past retention: not migrated"}]
    with app.session() as s:
        t = s.scalars(
            select(TemplateRow.created_at).join(Gallery).where(Gallery.name == "travel@tiny")
        ).one()
    assert abs((t.replace(tzinfo=UTC) - enrolled_at["astro"]).total_seconds()) < 1


def test_a_dry_run_changes_nothing(
    app: Airside, tiny: FaceAnalyzer, gallery: str, photos: dict[str, Path]
) -> None:
    rep = migrate_gallery(
        app, ADMIN, gallery, "tiny", images={"astro": [photos["astro"]]}, dry_run=True
    )
    assert rep.dry_run and rep.reenrolled == ["astro"] and not rep.created
    with app.session() as s:
        assert s.scalar(select(Gallery).where(Gallery.name == "travel@tiny")) is None


def test_migration_is_audited_and_for_administrators_only(
    app: Airside, tiny: FaceAnalyzer, gallery: str
) -> None:
    with pytest.raises(AccessDenied):
        migrate_gallery(app, AGENT, gallery, "tiny")
    migrate_gallery(app, ADMIN, gallery, "tiny")
    with app.session() as s:
        recs = s.scalars(select(AuditRecord).where(AuditRecord.action == "gallery.migrate")).all()
    assert [(r.actor, r.decision) for r in recs] == [
        ("agent-1", "refused:forbidden"),
        ("admin-1", "migrated"),
    ]
    result = json.loads(recs[1].result)
    assert result["into"] == "travel@tiny" and result["recapture"] == 2


def test_a_model_galleries_are_bound_to_is_not_removed_silently(
    app: Airside, tiny: FaceAnalyzer, gallery: str
) -> None:
    migrate_gallery(app, ADMIN, gallery, "tiny")
    with pytest.raises(ConflictError, match="travel@tiny") as e:
        unregister_model(app, ADMIN, "tiny")
    assert e.value.code == "model_in_use"


def test_an_uncalibrated_model_is_refused_before_anything_is_written(
    app: Airside, tiny: FaceAnalyzer, gallery: str, tmp_path: Path
) -> None:
    src = linear_embedder(tmp_path / "in" / "other.onnx", seed=3)
    register_model(app, ADMIN, src, "generic", licence="MIT", name="other", mean=0, std=1)
    with pytest.raises(AirsideError, match="calibration table") as e:
        migrate_gallery(app, ADMIN, gallery, "other")
    assert e.value.code == "no_calibration"
    assert e.value.details == {"next": "calibration.fit"}


def test_the_cli_migrates_from_a_csv_of_fresh_images(
    app: Airside, tiny: FaceAnalyzer, gallery: str, photos: dict[str, Path], tmp_path: Path
) -> None:
    sheet = tmp_path / "fresh.csv"
    sheet.write_text(f"subject,image\nastro,{photos['astro']}\n")
    res = CliRunner().invoke(
        cli_app,
        ["--data-dir", str(app.settings.data_dir), "gallery", "migrate", gallery, "--to", "tiny",
         "--csv", str(sheet), "--into", "travel-v2", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    rep = json.loads(res.stdout)
    assert (rep["target"], rep["reenrolled"]) == ("travel-v2", ["astro"])
    assert [r["subject"] for r in rep["recapture"]] == ["grace"]


def test_a_gallery_on_milvus_migrates_into_its_own_milvus_collection(
    app: Airside, tiny: FaceAnalyzer, photos: dict[str, Path]
) -> None:
    pytest.importorskip("milvus_lite", reason="milvus-lite is a test extra (make test)")
    from airside.services.gallery_view import get_gallery

    galleries.create_gallery(app, ADMIN, "national", "seamless-travel", index="milvus")
    enrolment.enrol(app, ADMIN, "national", "astro", [photos["astro"]], BasisInput("consent"))
    migrate_gallery(app, ADMIN, "national", "tiny", images={"astro": [photos["astro"]]})
    with app.session() as s:
        old, new = (
            app.index(s, get_gallery(s, "national")),
            app.index(s, get_gallery(s, "national@tiny")),
        )
        new_ids = list(
            s.scalars(
                select(TemplateRow.id).where(
                    TemplateRow.gallery_id == get_gallery(s, "national@tiny").id
                )
            )
        )
    assert (old.kind, new.kind) == ("milvus", "milvus")
    assert old.collection != new.collection
    rows = app.milvus_client().query(new.collection, ids=new_ids, output_fields=["id"])
    assert [r["id"] for r in rows] == new_ids
