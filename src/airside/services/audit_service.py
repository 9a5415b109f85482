"""The audit log for people outside the system: signed checkpoints, verification, export.

An export is JSON lines for a regulator: every record from ``since_seq`` on, then the
checkpoints that cover them. Each export first logs itself (action ``audit.export``) and
signs a fresh checkpoint over the head, so the file ends in a signature covering its last
record and can be verified offline from the file alone (see docs/audit.md).

Records name subjects by pseudonym (``governance/pseudonyms.py``). A record line of the
export also carries ``subjects``, pseudonym -> reference for the subjects it names who are
still enrolled, computed at export time from the subjects table (outside the hashed fields,
so verification is unaffected); an erased subject's pseudonym resolves to no one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from airside.errors import AirsideError
from airside.governance import audit, key_source, pseudonyms
from airside.governance.principals import Principal
from airside.governance.signing import Signer
from airside.services.app import Airside
from airside.services.authz import authorize
from airside.store.tables import AuditCheckpoint, AuditRecord

log = logging.getLogger(__name__)

RECORD_FIELDS = (*audit._FIELDS, "hash", "signature", "key_fingerprint")
CHECKPOINT_FIELDS = ("id", "seq", "head_hash", "ts", "key_fingerprint", "signature", "public_key")


def signer(app: Airside) -> Signer:
    """The installation's signing key (``governance/key_source.py`` says where from)."""
    return app.signer


@dataclass(frozen=True)
class ExportSummary:
    records: int
    checkpoints: int
    path: Path
    # False when the chain did not verify, so no fresh checkpoint could be signed over the
    # head: the file's tail is then covered by hashes only (offline verification says so).
    head_signed: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "checkpoints": self.checkpoints, "path": str(self.path)}


def export(app: Airside, principal: Principal, out: Path, since_seq: int = 1) -> ExportSummary:
    """Write records ``since_seq``.. and their checkpoints to ``out`` as JSON lines.

    The export is logged first and the head then signed, in one transaction; the file is
    written to a temporary name and renamed into place only once that transaction has
    committed, so there is never an export the log does not know about, nor half a file.
    A chain that no longer verifies is still exported (a regulator may need exactly that),
    without a fresh checkpoint.
    """
    authorize(app, principal, "audit.export")
    try:
        if since_seq < 1:
            raise AirsideError(
                "the first record to export must be 1 or more",
                code="bad_request",
                details={"field": "since", "limit": 1},
            )
        if out.is_dir():
            raise AirsideError(f"{out} is a directory", code="bad_request")
        if not out.parent.is_dir():
            raise AirsideError(f"directory {out.parent} does not exist", code="bad_request")
        key = signer(app)
        tmp: Path | None = None
        try:
            with app.session() as s:
                audit.append(
                    s,
                    principal,
                    "audit.export",
                    decision="exported",
                    result={"since_seq": since_seq, "path": str(out.resolve())},
                )
                head_signed = True
                try:
                    audit.checkpoint(s, key)
                except AirsideError as e:
                    if e.code != "audit_chain_broken":
                        raise
                    log.warning("exporting an audit chain that does not verify: %s", e)
                    head_signed = False
                names = pseudonyms.lookup(s)
                records = s.scalars(
                    select(AuditRecord)
                    .where(AuditRecord.seq >= since_seq)
                    .order_by(AuditRecord.seq)
                    .execution_options(yield_per=5000)
                )
                checkpoints = s.scalars(
                    select(AuditCheckpoint)
                    # and the one just before, which the first record may name
                    .where(AuditCheckpoint.seq >= since_seq - 1)
                    .order_by(AuditCheckpoint.seq, AuditCheckpoint.id)
                )
                tmp, n_rec, n_cp = _write_temp(out, records, checkpoints, names)
            os.replace(tmp, out)
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise
    except AirsideError as e:
        app.audit_refusal(principal, "audit.export", e, extra={"path": str(out)})
        raise
    return ExportSummary(n_rec, n_cp, out, head_signed)


def export_jsonl(app: Airside, principal: Principal, out: Path, since_seq: int = 1) -> int:
    """``export``, returning the number of records written."""
    return export(app, principal, out, since_seq).records


def make_checkpoint(app: Airside, principal: Principal) -> dict[str, Any]:
    """Log the request, then sign the head (which covers that record)."""
    authorize(app, principal, "audit.checkpoint")
    key = signer(app)
    try:
        with app.session() as s:
            audit.append(
                s,
                principal,
                "audit.checkpoint",
                decision="signed",
                result={"key_fingerprint": key.fingerprint},
            )
            cp = audit.checkpoint(s, key)
            return {"seq": cp.seq, "head_hash": cp.head_hash, "key_fingerprint": cp.key_fingerprint}
    except AirsideError as e:
        app.audit_refusal(principal, "audit.checkpoint", e)
        raise


def verify_chain(
    app: Airside, principal: Principal, trusted: Iterable[str] | None = None
) -> audit.ChainReport:
    """Verify records, checkpoints and the witness (the newest signed head kept outside
    the database). Without ``trusted`` fingerprints, the installation's own key is trusted
    when it exists (a rotated key's fingerprints must then be passed); then every record
    must carry a valid signature by a trusted key."""
    authorize(app, principal, "audit.verify")
    with app.session(readonly=True) as s:
        return verify_in(app, s, trusted)


def verify_in(app: Airside, s: Session, trusted: Iterable[str] | None = None) -> audit.ChainReport:
    """``audit.verify`` in the open session ``s`` against the installation's keys and witness
    (see :func:`verify_chain`); for use-cases that report the chain's state themselves."""
    keys = list(trusted) if trusted is not None else None
    if key_source.source_of(app.settings, key_source.SIGNING).available():
        own = app.signer
        if keys is None:
            keys = [own.public_pem]
        elif own.fingerprint in {k.strip().lower() for k in keys}:
            keys.append(own.public_pem)  # so records are checked even with no checkpoint
    unreadable: dict[str, Any] | None = None
    try:
        witness = app.witness.read()
    except AirsideError as e:
        witness = None
        unreadable = {"seq": 0, "problem": "witness_invalid", "detail": str(e)}
    report = audit.verify(s, public_keys=keys, witness=witness)
    if unreadable is not None:
        report.problems.append(unreadable)
        report.ok = False
    return report


def record_json(rec: AuditRecord, names: dict[str, str] | None = None) -> dict[str, Any]:
    """One export line; with ``names`` (``pseudonyms.lookup``), ``subjects`` resolves the
    pseudonyms of living subjects in the record (not part of what ``hash`` covers)."""
    obj: dict[str, Any] = {"type": "record", **{k: getattr(rec, k) for k in RECORD_FIELDS}}
    found = pseudonyms.found_in([rec.result], names) if names else {}
    if found:
        obj["subjects"] = found
    return obj


def checkpoint_json(cp: AuditCheckpoint) -> dict[str, Any]:
    return {"type": "checkpoint", **{k: getattr(cp, k) for k in CHECKPOINT_FIELDS}}


def _write_temp(
    out: Path,
    records: Iterable[AuditRecord],
    checkpoints: Iterable[AuditCheckpoint],
    names: dict[str, str] | None = None,
) -> tuple[Path, int, int]:
    """The export in a synced temporary file next to ``out`` (mode 0600: personal data)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            n_rec = _lines(f, (record_json(r, names) for r in records))
            n_cp = _lines(f, (checkpoint_json(c) for c in checkpoints))
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, n_rec, n_cp


def _lines(f: IO[str], objs: Iterable[dict[str, Any]]) -> int:
    n = 0
    for obj in objs:
        f.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        n += 1
    return n
