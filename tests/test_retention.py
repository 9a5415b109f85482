"""Templates are purged on their gallery's retention, and every purge is audited."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, select
from tests.conftest import jpeg_bytes, png_bytes, register

from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries, matching
from airside.services.app import Airside
from airside.services.retention import PurgeScheduler, purge
from airside.store.tables import AuditRecord, Template

OPS = Principal("ops", "admin")


@pytest.fixture(autouse=True)
def _principals(app: Airside) -> None:
    register(app, OPS)


def templates(app: Airside) -> int:
    with app.session() as s:
        return int(s.scalar(select(func.count()).select_from(Template)) or 0)


def test_boarding_gallery_is_purged_after_departure_plus_12_hours(
    app: Airside, astronaut: np.ndarray
) -> None:
    departs = datetime.now(UTC) + timedelta(hours=1)
    info = galleries.create_gallery(app, OPS, "KE123", "boarding:KE123", departs=departs)
    assert info.retain_until == (departs + timedelta(hours=12)).isoformat()
    enrolment.enrol(app, OPS, "KE123", "PNR-1", [png_bytes(astronaut)], BasisInput("consent"))
    assert purge(app, OPS, now=departs + timedelta(hours=11)).templates == 0
    assert templates(app) == 1
    rep = purge(app, OPS, now=departs + timedelta(hours=12, seconds=1))
    assert rep.galleries == {"KE123": 1} and templates(app) == 0


def test_purged_templates_are_no_longer_found(app: Airside, astronaut: np.ndarray) -> None:
    galleries.create_gallery(app, OPS, "g", "seamless-travel", retain_seconds=3600)
    enrolment.enrol(app, OPS, "g", "PNR-1", [png_bytes(astronaut)], BasisInput("consent"))
    assert matching.identify(app, OPS, "g", jpeg_bytes(astronaut, 60)).match
    purge(app, OPS, now=datetime.now(UTC) + timedelta(hours=2))
    assert not matching.identify(app, OPS, "g", jpeg_bytes(astronaut, 60)).candidates


def test_only_templates_older_than_the_retention_go(
    app: Airside, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    galleries.create_gallery(app, OPS, "g", "seamless-travel", retain_seconds=3600)
    enrolment.enrol(app, OPS, "g", "A", [png_bytes(astronaut)], BasisInput("consent"))
    with app.session() as s:
        old = s.scalars(select(Template)).one()
        old.created_at = datetime.now(UTC) - timedelta(hours=2)
    enrolment.enrol(app, OPS, "g", "B", [png_bytes(hopper)], BasisInput("consent"))
    assert purge(app, OPS).galleries == {"g": 1}
    assert templates(app) == 1


def test_every_purge_is_audited_with_what_it_deleted(app: Airside, astronaut: np.ndarray) -> None:
    galleries.create_gallery(app, OPS, "g", "seamless-travel", retain_seconds=60)
    enrolment.enrol(app, OPS, "g", "A", [png_bytes(astronaut)], BasisInput("consent"))
    purge(app, OPS, now=datetime.now(UTC) + timedelta(minutes=5))
    with app.session() as s:
        rec = s.scalars(select(AuditRecord).where(AuditRecord.action == "purge")).one()
    assert rec.gallery == "g" and rec.decision == "purged" and '"templates":1' in rec.result


def test_dry_run_deletes_nothing(app: Airside, astronaut: np.ndarray) -> None:
    galleries.create_gallery(app, OPS, "g", "seamless-travel", retain_seconds=60)
    enrolment.enrol(app, OPS, "g", "A", [png_bytes(astronaut)], BasisInput("consent"))
    rep = purge(app, OPS, now=datetime.now(UTC) + timedelta(minutes=5), dry_run=True)
    assert rep.templates == 1 and templates(app) == 1


def test_boarding_galleries_get_a_default_retention(app: Airside) -> None:
    info = galleries.create_gallery(app, OPS, "KE9", "boarding:KE9")
    assert info.retain_seconds == 36 * 3600


def test_past_retention_end_is_refused(app: Airside) -> None:
    with pytest.raises(ValueError, match="already past"):
        galleries.create_gallery(
            app, OPS, "g", "p", retain_until=datetime.now(UTC) - timedelta(minutes=1)
        )


def test_scheduler_purges_in_the_background(app: Airside, astronaut: np.ndarray) -> None:
    galleries.create_gallery(app, OPS, "g", "seamless-travel", retain_seconds=1)
    enrolment.enrol(app, OPS, "g", "A", [png_bytes(astronaut)], BasisInput("consent"))
    sched = PurgeScheduler(app, interval=0.2).start()
    try:
        deadline = time.monotonic() + 15
        while templates(app) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        sched.stop()
    assert templates(app) == 0 and sched.runs >= 1


# --------------------------------------------------------------------------------------------
# audit retention: the oldest records go, the chain still verifies from a signed checkpoint


def age_records(app: Airside, through_seq: int, days: float) -> None:
    """Back-date records 1..through_seq, re-hashing the chain and re-signing its records,
    checkpoints and witnessed head, as if they had been written ``days`` ago (a test of
    time, not tampering)."""
    from airside.governance.audit import checkpoint_message, record_hash
    from airside.governance.witness import SignedHead
    from airside.store.tables import AuditCheckpoint, AuditHead

    old = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="microseconds")
    with app.session() as s:
        checkpoints = {cp.seq: cp for cp in s.scalars(select(AuditCheckpoint))}
        prev = "0" * 64
        for rec in s.scalars(select(AuditRecord).order_by(AuditRecord.seq)):
            if rec.seq <= through_seq:
                rec.ts = old
            if rec.action == "audit.checkpointed":  # names the re-signed checkpoint
                said = json.loads(rec.result)
                said["signature"] = checkpoints[said["checkpoint_seq"]].signature
                rec.result = json.dumps(said, sort_keys=True, separators=(",", ":"))
            rec.prev_hash = prev
            rec.hash = prev = record_hash({k: getattr(rec, k) for k in audit_fields()})
            rec.signature = app.signer.sign(checkpoint_message(rec.seq, rec.hash))
            last = SignedHead(rec.seq, rec.hash, rec.signature, app.signer.fingerprint, rec.ts)
            if rec.seq in checkpoints:
                cp = checkpoints[rec.seq]
                cp.head_hash = rec.hash
                cp.signature = app.signer.sign(checkpoint_message(cp.seq, cp.head_hash))
        head = s.get(AuditHead, 1)
        assert head is not None
        head.hash = prev
    app.witness.path.write_text(json.dumps(last.as_dict()))


def audit_fields() -> tuple[str, ...]:
    from airside.governance.audit import _FIELDS

    return _FIELDS


def test_old_audit_records_are_pruned_at_a_signed_checkpoint(app: Airside) -> None:
    from airside.services.audit_service import make_checkpoint, verify_chain

    for _ in range(5):
        galleries.list_galleries(app, OPS)
    cut = make_checkpoint(app, OPS)["seq"]
    for _ in range(3):
        galleries.list_galleries(app, OPS)
    age_records(app, cut + 2, days=400)  # older than a year, two past the checkpoint
    rep = purge(app, OPS)
    assert rep.audit_records == cut  # cut at the checkpoint, not at the newest old record
    with app.session() as s:
        first = s.scalar(select(func.min(AuditRecord.seq)))
        prune = s.scalars(select(AuditRecord).where(AuditRecord.action == "audit.prune")).one()
    assert first == cut + 1
    assert json.loads(prune.result)["through_seq"] == cut
    chain = verify_chain(app, OPS)
    assert chain.ok, chain.problems
    make_checkpoint(app, OPS)  # signing continues from the cut
    assert verify_chain(app, OPS).ok


def test_nothing_is_pruned_without_a_checkpoint_old_enough(app: Airside) -> None:
    for _ in range(3):
        galleries.list_galleries(app, OPS)
    age_records(app, 3, days=400)
    assert purge(app, OPS).audit_records == 0


def test_deleting_the_oldest_records_by_hand_is_still_detected(app: Airside) -> None:
    from airside.services.audit_service import make_checkpoint, verify_chain

    for _ in range(4):
        galleries.list_galleries(app, OPS)
    cut = make_checkpoint(app, OPS)["seq"]
    galleries.list_galleries(app, OPS)
    with app.session() as s:  # a prefix cut at a real checkpoint, but not by retention
        s.execute(AuditRecord.__table__.delete().where(AuditRecord.seq <= cut))
    chain = verify_chain(app, OPS)
    assert not chain.ok
    assert any(p["problem"] == "deleted" for p in chain.problems)


def test_a_chain_that_does_not_verify_is_never_pruned(app: Airside) -> None:
    from airside.errors import AirsideError
    from airside.services.audit_service import make_checkpoint

    for _ in range(4):
        galleries.list_galleries(app, OPS)
    cut = make_checkpoint(app, OPS)["seq"]
    age_records(app, cut, days=400)
    with app.session() as s:
        s.execute(AuditRecord.__table__.update().where(AuditRecord.seq == 2).values(decision="x"))
    with pytest.raises(AirsideError, match="refusing to prune"):
        purge(app, OPS)
    with app.session() as s:
        assert s.scalar(select(func.min(AuditRecord.seq))) == 1
