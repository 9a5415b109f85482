"""Erasure leaves no trace of a subject's biometrics; withdrawal of consent erases too."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from tests.conftest import CliOnDir, jpeg_bytes, png_bytes, register, store_bytes

from airside.errors import ConsentError, NotFoundError
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, erasure, galleries, matching
from airside.services.app import Airside
from airside.services.audit_service import verify_chain as audit_verify
from airside.store.tables import AuditRecord, ErasureRequest, LegalBasis, Subject, Template

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
    return template_traces(app, "PNR-1")


def template_traces(app: Airside, reference: str) -> dict[str, object]:
    """The subject's template bytes (decrypted and as stored) and source-image digests."""
    from airside.governance.template_protection import StoredTemplate

    with app.session() as s:
        rows = s.execute(
            select(*StoredTemplate.columns())
            .join(Subject, Subject.id == Template.subject_id)
            .where(Subject.reference == reference)
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
    blobs = b"".join(p.read_bytes() for p in data_files(app)) + store_bytes(app)
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


def test_cli_erase_prints_a_receipt(cli_on_dir: CliOnDir) -> None:
    import json

    run = cli_on_dir
    run.enrol("p", "S")
    res = run("subject", "erase", "S", "--json")
    assert res.exit_code == 0, res.output
    receipt = json.loads(res.stdout)
    assert receipt["subject"] == "S" and receipt["templates"] == 1 and receipt["receipt"]
    again = run("subject", "erase", "S", "--json")
    assert again.exit_code != 0


# --------------------------------------------------------------------------------------------
# erasure that erases: pseudonyms in the log, signed receipts (issue 12, item 4)

# A reference no other bytes in the data directory could contain by chance.
LONG_REF = "PNR-ERASEME-7f3c9a2e-QUEBEC-ZULU-4411-oscar"


def test_after_erasure_the_reference_templates_and_digests_are_in_no_file(
    app: Airside, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    from airside.services import events

    galleries.create_gallery(app, DPO, "boarding", "boarding:KE123")
    galleries.create_gallery(app, DPO, "seamless", "seamless-travel")
    galleries.create_gallery(app, DPO, "wl", "watchlist:order-9")
    photo = png_bytes(astronaut)
    enrolment.enrol(app, DPO, "boarding", LONG_REF, [photo], BasisInput("consent"))
    enrolment.enrol(
        app, DPO, "wl", LONG_REF, [photo], BasisInput("public_task", reference="order 9")
    )
    enrolment.enrol(app, DPO, "boarding", "PNR-2", [png_bytes(hopper)], BasisInput("consent"))
    traces = template_traces(app, LONG_REF)
    probe = jpeg_bytes(astronaut, 70)
    assert matching.identify(app, DPO, "boarding", probe).candidates[0].subject == LONG_REF
    assert matching.verify_subject(app, DPO, "boarding", LONG_REF, probe).match
    with pytest.raises(ConsentError):  # a refusal whose message names the subject
        matching.verify_subject(app, DPO, "seamless", LONG_REF, probe)
    hit = matching.identify(app, DPO, "wl", probe)
    assert hit.review_case is not None  # a watchlist hit opens a review case
    crop = jpeg_bytes(np.ascontiguousarray(astronaut[20:220, 140:330]), 90)
    events.record_identity_event(
        app, DPO, camera="gate-1", track=3, subject=LONG_REF, gallery="boarding",
        score=0.9, first_seen=1.0, last_seen=2.0, crop_jpeg=crop,
    )  # fmt: skip
    app.db.compact_wal()
    assert LONG_REF.encode() in b"".join(p.read_bytes() for p in data_files(app)) + store_bytes(app)

    assert erasure.erase_subject(app, DPO, LONG_REF).events == 1

    blobs = b"".join(p.read_bytes() for p in data_files(app)) + store_bytes(app)
    assert LONG_REF.encode() not in blobs
    assert not any(LONG_REF in str(p) for p in data_files(app))
    for vec in [*traces["vectors"], *traces["ciphertexts"]]:  # type: ignore[misc]
        assert vec[:64] not in blobs
    for sha in traces["hashes"]:  # type: ignore[attr-defined]
        assert sha.encode() not in blobs and bytes.fromhex(sha) not in blobs
    assert crop[len(crop) // 2 : len(crop) // 2 + 96] not in blobs
    after = matching.identify(app, DPO, "boarding", probe)
    assert not after.match and all(c.subject != LONG_REF for c in after.candidates)
    from airside.services.review import get_case

    assert get_case(app, DPO, hit.review_case).subject.startswith("ps_")


def test_the_chain_verifies_after_erasure_whose_record_keeps_only_digest_and_counts(
    app: Airside, enrolled: dict[str, object], astronaut: np.ndarray
) -> None:
    matching.identify(app, DPO, "boarding", jpeg_bytes(astronaut, 70))
    with app.session() as s:
        before = [(r.seq, r.hash) for r in s.scalars(select(AuditRecord).order_by(AuditRecord.seq))]
    receipt = erasure.erase_subject(app, DPO, "PNR-1")
    with app.session() as s:
        recs = list(s.scalars(select(AuditRecord).order_by(AuditRecord.seq)))
        erase = s.get(AuditRecord, receipt.audit_seq)
        assert erase is not None
        logged = json.loads(erase.result)
    assert [(r.seq, r.hash) for r in recs][: len(before)] == before  # nothing rewritten
    assert audit_verify(app, DPO).ok
    assert logged == {
        "receipt": receipt.receipt,
        "templates": 2,
        "galleries": ["boarding", "seamless"],
        "legal_bases": 2,
        "events": 0,
        "review_cases": 0,
    }


def _verify_cli(path: Path, tmp_path: Path, *args: str) -> tuple[int, dict[str, object]]:
    """``airside receipt verify`` with no data directory (it must not create one)."""
    from typer.testing import CliRunner

    from airside.cli.main import app as cli

    nowhere = tmp_path / "no-data-dir"
    res = CliRunner().invoke(
        cli,
        ["receipt", "verify", str(path), *args, "--json"],
        env={"AIRSIDE_DATA_DIR": str(nowhere)},
    )
    assert not nowhere.exists()
    return res.exit_code, json.loads(res.stdout)


def test_a_receipt_verifies_offline_and_a_changed_one_does_not(
    app: Airside, enrolled: dict[str, object], tmp_path: Path
) -> None:
    from airside.governance import receipts
    from airside.governance.signing import Signer

    receipt = erasure.erase_subject(app, DPO, "PNR-1")
    doc = receipt.as_dict()
    installation = app.signer.fingerprint
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(doc, indent=2))
    code, shown = _verify_cli(path, tmp_path, "--key", installation)
    assert code == 0 and shown["ok"] is True and shown["subject"] == "PNR-1"
    assert shown["key_fingerprint"] == installation and shown["audit_seq"] == receipt.audit_seq

    other = Signer.generate()
    content = {
        k: v for k, v in doc.items() if k not in ("key_fingerprint", "public_key", "signature")
    }
    tampered: list[tuple[dict[str, object], tuple[str, ...], str]] = [
        ({**doc, "templates": 0}, (), "bad_signature"),
        ({**doc, "subject": "PNR-2"}, (), "bad_signature"),
        (
            {**doc, "public_key": other.public_pem, "key_fingerprint": other.fingerprint},
            (),
            "bad_signature",
        ),
        ({**doc, "public_key": other.public_pem}, (), "key_mismatch"),
        (receipts.sign(content, other), ("--key", installation), "untrusted_key"),
        (doc, ("--key", other.fingerprint), "untrusted_key"),
    ]
    for bad, args, why in tampered:
        path.write_text(json.dumps(bad))
        code, shown = _verify_cli(path, tmp_path, *args)
        assert (code, shown["error"]) == (3, why), (bad, args)


def test_cli_erase_and_withdraw_write_receipts_that_verify(
    tmp_path: Path, cli_on_dir: CliOnDir
) -> None:
    run = cli_on_dir
    for purpose in ("p", "q"):
        run.enrol(purpose, "S")
    key = json.loads(run("audit", "checkpoint", "--json").stdout)["key_fingerprint"]
    withdrawn = tmp_path / "withdrawn.json"
    res = run("consent", "withdraw", "S", "--purpose", "p", "--receipt-out", str(withdrawn))
    assert res.exit_code == 0, res.output
    assert withdrawn.stat().st_mode & 0o777 == 0o600
    erased = tmp_path / "erased.json"
    res = run("subject", "erase", "S", "--json", "--receipt-out", str(erased))
    assert res.exit_code == 0, res.output
    printed = tmp_path / "printed.json"
    printed.write_text(res.stdout)
    for path in (withdrawn, erased, printed):
        code, shown = _verify_cli(path, tmp_path, "--key", key)
        assert code == 0 and shown["subject"] == "S", (path, shown)
    assert json.loads(withdrawn.read_text())["kind"] == "consent.withdraw"


def test_the_audit_export_resolves_pseudonyms_of_living_subjects_only(
    app: Airside, enrolled: dict[str, object], astronaut: np.ndarray, tmp_path: Path
) -> None:
    from airside.services.audit_service import export

    matching.identify(app, DPO, "boarding", jpeg_bytes(astronaut, 70))

    def identify_line(out: Path) -> dict[str, object]:
        export(app, DPO, out)
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        return next(x for x in lines if x.get("action") == "identify")

    line = identify_line(tmp_path / "before.jsonl")
    assert "PNR-1" not in line["result"]  # type: ignore[operator]
    ps = json.loads(line["result"])["candidates"][0][0]  # type: ignore[arg-type]
    assert ps.startswith("ps_") and line["subjects"][ps] == "PNR-1"  # type: ignore[index]
    erasure.erase_subject(app, DPO, "PNR-1")
    after = identify_line(tmp_path / "after.jsonl")
    assert after["result"] == line["result"]  # the record itself is unchanged
    assert ps not in after["subjects"] and "PNR-2" in after["subjects"].values()  # type: ignore[attr-defined,operator]


def test_a_refusal_about_an_unknown_reference_records_no_reference(app: Airside) -> None:
    with pytest.raises(NotFoundError):
        erasure.erase_subject(app, DPO, LONG_REF)
    with app.session() as s:
        rec = s.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1)).one()
    assert rec.action == "subject.erase" and rec.decision == "refused:not_found"
    assert LONG_REF not in rec.result and "subject" not in json.loads(rec.result)


