"""Erasure on request and withdrawal of consent.

Erasure deletes a subject's templates (vectors and source-image digests), events (and the
face crops they keep), legal-basis records and the subject row in one transaction, with
its audit record, and drops the vectors from every in-memory index. SQLite runs with
``secure_delete`` and the write-ahead log is truncated afterwards, so the deleted bytes are
not left in the files either. PostgreSQL keeps them in dead tuples and WAL segments, in the
server's own files, until VACUUM and WAL recycling (``store/db.Database.compact_wal``):
there the server's storage must be protected as the database is.

The append-only audit log cannot forget, so it never named the subject: its records carry
the subject's pseudonym and their photos' digests, both keyed with the subject's own salt
(``governance/pseudonyms.py``), which is deleted with the subject row. Afterwards nothing
links those records to the person (crypto-shredding). Review cases, which outlive the
subject (the oversight trail), are switched from the reference to the pseudonym in the
same transaction.

The receipt (``governance/receipts.py``) names the subject, is signed by the installation
and verifies offline; the erasure's own audit record keeps only the receipt's digest and
counts, never the reference or the pseudonym (which would link the subject's history to a
receipt they hold).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from airside.errors import AirsideError, ConsentError, NotFoundError
from airside.governance import audit, pseudonyms, receipts
from airside.governance.principals import Principal
from airside.governance.signing import Signer
from airside.services.app import Airside
from airside.services.authz import authorize
from airside.services.template_removal import by_gallery, remove_templates
from airside.store.tables import (
    ErasureRequest,
    Event,
    Gallery,
    LegalBasis,
    ReviewCase,
    ReviewVote,
    Subject,
    Template,
)


@dataclass
class ErasureReceipt:
    """What was erased, for the data subject and the controller (``as_dict`` is the signed
    receipt; ``receipt`` the digest the audit log keeps)."""

    subject: str
    erased_at: str
    templates: int
    galleries: list[str]
    legal_bases: int
    audit_seq: int
    receipt: str = ""
    reason: str = "erasure request"
    # Events about the subject (identity matches, watchlist hits), with their face crops.
    events: int = 0
    kind: str = "subject.erase"
    purpose: str | None = None
    # Review cases of the subject's watchlist hits, kept under their pseudonym.
    review_cases: int = 0
    # Random: without it, the digest in the audit log could be recomputed from a guess of
    # who was erased and when.
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))
    key_fingerprint: str = ""
    public_key: str = ""
    signature: str = ""

    def content(self) -> dict[str, Any]:
        return {
            "version": receipts.VERSION,
            "kind": self.kind,
            "subject": self.subject,
            "erased_at": self.erased_at,
            "reason": self.reason,
            "purpose": self.purpose,
            "templates": self.templates,
            "galleries": list(self.galleries),
            "legal_bases": self.legal_bases,
            "events": self.events,
            "review_cases": self.review_cases,
            "nonce": self.nonce,
        }

    def seal(self) -> None:
        """Set ``receipt``, the digest of the content (what the audit log keeps)."""
        self.receipt = receipts.digest(self.content())

    def sign(self, signer: Signer) -> None:
        doc = receipts.sign(
            {**self.content(), "receipt": self.receipt, "audit_seq": self.audit_seq}, signer
        )
        self.key_fingerprint = doc["key_fingerprint"]
        self.public_key = doc["public_key"]
        self.signature = doc["signature"]

    def audit_result(self) -> dict[str, Any]:
        """The erasure's audit record: the receipt's digest and counts, no one's name."""
        return {
            "receipt": self.receipt,
            "templates": self.templates,
            "galleries": list(self.galleries),
            "legal_bases": self.legal_bases,
            "events": self.events,
            "review_cases": self.review_cases,
        }

    def as_dict(self) -> dict[str, Any]:
        """The signed receipt (``airside receipt verify`` checks exactly this object)."""
        return {
            **self.content(),
            "receipt": self.receipt,
            "audit_seq": self.audit_seq,
            "key_fingerprint": self.key_fingerprint,
            "public_key": self.public_key,
            "signature": self.signature,
        }


def _subject(session: Session, reference: str) -> Subject:
    subj = session.scalar(select(Subject).where(Subject.reference == reference))
    if subj is None:
        raise NotFoundError(f"no subject {reference!r}")
    return subj


def _delete_templates(session: Session, template_rows: list[tuple[int, int, str]]) -> list[str]:
    """Delete templates; bump the revision of each gallery touched. Returns gallery names."""
    if not template_rows:
        return []
    remove_templates(session, by_gallery([(t, g) for t, g, _ in template_rows]))
    return sorted({name for _, _, name in template_rows})


def _delete_events(session: Session, subject_id: int, purpose: str | None = None) -> int:
    """Delete the subject's events (of galleries of ``purpose`` when given), crops included."""
    where = [Event.subject_id == subject_id]
    if purpose is not None:
        where.append(Event.purpose == purpose)
    ids = list(session.scalars(select(Event.id).where(*where)))
    if ids:
        session.execute(delete(Event).where(Event.id.in_(ids)))
    return len(ids)


