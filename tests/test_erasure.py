"""Erasure leaves no trace of a subject's biometrics; withdrawal of consent erases too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from tests.conftest import jpeg_bytes, png_bytes, register

from airside.errors import ConsentError, NotFoundError
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, erasure, galleries, matching
from airside.services.app import Airside
from airside.services.audit_service import verify_chain as audit_verify
from airside.store.models import AuditRecord, LegalBasis, Subject, Template

DPO = Principal("dpo", "admin")


@pytest.fixture(autouse=True)
def _principals(app: Airside) -> None:
    register(app, DPO)


@pytest.fixture
def enrolled(app: Airside, astronaut: np.ndarray, hopper: np.ndarray) -> dict[str, object]:
    galleries.create_gallery(app, DPO, "boarding", "boarding:KE123")
    galleries.create_gallery(app, DPO, "seamless", "seamless-travel")
    photo = png_bytes(astronaut)
    enrolment.enrol(app, DPO, "boarding", "PNR-1", [photo], BasisInput("consent"))
    enrolment.enrol(app, DPO, "seamless", "PNR-1", [photo], BasisInput("consent"))
    enrolment.enrol(app, DPO, "boarding", "PNR-2", [png_bytes(hopper)], BasisInput("consent"))
    from airside.governance.template_protection import StoredTemplate

    with app.session() as s:
        rows = s.execute(
            select(*StoredTemplate.columns())
            .join(Subject, Subject.id == Template.subject_id)
            .where(Subject.reference == "PNR-1")
        ).all()
    stored = [StoredTemplate(*r) for r in rows]
    assert all(t.key_id is not None for t in stored)  # encrypted at rest by default
    by_gallery: dict[int, list[StoredTemplate]] = {}
    for t in stored:
        by_gallery.setdefault(t.gallery_id, []).append(t)
    plain = [
        v.astype("<f4").tobytes()
        for g, ts in by_gallery.items()
        for v in app.template_protector.decode(ts, 128)
    ]
    return {
        "vectors": plain,
        "ciphertexts": [t.vector for t in stored],
        "hashes": {t.source_sha256 for t in stored},
    }


def data_files(app: Airside) -> list[Path]:
    return [p for p in app.settings.data_dir.rglob("*") if p.is_file()]


def test_erasure_removes_templates_bases_and_subject(
    app: Airside, enrolled: dict[str, object]
) -> None:
    receipt = erasure.erase_subject(app, DPO, "PNR-1")
    assert receipt.templates == 2 and receipt.galleries == ["boarding", "seamless"]
    assert len(receipt.receipt) == 64
    with app.session() as s:
        assert s.scalar(select(Subject).where(Subject.reference == "PNR-1")) is None
        assert s.scalars(select(LegalBasis)).all() != []  # PNR-2's basis stays
        assert len(s.scalars(select(Template)).all()) == 1


def test_no_trace_remains_in_the_files(app: Airside, enrolled: dict[str, object]) -> None:
    erasure.erase_subject(app, DPO, "PNR-1")
    blobs = b"".join(p.read_bytes() for p in data_files(app))
    for vec in [*enrolled["vectors"], *enrolled["ciphertexts"]]:  # type: ignore[misc]
        assert vec[:64] not in blobs
    for sha in enrolled["hashes"]:  # type: ignore[attr-defined]
        assert sha.encode() not in blobs and bytes.fromhex(sha) not in blobs


def test_no_trace_remains_in_memory(
    app: Airside, enrolled: dict[str, object], astronaut: np.ndarray
) -> None:
    before = matching.identify(app, DPO, "boarding", jpeg_bytes(astronaut, 70))
    assert before.match and before.candidates[0].subject == "PNR-1"
    erasure.erase_subject(app, DPO, "PNR-1")
    after = matching.identify(app, DPO, "boarding", jpeg_bytes(astronaut, 70))
    assert not after.match
    assert all(c.subject != "PNR-1" for c in after.candidates)
    for name in ("boarding", "seamless"):
        with app.session() as s:
            from airside.services.gallery_view import get_gallery

            ix = app.index(s, get_gallery(s, name))
        stored = [np.frombuffer(v, dtype="<f4") for v in enrolled["vectors"]]  # type: ignore[attr-defined]
        if len(ix):
            hits = ix.search(np.stack(stored), len(ix))
            assert all(h.score < 0.999 for row in hits for h in row)


def test_audit_keeps_the_erasure_but_cannot_link_it_to_photos(
    app: Airside, enrolled: dict[str, object]
) -> None:
    receipt = erasure.erase_subject(app, DPO, "PNR-1")
    with app.session() as s:
        recs = s.scalars(select(AuditRecord)).all()
    assert any(r.action == "subject.erase" and r.seq == receipt.audit_seq for r in recs)
    text = " ".join(f"{r.input_digest} {r.result}" for r in recs)
    for sha in enrolled["hashes"]:  # type: ignore[attr-defined]
        assert sha not in text
    assert audit_verify(app, DPO).ok


def test_erasing_an_unknown_subject_is_refused(app: Airside) -> None:
    with pytest.raises(NotFoundError):
        erasure.erase_subject(app, DPO, "nobody")


def test_withdrawal_erases_from_galleries_of_that_purpose_only(
    app: Airside, enrolled: dict[str, object], astronaut: np.ndarray
) -> None:
    receipt = erasure.withdraw_basis(app, DPO, "PNR-1", "boarding:KE123")
    assert receipt.galleries == ["boarding"] and receipt.templates == 1
    assert not matching.identify(app, DPO, "boarding", jpeg_bytes(astronaut, 70)).match
    assert matching.identify(app, DPO, "seamless", jpeg_bytes(astronaut, 70)).match
    with pytest.raises(ConsentError):
        enrolment.enrol(app, DPO, "boarding", "PNR-1", [jpeg_bytes(astronaut, 50)])


def test_withdrawing_what_was_never_given_is_refused(
    app: Airside, enrolled: dict[str, object]
) -> None:
    with pytest.raises(ConsentError):
        erasure.withdraw_basis(app, DPO, "PNR-1", "watchlist")


def test_cli_erase_prints_a_receipt(
    tmp_path: Path, analyzer: object, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from airside.cli.main import app as cli

    monkeypatch.setattr("airside.vision.factory.default_analyzer", lambda _s: analyzer)
    photo = tmp_path / "a.png"
    photo.write_bytes(png_bytes(astronaut))
    base = ["--data-dir", str(tmp_path / "d")]
    run = CliRunner().invoke
    assert run(cli, [*base, "gallery", "create", "g", "--purpose", "p"]).exit_code == 0
    enrol = [*base, "enrol", "--gallery", "g", "--subject", "S", "--basis", "consent"]
    assert run(cli, [*enrol, str(photo)]).exit_code == 0
    res = run(cli, [*base, "subject", "erase", "S", "--json"])
    assert res.exit_code == 0, res.output
    receipt = json.loads(res.stdout)
    assert receipt["subject"] == "S" and receipt["templates"] == 1 and receipt["receipt"]
    again = run(cli, [*base, "subject", "erase", "S", "--json"])
    assert again.exit_code != 0