def _cut_short(app: Airside, action: str, reference: str, purpose: str | None = None) -> int:
    """The state a process killed two minutes ago, between recording the request and
    erasing, leaves: the request is committed, nothing of the subject is erased yet."""
    reason = "erasure request" if purpose is None else f"withdrawal of basis for {purpose}"
    rid = erasure._request(app, DPO, action, reference, reason, purpose)
    with app.session() as s:
        req = s.get(ErasureRequest, rid)
        assert req is not None
        req.requested_at = datetime.now(UTC) - timedelta(minutes=2)
    return rid


def test_a_request_still_in_flight_is_left_to_the_process_that_made_it(
    app: Airside, enrolled: dict[str, object]
) -> None:
    # Another server's scheduler runs between the request's commit and the erasure's: it
    # must not take the erasure (and its receipt) away from the caller.
    rid = erasure._request(app, DPO, "subject.erase", "PNR-1", "erasure request")
    assert erasure.complete_pending(app) == []
    receipt, _ = erasure._erase(app, DPO, app.signer, rid, "PNR-1", "erasure request")
    assert receipt.templates == 2
    with app.session() as s:
        assert s.scalar(select(ErasureRequest)) is None


def test_an_erasure_cut_short_is_completed_by_the_next_start(
    app: Airside, enrolled: dict[str, object], astronaut: np.ndarray
) -> None:
    _cut_short(app, "subject.erase", "PNR-1")
    assert template_traces(app, "PNR-1")["vectors"]  # nothing erased yet
    (receipt,) = erasure.complete_pending(app)
    assert receipt.subject == "PNR-1" and receipt.templates == 2
    with app.session() as s:
        assert s.scalar(select(Subject).where(Subject.reference == "PNR-1")) is None
        last = s.scalars(select(AuditRecord).order_by(AuditRecord.seq.desc())).first()
    assert last is not None and last.action == "subject.erase" and last.actor == DPO.name
    assert json.loads(last.result)["resumed"] is True
    res = matching.identify(app, DPO, "boarding", png_bytes(astronaut))
    assert all(c.subject != "PNR-1" for c in res.candidates)
    assert erasure.complete_pending(app) == []  # done once
    assert audit_verify(app, DPO).ok