def _pseudonymise_cases(session: Session, reference: str, pseudonym: str) -> int:
    """Name the subject's review cases (and the reviewers' notes) by pseudonym: the cases
    are the oversight trail and outlive the subject, their reference must not."""
    ids = list(session.scalars(select(ReviewCase.id).where(ReviewCase.subject == reference)))
    if not ids:
        return 0
    session.execute(update(ReviewCase).where(ReviewCase.id.in_(ids)).values(subject=pseudonym))
    for v in session.scalars(
        select(ReviewVote).where(ReviewVote.case_id.in_(ids), ReviewVote.note.is_not(None))
    ):
        v.note = pseudonyms.scrub(v.note or "", reference, pseudonym)
    return len(ids)


def _sync_indexes(app: Airside, gallery_names: list[str]) -> None:
    from airside.services.gallery_view import get_gallery

    with app.session() as s:
        for name in gallery_names:
            app.index_after_commit(s, get_gallery(s, name))
    app.db.compact_wal()


def _log_and_sign(
    session: Session,
    principal: Principal,
    signer: Signer,
    receipt: ErasureReceipt,
    action: str,
    decision: str,
    resumed: bool = False,
) -> None:
    """Seal the receipt, log its digest and counts, name that record and sign."""
    receipt.seal()
    result = receipt.audit_result()
    if resumed:  # carried out by the next start, after the process that took it died
        result["resumed"] = True
    rec = audit.append(
        session,
        principal,
        action,
        decision=decision,
        purpose=receipt.purpose,
        result=result,
    )
    receipt.audit_seq = rec.seq
    receipt.sign(signer)


def _request(
    app: Airside,
    principal: Principal,
    action: str,
    reference: str,
    reason: str,
    purpose: str | None = None,
) -> int:
    """Record the request (committed) before carrying it out; its id."""
    with app.session() as s:
        _subject(s, reference)  # an unknown subject is refused, not queued
        req = ErasureRequest(
            action=action,
            reference=reference,
            purpose=purpose,
            reason=reason,
            actor=principal.name,
            role=principal.role,
        )
        s.add(req)
        s.flush()
        return req.id


def _drop_request(app: Airside, request: int) -> None:
    with app.session() as s:
        s.execute(delete(ErasureRequest).where(ErasureRequest.id == request))


def erase_subject(
    app: Airside, principal: Principal, reference: str, reason: str = "erasure request"
) -> ErasureReceipt:
    """Remove every trace of a subject's biometrics; returns a signed receipt.

    The request is committed first: if the process dies before the erasure commits, the
    next start completes it (:func:`complete_pending`)."""
    authorize(app, principal, "subject.erase")
    try:
        signer = app.signer  # a key that cannot be used refuses before anything is erased
        request = _request(app, principal, "subject.erase", reference, reason)
        try:
            receipt, galleries = _erase(app, principal, signer, request, reference, reason)
        except AirsideError:
            _drop_request(app, request)  # refused (erased meanwhile): nothing to resume
            raise
    except AirsideError as e:
        app.audit_refusal(principal, "subject.erase", e, about=reference)
        raise
    _sync_indexes(app, galleries)
    return receipt


def _erase(
    app: Airside,
    principal: Principal,
    signer: Signer,
    request: int,
    reference: str,
    reason: str,
    resumed: bool = False,
) -> tuple[ErasureReceipt, list[str]]:
    with app.session() as s:
        subj = _subject(s, reference)
        ps = pseudonyms.pseudonym(subj.audit_salt)
        rows = [
            (t, g, n)
            for t, g, n in s.execute(
                select(Template.id, Template.gallery_id, Gallery.name)
                .join(Gallery, Gallery.id == Template.gallery_id)
                .where(Template.subject_id == subj.id)
            ).all()
        ]
        galleries = _delete_templates(s, rows)
        n_events = _delete_events(s, subj.id)
        n_cases = _pseudonymise_cases(s, reference, ps)
        n_bases = len(
            s.scalars(select(LegalBasis.id).where(LegalBasis.subject_id == subj.id)).all()
        )
        s.execute(delete(LegalBasis).where(LegalBasis.subject_id == subj.id))
        s.execute(delete(Subject).where(Subject.id == subj.id))
        s.execute(delete(ErasureRequest).where(ErasureRequest.id == request))
        receipt = ErasureReceipt(
            subject=reference,
            erased_at=datetime.now(UTC).isoformat(timespec="seconds"),
            templates=len(rows),
            galleries=galleries,
            legal_bases=n_bases,
            audit_seq=0,
            reason=reason,
            events=n_events,
            review_cases=n_cases,
        )
        _log_and_sign(s, principal, signer, receipt, "subject.erase", "erased", resumed)
    return receipt, galleries


