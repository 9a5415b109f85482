"""Tamper-evident audit chain.

Each record's SHA-256 covers its own fields and the hash of the record before it, so that
altering, deleting, inserting or reordering any record breaks the chain at a findable
place. Records are written in the caller's transaction, together with the effect they log.

Hashes alone do not stop someone who can write the database from rewriting the chain and
recomputing every hash after the change. Signatures do: when the session carries the
installation's Ed25519 key (``SIGNER`` in ``Session.info``, set by the service layer), every
record is signed as it is appended, over the chain head it creates. The signed bytes are
exactly ``f"{seq}:{hash}".encode("ascii")`` (``checkpoint_message``), e.g.
``b"42:9f86d0...0a08"``. The key lives outside the database, so a writer with database
access can neither forge a record, nor recompute a rewritten chain, nor append.

What signatures alone cannot show is that records were cut off the end, or that the whole
database was put back to an earlier copy: every remaining record still carries a valid
signature. For that the newest signed head is also kept outside the database
(``governance/witness.py``), and ``verify`` compares the log with it.

*Checkpoints* are signed heads kept in their own table: the anchors where retention may
cut the log (``prune``) and what an export's reader checks. Each one is named by the record
appended right after it (``audit.checkpointed``), so a deleted checkpoint is found too.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from airside.errors import AirsideError
from airside.governance import signing
from airside.governance.principals import SYSTEM, Principal
from airside.governance.signing import Signer
from airside.governance.witness import SignedHead
from airside.store.db import PG_WRITERS_LOCK
from airside.store.tables import AuditCheckpoint, AuditHead, AuditRecord

log = logging.getLogger(__name__)

GENESIS = "0" * 64
# Set in ``Session.info`` by ``append`` so the unit of work can checkpoint before commit.
APPENDED = "airside.audit.appended"
# ``Session.info`` key of the Signer that signs each appended record (service sessions).
SIGNER = "airside.audit.signer"
# ``Session.info`` key where ``append`` leaves the newest signed head, for the witness.
SIGNED_HEAD = "airside.audit.signed_head"
# The record appended right after each checkpoint, naming it.
CHECKPOINTED_ACTION = "audit.checkpointed"
# PostgreSQL advisory lock that serialises appenders: the writers' lock (store/db.py).
_PG_APPEND_LOCK = PG_WRITERS_LOCK
# Called with the seconds each ``append`` took (the server's /metrics); empty by default.
APPEND_OBSERVERS: list[Callable[[float], None]] = []
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
    """Append one record in ``session``'s transaction (it commits or rolls back with the effect).

    Appenders are serialised: on SQLite the unit of work already holds the write lock
    (``store/db.py`` begins IMMEDIATE); on PostgreSQL a transaction-scoped advisory lock is
    taken before the head is read, so two transactions never build on the same head."""
    started = time.perf_counter()
    head = _locked_head(session)
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
    signer: Signer | None = session.info.get(SIGNER)
    if signer is not None:
        rec.signature = signer.sign(checkpoint_message(rec.seq, rec.hash))
        rec.key_fingerprint = signer.fingerprint
        session.info[SIGNED_HEAD] = SignedHead(
            rec.seq, rec.hash, rec.signature, signer.fingerprint, fields["ts"]
        )
    session.add(rec)
    session.info[APPENDED] = True
    head.seq = rec.seq
    head.hash = rec.hash
    session.flush()
    for observe in APPEND_OBSERVERS:
        observe(time.perf_counter() - started)
    return rec


def lock_writers(session: Session) -> None:
    """Serialise ``session``'s transaction with every other appender from here to its end.

    SQLite's unit of work holds the database's write lock from its start already; on
    PostgreSQL this takes the appenders' transaction-scoped advisory lock (taking it again
    in the same transaction is harmless). What is numbered under it (audit records, event
    ids) is therefore committed in the order of its numbers."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_APPEND_LOCK})


def _locked_head(session: Session) -> AuditHead:
    lock_writers(session)
    head = session.get(AuditHead, 1, with_for_update=True, populate_existing=True)
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS)
        session.add(head)
    return head


@dataclass
class ChainReport:
    records: int
    ok: bool
    problems: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: int = 0
    # The highest record covered by a checkpoint that verified (signature, key and hash).
    signed_seq: int = 0
    # Records whose own signature verified under a known (and, when keys were given,
    # trusted) key, and the keys that signed them.
    signed_records: int = 0
    keys: list[str] = field(default_factory=list)
    # The newest signed head kept outside the database, when one was given, and the
    # record range of the retained log.
    witness_seq: int | None = None
    first_seq: int = 0
    last_seq: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "ok": self.ok,
            "problems": self.problems,
            "checkpoints": self.checkpoints,
            "signed_seq": self.signed_seq,
            "signed_records": self.signed_records,
            "keys": self.keys,
            "witness_seq": self.witness_seq,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
        }


