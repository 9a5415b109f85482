"""Tamper-evident audit chain.

Each record's SHA-256 covers its own fields and the hash of the record before it, so that
altering, deleting, inserting or reordering any record breaks the chain at a findable
place. Records are written in the caller's transaction, together with the effect they log.

Hashes alone do not stop someone who can write the database from rewriting the chain and
recomputing every hash after the change. *Checkpoints* do: each one is an Ed25519 signature,
by the installation's key (``airside.governance.signing``), over the chain head at that
moment. The signed bytes are exactly ``f"{seq}:{head_hash}".encode("ascii")`` (see
``checkpoint_message``), e.g. ``b"42:9f86d0...0a08"`` with the 64 lower-case hex characters
of the head hash. A rewrite of any record up to a checkpoint changes the hash of the
checkpointed record, which ``verify`` reports as ``checkpoint_mismatch``; records after the
newest checkpoint are protected by the hashes only, until the next checkpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from airside.errors import AirsideError
from airside.governance import signing
from airside.governance.principals import Principal
from airside.governance.signing import Signer
from airside.store.models import AuditCheckpoint, AuditHead, AuditRecord

log = logging.getLogger(__name__)

GENESIS = "0" * 64
# Set in ``Session.info`` by ``append`` so the unit of work can checkpoint before commit.
APPENDED = "airside.audit.appended"
_FIELDS = (
    "seq", "ts", "actor", "role", "action", "purpose", "gallery",
    "input_digest", "result", "decision", "prev_hash",
)  # fmt: skip


def record_hash(fields: dict[str, Any]) -> str:
    canonical = json.dumps(
        {k: fields[k] for k in _FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def subject_digest(salt: str, image_sha256: str) -> str:
    """What the log records for a subject's photo: keyed by the subject's own salt, so that
    once the subject is erased (and the salt with them) the record no longer links to it."""
    return hmac.new(bytes.fromhex(salt), image_sha256.encode(), hashlib.sha256).hexdigest()


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
    session.info[APPENDED] = True
    head.seq = rec.seq
    head.hash = rec.hash
    session.flush()
    return rec


@dataclass
class ChainReport:
    records: int
    ok: bool
    problems: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: int = 0
    # The highest record covered by a checkpoint that verified (signature, key and hash):
    # records up to here are protected by a signature, the rest by the hashes only.
    signed_seq: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "ok": self.ok,
            "problems": self.problems,
            "checkpoints": self.checkpoints,
            "signed_seq": self.signed_seq,
        }


def verify(
    session: Session, batch: int = 5000, public_keys: Iterable[str] | None = None
) -> ChainReport:
    """Walk the chain in sequence order and name every record where it breaks, then check
    every checkpoint: its signature must be valid for its public key, the key must be one of
    ``public_keys`` when given (fingerprints or PEM public keys), and the record at its
    ``seq`` must still carry the signed head hash."""
    checkpoints = list(
        session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq, AuditCheckpoint.id))
    )
    wanted = {cp.seq for cp in checkpoints}
    hash_at: dict[int, str] = {}
    problems: list[dict[str, Any]] = []
    base = _base(session, checkpoints)
    problems.extend(base.problems)
    if base.seq:
        # The signed head the retained log starts from stands in for the pruned records.
        hash_at[base.seq] = base.hash
    prev_hash = base.hash
    expected_seq = base.seq + 1
    count = 0
    last_hash = base.hash
    stmt = select(AuditRecord).order_by(AuditRecord.seq).execution_options(yield_per=batch)
    for rec in session.scalars(stmt):
        count += 1
        if rec.seq in wanted:
            hash_at[rec.seq] = rec.hash
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
    trusted = None if public_keys is None else {_normalise_key(k) for k in public_keys}
    signed_seq = 0
    for cp in checkpoints:
        if cp.seq < base.seq:
            continue  # covered records were pruned; the anchor checkpoint vouches for them
        found = _checkpoint_problems(cp, hash_at.get(cp.seq), trusted)
        problems.extend(found)
        if not found:
            signed_seq = max(signed_seq, cp.seq)
    return ChainReport(
        records=count,
        ok=not problems,
        problems=problems,
        checkpoints=len(checkpoints),
        signed_seq=signed_seq,
    )


# --------------------------------------------------------------------------------------------
# signed checkpoints


def checkpoint_message(seq: int, head_hash: str) -> bytes:
    """The exact bytes a checkpoint signs: ``f"{seq}:{head_hash}"`` in ASCII."""
    return f"{seq}:{head_hash}".encode("ascii")


def checkpoint(session: Session, signer: Signer) -> AuditCheckpoint:
    """Sign the current chain head, in ``session``'s transaction.

    Before signing, the records since this key's previous checkpoint are re-verified (links,
    hashes, head), so a checkpoint never blesses a chain that was already tampered with: a
    broken segment raises ``AirsideError`` (code ``audit_chain_broken``). The cost is one
    pass over the records since that checkpoint. Signing a head this key already signed
    returns the existing checkpoint.
    """
    head = session.get(AuditHead, 1, with_for_update=True)
    if head is None or head.seq == 0:
        raise AirsideError("the audit log is empty: nothing to checkpoint", code="audit_empty")
    last = _last_own_checkpoint(session, signer)
    if last is not None and last.seq == head.seq and last.head_hash == head.hash:
        return last
    broken = _segment_problem(session, signer, last, head)
    if broken is not None:
        raise AirsideError(
            f"refusing to sign the audit chain head: {broken}; run `airside audit verify`",
            code="audit_chain_broken",
        )
    cp = AuditCheckpoint(
        seq=head.seq,
        head_hash=head.hash,
        ts=datetime.now(UTC).isoformat(timespec="microseconds"),
        key_fingerprint=signer.fingerprint,
        signature=signer.sign(checkpoint_message(head.seq, head.hash)),
        public_key=signer.public_pem,
    )
    session.add(cp)
    session.flush()
    return cp


def maybe_checkpoint(session: Session, signer: Signer, every: int = 100) -> AuditCheckpoint | None:
    """Checkpoint the head when it is ``every`` or more records past ``signer``'s newest
    checkpoint (or past the start of the log when there is none); otherwise do nothing.

    Meant to be called right after ``append`` in the same transaction, so the checkpoint
    commits or rolls back with the record. When the chain since the last checkpoint does not
    verify, no checkpoint is written (a warning is logged, ``None`` returned) and the effect
    still goes ahead; ``verify`` names the damage.
    """
    if every < 1:
        raise ValueError("every must be at least 1")
    head = session.get(AuditHead, 1)
    if head is None:
        return None
    last = _last_own_checkpoint(session, signer)
    if head.seq - (last.seq if last is not None else 0) < every:
        return None
    try:
        return checkpoint(session, signer)
    except AirsideError as e:
        log.warning("no audit checkpoint written: %s", e)
        return None


def _last_own_checkpoint(session: Session, signer: Signer) -> AuditCheckpoint | None:
    return session.scalars(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.key_fingerprint == signer.fingerprint)
        .order_by(AuditCheckpoint.seq.desc(), AuditCheckpoint.id.desc())
        .limit(1)
    ).first()


def _segment_problem(
    session: Session, signer: Signer, last: AuditCheckpoint | None, head: AuditHead
) -> str | None:
    """Why the records after ``last`` (or all of them) do not lead to ``head``, if they don't."""
    seq, prev = 0, GENESIS
    if last is not None:
        message = checkpoint_message(last.seq, last.head_hash)
        if last.public_key != signer.public_pem or not signing.verify_signature(
            signer.public_pem, last.signature, message
        ):
            return f"the checkpoint at record {last.seq} does not carry this key's signature"
        rec = session.get(AuditRecord, last.seq)
        pruned_to_here = rec is None and _first_seq(session) == last.seq + 1
        if not pruned_to_here and (rec is None or rec.hash != last.head_hash):
            return f"record {last.seq} no longer matches its checkpoint"
        seq, prev = last.seq, last.head_hash
    else:
        anchor = _base(session, None)
        if anchor.problems:
            return str(anchor.problems[0]["detail"])
        seq, prev = anchor.seq, anchor.hash
    for rec in session.scalars(
        select(AuditRecord).where(AuditRecord.seq > seq).order_by(AuditRecord.seq)
    ):
        fields = {k: getattr(rec, k) for k in _FIELDS}
        if rec.seq != seq + 1 or rec.prev_hash != prev or record_hash(fields) != rec.hash:
            return f"record {rec.seq} does not follow from record {seq}"
        seq, prev = rec.seq, rec.hash
    if (seq, prev) != (head.seq, head.hash):
        return f"the chain head says record {head.seq}, the log ends at {seq}"
    return None