def test_a_withdrawal_cut_short_is_completed_for_its_purpose_only(
    app: Airside, enrolled: dict[str, object]
) -> None:
    _cut_short(app, "consent.withdraw", "PNR-1", "seamless-travel")
    (receipt,) = erasure.complete_pending(app)
    assert receipt.kind == "consent.withdraw" and receipt.galleries == ["seamless"]
    assert len(template_traces(app, "PNR-1")["vectors"]) == 1  # boarding stays


def test_a_pending_request_whose_subject_was_erased_since_is_dropped(
    app: Airside, enrolled: dict[str, object]
) -> None:
    _cut_short(app, "subject.erase", "PNR-1")
    erasure.erase_subject(app, DPO, "PNR-1")  # asked again, and done, before the restart
    assert erasure.complete_pending(app) == []
    with app.session() as s:
        assert s.scalar(select(ErasureRequest)) is None


def test_a_completed_or_refused_erasure_leaves_no_request_naming_the_subject(
    app: Airside, enrolled: dict[str, object]
) -> None:
    erasure.erase_subject(app, DPO, "PNR-1")
    with pytest.raises(ConsentError):
        erasure.withdraw_basis(app, DPO, "PNR-2", "seamless-travel")
    with pytest.raises(NotFoundError):
        erasure.erase_subject(app, DPO, "PNR-404")
    with app.session() as s:
        assert s.scalars(select(ErasureRequest)).all() == []


def test_the_server_completes_erasures_cut_short_when_it_starts(
    app: Airside, enrolled: dict[str, object]
) -> None:
    from fastapi.testclient import TestClient

    from airside.server.app import create_app

    _cut_short(app, "subject.erase", "PNR-1")
    with TestClient(create_app(app)):
        for _ in range(100):
            with app.session() as s:
                if s.scalar(select(ErasureRequest)) is None:
                    break
            time.sleep(0.1)
    with app.session() as s:
        assert s.scalar(select(Subject).where(Subject.reference == "PNR-1")) is None