def withdraw_basis(
    app: Airside, principal: Principal, reference: str, purpose: str
) -> ErasureReceipt:
    """Withdraw the subject's basis for ``purpose`` and, in the same transaction, erase their
    templates and events from every gallery of that purpose that no other basis still
    covers. Returns a signed receipt, like erasure; recorded first, like erasure, so a
    withdrawal cut short is completed by the next start."""
    authorize(app, principal, "consent.withdraw", purpose=purpose)
    try:
        signer = app.signer
        with app.session(readonly=True) as s:
            _bases_in_force(s, _subject(s, reference), reference, purpose)
        reason = f"withdrawal of basis for {purpose}"
        request = _request(app, principal, "consent.withdraw", reference, reason, purpose)
        try:
            receipt, galleries = _withdraw(app, principal, signer, request, reference, purpose)
        except AirsideError:
            _drop_request(app, request)
            raise
    except AirsideError as e:
        app.audit_refusal(principal, "consent.withdraw", e, purpose=purpose, about=reference)
        raise
    _sync_indexes(app, galleries)
    return receipt


def _bases_in_force(
    s: Session, subj: Subject, reference: str, purpose: str
) -> Sequence[LegalBasis]:
    bases = s.scalars(
        select(LegalBasis).where(
            LegalBasis.subject_id == subj.id,
            LegalBasis.purpose == purpose,
            LegalBasis.withdrawn_at.is_(None),
        )
    ).all()
    if not bases:
        raise ConsentError(
            f"subject {reference!r} has no basis in force for purpose {purpose!r}",
            code="no_basis_to_withdraw",
        )
    return bases


def _withdraw(
    app: Airside,
    principal: Principal,
    signer: Signer,
    request: int,
    reference: str,
    purpose: str,
    resumed: bool = False,
) -> tuple[ErasureReceipt, list[str]]:
    from airside.governance.consent import covering_basis

    with app.session() as s:
        subj = _subject(s, reference)
        now = datetime.now(UTC)
        bases = _bases_in_force(s, subj, reference, purpose)
        for b in bases:
            b.withdrawn_at = now
        s.flush()
        rows: list[tuple[int, int, str]] = []
        n_events = 0
        if covering_basis(s, subj, purpose) is None:
            n_events = _delete_events(s, subj.id, purpose)
            rows = [
                (t, g, n)
                for t, g, n in s.execute(
                    select(Template.id, Template.gallery_id, Gallery.name)
                    .join(Gallery, Gallery.id == Template.gallery_id)
                    .where(Template.subject_id == subj.id, Gallery.purpose == purpose)
                ).all()
            ]
        galleries = _delete_templates(s, rows)
        s.execute(delete(ErasureRequest).where(ErasureRequest.id == request))
        receipt = ErasureReceipt(
            subject=reference,
            erased_at=now.isoformat(timespec="seconds"),
            templates=len(rows),
            galleries=galleries,
            legal_bases=len(bases),
            audit_seq=0,
            reason=f"withdrawal of basis for {purpose}",
            events=n_events,
            kind="consent.withdraw",
            purpose=purpose,
        )
        _log_and_sign(s, principal, signer, receipt, "consent.withdraw", "withdrawn", resumed)
    return receipt, galleries


# A request younger than this may still be in the hands of the process that recorded it
# (between its two transactions): only older ones are taken as cut short. An erasure's
# transaction takes well under a second; a minute leaves room for a stalled one.
IN_FLIGHT_S = 60.0


def complete_pending(app: Airside, *, older_than_s: float = IN_FLIGHT_S) -> list[ErasureReceipt]:
    """Carry out every erasure and withdrawal that was recorded but cut short (the process
    died before its transaction committed), as the principal who asked for it. Run by the
    purge scheduler of long-running processes (at start and every interval) and by every
    purge. Only requests older than ``older_than_s`` are taken: a younger one may be in
    flight in another process (0: the caller knows that no other process is working). A
    request whose subject is gone (erased since) or whose basis is no longer in force is
    dropped: there is nothing left to do. The receipts are signed as usual; their audit
    records say ``resumed``."""
    before = datetime.now(UTC) - timedelta(seconds=older_than_s)
    with app.session(readonly=True) as s:
        pending = [
            (r.id, r.action, r.reference, r.purpose, r.reason, Principal(r.actor, r.role))
            for r in s.scalars(
                select(ErasureRequest)
                .where(ErasureRequest.requested_at <= before)
                .order_by(ErasureRequest.id)
            )
        ]
    if not pending:
        return []
    signer = app.signer
    done: list[ErasureReceipt] = []
    for rid, action, reference, purpose, reason, principal in pending:
        try:
            if action == "consent.withdraw" and purpose is not None:
                receipt, galleries = _withdraw(
                    app, principal, signer, rid, reference, purpose, resumed=True
                )
            else:
                receipt, galleries = _erase(
                    app, principal, signer, rid, reference, reason, resumed=True
                )
        except (NotFoundError, ConsentError):
            _drop_request(app, rid)  # erased or withdrawn since: nothing left to do
            continue
        _sync_indexes(app, galleries)
        done.append(receipt)
    return done