def _normalise_key(key: str) -> str:
    """A trusted key as a fingerprint: PEM public keys are fingerprinted, longer hex cut."""
    if "BEGIN PUBLIC KEY" in key:
        return signing.public_key_fingerprint(key)
    return key.strip().lower()[: signing.FINGERPRINT_CHARS]


def _checkpoint_problems(
    cp: AuditCheckpoint, record_hash_at_seq: str | None, trusted: set[str] | None
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def problem(kind: str, detail: str) -> None:
        found.append({"seq": cp.seq, "problem": kind, "detail": detail, "checkpoint": cp.id})

    try:
        fp: str | None = signing.public_key_fingerprint(cp.public_key)
    except ValueError:
        fp = None
    if fp is None:
        problem("bad_signature", f"checkpoint {cp.id} carries an unreadable public key")
    elif fp != cp.key_fingerprint:
        problem(
            "bad_signature",
            f"checkpoint {cp.id} names key {cp.key_fingerprint} but carries key {fp}",
        )
    elif not signing.verify_signature(
        cp.public_key, cp.signature, checkpoint_message(cp.seq, cp.head_hash)
    ):
        problem("bad_signature", f"checkpoint {cp.id} signature does not verify")
    if trusted is not None and fp not in trusted:
        problem("untrusted_key", f"checkpoint {cp.id} is signed by untrusted key {fp}")
    if record_hash_at_seq is None:
        problem("checkpoint_mismatch", f"record {cp.seq}, signed by checkpoint {cp.id}, is gone")
    elif record_hash_at_seq != cp.head_hash:
        problem(
            "checkpoint_mismatch",
            f"record {cp.seq} no longer has the hash checkpoint {cp.id} signed "
            "(it, or a record before it, was altered)",
        )
    return found


# --------------------------------------------------------------------------------------------
# retention: pruning the oldest records


PRUNE_ACTION = "audit.prune"


@dataclass
class _Base:
    """Where the retained log starts: after record ``seq`` whose hash is ``hash``."""

    seq: int
    hash: str
    problems: list[dict[str, Any]] = field(default_factory=list)


def _first_seq(session: Session) -> int | None:
    first: int | None = session.scalar(select(func.min(AuditRecord.seq)))
    return first


def _base(session: Session, checkpoints: list[AuditCheckpoint] | None) -> _Base:
    """The genesis, or, once old records were pruned, the signed checkpoint the log was
    cut at. A cut is accepted only where a checkpoint signs the head just before the first
    retained record and the newest ``audit.prune`` record says the log was cut there;
    anything else is reported as deleted records."""
    first = session.scalar(select(AuditRecord).order_by(AuditRecord.seq).limit(1))
    if first is None or first.seq == 1:
        return _Base(0, GENESIS)
    cut = first.seq - 1
    if checkpoints is None:
        checkpoints = list(
            session.scalars(select(AuditCheckpoint).where(AuditCheckpoint.seq == cut))
        )
    anchors = [
        cp
        for cp in checkpoints
        if cp.seq == cut
        and cp.head_hash == first.prev_hash
        and signing.verify_signature(
            cp.public_key, cp.signature, checkpoint_message(cp.seq, cp.head_hash)
        )
    ]
    last_prune = session.scalar(
        select(AuditRecord)
        .where(AuditRecord.action == PRUNE_ACTION)
        .order_by(AuditRecord.seq.desc())
        .limit(1)
    )
    said = json.loads(last_prune.result).get("through_seq") if last_prune else None
    if anchors and said == cut:
        return _Base(cut, first.prev_hash)
    why = (
        "no signed checkpoint matches the first retained record"
        if not anchors
        else f"the newest {PRUNE_ACTION} record says the log was cut at {said}, not at {cut}"
    )
    return _Base(
        0,
        GENESIS,
        [
            {
                "seq": first.seq,
                "problem": "deleted",
                "detail": f"records 1-{cut} are missing and were not pruned by retention ({why})",
            }
        ],
    )


@dataclass
class PruneResult:
    through_seq: int
    records: int
    checkpoints: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def prune(
    session: Session, principal: Principal, signer: Signer, before: datetime
) -> PruneResult | None:
    """Delete the records older than ``before``, up to the newest checkpoint signed by
    ``signer`` at or before them, and log the cut (``audit.prune``) in the same
    transaction. The retained log then starts at that signed head, so ``verify`` still
    proves it whole from there. Returns None when nothing can be pruned yet (no checkpoint
    old enough). A chain that does not verify is never pruned: that would destroy the
    evidence of tampering."""
    cutoff_ts = before.astimezone(UTC).isoformat(timespec="microseconds")
    old_seq = session.scalar(select(func.max(AuditRecord.seq)).where(AuditRecord.ts < cutoff_ts))
    if old_seq is None:
        return None
    anchor = session.scalars(
        select(AuditCheckpoint)
        .where(
            AuditCheckpoint.seq <= old_seq,
            AuditCheckpoint.key_fingerprint == signer.fingerprint,
        )
        .order_by(AuditCheckpoint.seq.desc())
        .limit(1)
    ).first()
    first = _first_seq(session) or 1
    if anchor is None or anchor.seq < first:
        return None
    report = verify(session, public_keys=[signer.fingerprint])
    if not report.ok:
        raise AirsideError(
            f"the audit chain does not verify ({report.problems[0]['detail']}); "
            "refusing to prune it",
            code="audit_chain_broken",
        )
    n = session.scalar(
        select(func.count()).select_from(AuditRecord).where(AuditRecord.seq <= anchor.seq)
    )
    n_cp = session.scalar(
        select(func.count()).select_from(AuditCheckpoint).where(AuditCheckpoint.seq < anchor.seq)
    )
    session.execute(delete(AuditRecord).where(AuditRecord.seq <= anchor.seq))
    session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.seq < anchor.seq))
    result = PruneResult(anchor.seq, int(n or 0), int(n_cp or 0))
    append(
        session,
        principal,
        PRUNE_ACTION,
        decision="pruned",
        result={**result.as_dict(), "anchor_hash": anchor.head_hash, "before": cutoff_ts},
    )
    return result
