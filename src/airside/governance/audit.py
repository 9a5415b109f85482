"""Tamper-evident audit chain.

Each record's SHA-256 covers its own fields and the hash of the record before it, so that
altering, deleting, inserting or reordering any record breaks the chain at a findable
place. Records are written in the caller's transaction, together with the effect they log.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from airside.governance.principals import Principal
from airside.store.models import AuditHead, AuditRecord

GENESIS = "0" * 64
_FIELDS = (
    "seq", "ts", "actor", "role", "action", "purpose", "gallery",
    "input_digest", "result", "decision", "prev_hash",
)  # fmt: skip


def record_hash(fields: dict[str, Any]) -> str:
    canonical = json.dumps(
        {k: fields[k] for k in _FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def append(
    session: Session,
    principal: Principal,
    action: str,
    *,
    decision: str,
    purpose: str | None = None,
    gallery: str | None = None,
    input_digest: str | list[str] | None = None,
    result: dict[str, Any] | None = None,
) -> AuditRecord:
    """Append one record in ``session``'s transaction (it commits or rolls back with the effect)."""
    head = session.get(AuditHead, 1, with_for_update=True)
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS)
        session.add(head)
    digest = json.dumps(input_digest) if isinstance(input_digest, list) else input_digest
    fields: dict[str, Any] = {
        "seq": head.seq + 1,
        "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
        "actor": principal.name,
        "role": principal.role,
        "action": action,
        "purpose": purpose,
        "gallery": gallery,
        "input_digest": digest,
        "result": json.dumps(result or {}, sort_keys=True, separators=(",", ":")),
        "decision": decision,
        "prev_hash": head.hash,
    }
    rec = AuditRecord(**fields, hash=record_hash(fields))
    session.add(rec)
    head.seq = rec.seq
    head.hash = rec.hash
    session.flush()
    return rec


@dataclass
class ChainReport:
    records: int
    ok: bool
    problems: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "ok": self.ok, "problems": self.problems}


def verify(session: Session, batch: int = 5000) -> ChainReport:
    """Walk the chain in sequence order and name every record where it breaks."""
    problems: list[dict[str, Any]] = []
    prev_hash = GENESIS
    expected_seq = 1
    count = 0
    last_hash = GENESIS
    stmt = select(AuditRecord).order_by(AuditRecord.seq).execution_options(yield_per=batch)
    for rec in session.scalars(stmt):
        count += 1
        fields = {k: getattr(rec, k) for k in _FIELDS}
        if rec.seq != expected_seq:
            kind = "deleted" if rec.seq > expected_seq else "inserted"
            problems.append(
                {
                    "seq": rec.seq,
                    "problem": kind,
                    "detail": f"expected record {expected_seq}, found {rec.seq}",
                }
            )
        if rec.prev_hash != prev_hash:
            problems.append(
                {
                    "seq": rec.seq,
                    "problem": "broken_link",
                    "detail": "prev_hash does not match the record before it "
                    "(a record was deleted, inserted or reordered)",
                }
            )
        if record_hash(fields) != rec.hash:
            problems.append(
                {
                    "seq": rec.seq,
                    "problem": "altered",
                    "detail": "content does not match its hash",
                }
            )
        prev_hash = rec.hash
        last_hash = rec.hash
        expected_seq = rec.seq + 1
    head = session.get(AuditHead, 1)
    head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS)
    if head_seq != expected_seq - 1 or head_hash != last_hash:
        problems.append(
            {
                "seq": head_seq,
                "problem": "truncated" if head_seq > expected_seq - 1 else "head_mismatch",
                "detail": f"chain head says record {head_seq}, log ends at {expected_seq - 1}",
            }
        )
    return ChainReport(records=count, ok=not problems, problems=problems)