class _Keys:
    """Public keys by fingerprint, each parsed once. A key read from the database is only
    used when its fingerprint is trusted (or nothing was pinned)."""

    def __init__(self, trusted: set[str] | None) -> None:
        self.trusted = trusted
        self._pems: dict[str, str] = {}
        self._loaded: dict[str, Any] = {}

    def add(self, pem: str) -> None:
        with contextlib.suppress(ValueError):
            self._pems.setdefault(signing.public_key_fingerprint(pem), pem)

    def check(self, fp: str | None, signature: str, message: bytes) -> str | None:
        """None when ``signature`` is a valid, trusted signature; else the problem kind."""
        if fp is None:
            return "unsigned"
        if self.trusted is not None and fp not in self.trusted:
            return "untrusted_key"
        key = self._loaded.get(fp)
        if key is None:
            pem = self._pems.get(fp)
            if pem is None:
                return "unknown_key"
            key = self._loaded[fp] = signing.load_public_key(pem)
        try:
            key.verify(bytes.fromhex(signature), message)
        except (InvalidSignature, ValueError):
            return "bad_signature"
        return None


def verify(
    session: Session,
    batch: int = 5000,
    public_keys: Iterable[str] | None = None,
    witness: SignedHead | None = None,
) -> ChainReport:
    """Walk the chain in sequence order and name every record where it breaks.

    Each record must follow from the one before (sequence, link, hash). Records that carry
    a signature must verify under their key; when ``public_keys`` (fingerprints or PEM
    public keys) are given, every record must be signed by one of them. Every checkpoint
    must verify and still match its record, and every checkpoint a record names must still
    exist. ``witness``, the newest signed head kept outside the database, must verify and
    still be in the log: a log that ends before it was cut off or rolled back."""
    checkpoints = list(
        session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq, AuditCheckpoint.id))
    )
    given = list(public_keys) if public_keys is not None else None
    trusted = None if given is None else {_normalise_key(k) for k in given}
    keys = _Keys(trusted)
    for k in given or ():
        if "BEGIN PUBLIC KEY" in k:
            keys.add(k)
    for cp in checkpoints:
        keys.add(cp.public_key)
    wanted = {cp.seq for cp in checkpoints}
    if witness is not None:
        wanted.add(witness.seq)
    hash_at: dict[int, str] = {}
    problems: list[dict[str, Any]] = []
    base = _base(session, checkpoints)
    problems.extend(base.problems)
    if base.seq:
        # The signed head the retained log starts from stands in for the pruned records.
        hash_at[base.seq] = base.hash
    prev_hash = base.hash
    expected_seq = base.seq + 1
    count = signed = 0
    first_seq = 0
    signers: set[str] = set()
    unsigned: list[int] = []
    named: list[tuple[int, int, str]] = []  # (record, checkpoint seq, signature)
    last_hash = base.hash
    stmt = select(AuditRecord).order_by(AuditRecord.seq).execution_options(yield_per=batch)
    for rec in session.scalars(stmt):
        count += 1
        first_seq = first_seq or rec.seq
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
        if rec.signature is None:
            if trusted is not None:
                unsigned.append(rec.seq)
        else:
            bad = keys.check(
                rec.key_fingerprint, rec.signature, checkpoint_message(rec.seq, rec.hash)
            )
            if bad is None:
                signed += 1
                signers.add(str(rec.key_fingerprint))
            else:
                problems.append(
                    {
                        "seq": rec.seq,
                        "problem": bad,
                        "detail": _SIGNATURE_PROBLEMS[bad].format(key=rec.key_fingerprint),
                    }
                )
        if rec.action == CHECKPOINTED_ACTION:
            said = _json_object(rec.result)
            cp_seq, cp_sig = said.get("checkpoint_seq"), said.get("signature")
            if isinstance(cp_seq, int) and isinstance(cp_sig, str):
                named.append((rec.seq, cp_seq, cp_sig))
        prev_hash = rec.hash
        last_hash = rec.hash
        expected_seq = rec.seq + 1
    last_seq = expected_seq - 1
    if unsigned:
        problems.append(
            {
                "seq": unsigned[0],
                "problem": "unsigned",
                "detail": f"{len(unsigned)} records carry no signature (first: {unsigned[0]})",
                "records": len(unsigned),
            }
        )
    head = session.get(AuditHead, 1)
    head_seq, head_hash = (head.seq, head.hash) if head else (0, GENESIS)
    if head_seq != last_seq or head_hash != last_hash:
        problems.append(
            {
                "seq": head_seq,
                "problem": "truncated" if head_seq > last_seq else "head_mismatch",
                "detail": f"chain head says record {head_seq}, log ends at {last_seq}",
            }
        )
    signed_seq = 0
    for cp in checkpoints:
        if cp.seq < base.seq:
            continue  # covered records were pruned; the anchor checkpoint vouches for them
        found = _checkpoint_problems(cp, hash_at.get(cp.seq), trusted)
        problems.extend(found)
        if not found:
            signed_seq = max(signed_seq, cp.seq)
    present = {(cp.seq, cp.signature) for cp in checkpoints}
    for rec_seq, cp_seq, cp_sig in named:
        if cp_seq >= base.seq and (cp_seq, cp_sig) not in present:
            problems.append(
                {
                    "seq": cp_seq,
                    "problem": "checkpoint_deleted",
                    "detail": f"record {rec_seq} names a checkpoint of record {cp_seq} "
                    "that is no longer in the log (deleted or replaced)",
                }
            )
    if witness is not None:
        problems.extend(_witness_problems(witness, keys, hash_at, base, last_seq))
    return ChainReport(
        records=count,
        ok=not problems,
        problems=problems,
        checkpoints=len(checkpoints),
        signed_seq=signed_seq,
        signed_records=signed,
        keys=sorted(signers),
        witness_seq=None if witness is None else witness.seq,
        first_seq=first_seq,
        last_seq=last_seq,
    )


