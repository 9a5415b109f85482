"""The audit chain names every altered, deleted, inserted or reordered record."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from tests.conftest import register

from airside.governance import audit
from airside.governance.principals import Principal
from airside.store.db import Database
from airside.store.tables import AuditHead, AuditRecord

ALICE = Principal("alice", "admin")


@pytest.fixture
def db(store_url: str) -> Database:
    d = Database(store_url)
    for i in range(5):
        with d.session() as s:
            audit.append(s, ALICE, "identify", decision="no_match", result={"i": i})
    return d


def problems(db: Database) -> list[tuple[int, str]]:
    with db.session() as s:
        rep = audit.verify(s)
    return [(p["seq"], p["problem"]) for p in rep.problems]


def test_untouched_chain_verifies(db: Database) -> None:
    with db.session() as s:
        rep = audit.verify(s)
    assert rep.ok and rep.records == 5


def test_each_record_links_to_the_one_before(db: Database) -> None:
    with db.session() as s:
        recs = s.scalars(select(AuditRecord).order_by(AuditRecord.seq)).all()
    assert recs[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(recs))


def test_altered_record_is_named(db: Database) -> None:
    with db.session() as s:
        s.execute(update(AuditRecord).where(AuditRecord.seq == 3).values(decision="match"))
    assert problems(db) == [(3, "altered")]


def test_deleted_record_is_named(db: Database) -> None:
    with db.session() as s:
        s.execute(delete(AuditRecord).where(AuditRecord.seq == 2))
    found = problems(db)
    assert (3, "deleted") in found and (3, "broken_link") in found


def test_deleted_tail_is_detected_by_the_head(db: Database) -> None:
    with db.session() as s:
        s.execute(delete(AuditRecord).where(AuditRecord.seq == 5))
    assert problems(db) == [(5, "truncated")]


def test_inserted_record_is_named(db: Database) -> None:
    with db.session() as s:
        rec = s.get(AuditRecord, 3)
        assert rec is not None
        forged = {k: getattr(rec, k) for k in audit._FIELDS}
        # Shift later records up to make room, as a forger would.
        for seq in (5, 4, 3):
            s.execute(update(AuditRecord).where(AuditRecord.seq == seq).values(seq=seq + 1))
        forged["seq"] = 3
        forged["decision"] = "match"
        s.expunge_all()
        s.add(AuditRecord(**forged, hash=audit.record_hash(forged)))
        s.execute(update(AuditHead).values(seq=6))
    found = problems(db)
    assert any(seq in (3, 4) and p == "broken_link" for seq, p in found)
    assert any(p == "altered" for _, p in found)  # shifted seq numbers no longer hash


def test_swapped_records_are_named(db: Database) -> None:
    cols = [k for k in (*audit._FIELDS, "hash") if k != "seq"]
    with db.session() as s:
        rows = {
            r.seq: {k: getattr(r, k) for k in cols}
            for r in s.scalars(select(AuditRecord).where(AuditRecord.seq.in_([2, 3])))
        }
        s.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(hash="x"))
        s.execute(update(AuditRecord).where(AuditRecord.seq == 3).values(**rows[2]))
        s.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(**rows[3]))
    found = problems(db)
    assert {seq for seq, _ in found} >= {2, 3}


def test_services_sign_checkpoints_automatically(tmp_path: Path, analyzer: object) -> None:
    from airside.config import Settings
    from airside.services import galleries
    from airside.services.app import Airside
    from airside.services.audit_service import verify_chain
    from airside.store.tables import AuditCheckpoint

    app = Airside(
        Settings(data_dir=tmp_path / "d", audit_checkpoint_every=3),
        analyzer_factory=lambda _s: analyzer,  # type: ignore[arg-type,return-value]
    )
    try:
        register(app, ALICE)  # two records: the first-run administrator, then ALICE
        for _ in range(7):
            galleries.list_galleries(app, ALICE)
        with app.session() as s:
            cps = s.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq)).all()
        # every 3 service records; the record naming each checkpoint comes right after it
        assert [c.seq for c in cps] == [3, 7, 11]
        rep = verify_chain(app, ALICE)
        assert rep.ok and rep.checkpoints == 3
    finally:
        app.close()