_SIGNATURE_PROBLEMS = {
    "unsigned": "the record carries no signature",
    "untrusted_key": "signed by key {key}, which is not trusted",
    "unknown_key": "signed by key {key}, whose public key is not known here",
    "bad_signature": "the signature does not verify (the record or its hash was rewritten)",
}


def _json_object(raw: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _witness_problems(
    witness: SignedHead, keys: _Keys, hash_at: dict[int, str], base: _Base, last_seq: int
) -> list[dict[str, Any]]:
    """Is the newest head signed outside the database still in the log?"""
    bad = keys.check(
        witness.key_fingerprint, witness.signature, checkpoint_message(witness.seq, witness.hash)
    )
    if bad is not None:
        return [
            {
                "seq": witness.seq,
                "problem": "witness_invalid",
                "detail": "the signed head kept outside the database does not verify: "
                + _SIGNATURE_PROBLEMS[bad].format(key=witness.key_fingerprint),
            }
        ]
    if witness.seq > last_seq:
        return [
            {
                "seq": witness.seq,
                "problem": "rolled_back",
                "detail": f"record {witness.seq} was committed and signed ({witness.ts}), "
                f"but the log ends at record {last_seq}: records were cut off the end or "
                "the database was restored from an earlier copy",
            }
        ]
    if witness.seq < base.seq:
        return []  # pruned since; the anchor checkpoint vouches for it
    if hash_at.get(witness.seq, GENESIS if witness.seq == 0 else None) != witness.hash:
        return [
            {
                "seq": witness.seq,
                "problem": "forked",
                "detail": f"record {witness.seq} is not the one that was signed and kept "
                "outside the database: the log was rewritten from there",
            }
        ]
    return []


ADOPT_ACTION = "audit.adopt"


def adopt_unsigned(session: Session, signer: Signer, *, witnessed: bool) -> int:
    """Sign the records of a log written before records were signed; returns how many.

    Trust on first use, once: only when no record is signed yet, no signed head was ever
    witnessed outside the database, and the chain verifies by its hashes. Afterwards an
    unsigned record is always a problem (``verify`` names it), so an attacker who strips
    signatures cannot have them put back by this."""
    newest = session.scalar(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1))
    if newest is None or newest.signature is not None:
        return 0
    if witnessed or session.scalar(
        select(AuditRecord.seq).where(AuditRecord.signature.is_not(None)).limit(1)
    ):
        log.warning("unsigned audit records after signed ones: verify the audit chain")
        return 0
    report = verify(session)
    if not report.ok:
        log.warning("an unsigned audit log that does not verify was not adopted")
        return 0
    n = 0
    for rec in session.scalars(
        select(AuditRecord).order_by(AuditRecord.seq).execution_options(yield_per=5000)
    ):
        rec.signature = signer.sign(checkpoint_message(rec.seq, rec.hash))
        rec.key_fingerprint = signer.fingerprint
        n += 1
    session.flush()
    append(
        session,
        SYSTEM,
        ADOPT_ACTION,
        decision="signed",
        result={"records": n, "through_seq": newest.seq, "key_fingerprint": signer.fingerprint},
    )
    return n


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
    if last is not None and head.seq == last.seq + 1:
        newest = session.get(AuditRecord, head.seq)
        if newest is not None and newest.action == CHECKPOINTED_ACTION:
            return last  # nothing but the record naming ``last`` came after it
    broken = _segment_problem(session, signer, last, head)
    if broken is not None:
        raise AirsideError(
            f"refusing to sign the audit chain head: {broken}; verify the audit chain",
            code="audit_chain_broken",
            details={"next": "audit.verify"},
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
    append(
        session,
        SYSTEM,
        CHECKPOINTED_ACTION,
        decision="signed",
        result={
            "checkpoint_seq": cp.seq,
            "signature": cp.signature,
            "key_fingerprint": cp.key_fingerprint,
        },
    )
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
    # Records since the last checkpoint, not counting the one that names it.
    if head.seq - (last.seq + 1 if last is not None else 0) < every:
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
