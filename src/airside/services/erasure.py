"""Erasure on request and withdrawal of consent.

Erasure deletes a subject's templates (vectors and source-image digests), events (and the
face crops they keep), legal-basis records and the subject row in one transaction, with
its audit record, and drops the vectors from every in-memory index. What the append-only
audit log keeps about the subject's photos was keyed with the subject's own salt, erased
with them, so it no longer links to any image. SQLite runs with ``secure_delete`` and the
write-ahead log is truncated afterwards, so the deleted bytes are not left in the files
either.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from airside.errors import AirsideError, ConsentError, NotFoundError
from airside.governance import audit
from airside.governance.principals import Principal
from airside.services.app import Airside
from airside.services.authz import authorize
from airside.store.models import Event, Gallery, LegalBasis, Subject, Template


@dataclass
class ErasureReceipt:
    subject: str
    erased_at: str
    templates: int
    galleries: list[str]
    legal_bases: int
    audit_seq: int
    receipt: str = ""
    reason: str = "erasure request"
    details: dict[str, object] = field(default_factory=dict)
    # Events about the subject (identity matches, watchlist hits), with their face crops.
    events: int = 0

    def seal(self) -> None:
        body = {k: v for k, v in self.as_dict().items() if k != "receipt"}
        self.receipt = hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()

    def as_dict(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "erased_at": self.erased_at,
            "reason": self.reason,
            "templates": self.templates,
            "galleries": self.galleries,
            "legal_bases": self.legal_bases,
            "events": self.events,
            "audit_seq": self.audit_seq,
            "receipt": self.receipt,
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
    gallery_ids = sorted({g for _, g, _ in template_rows})
    session.execute(delete(Template).where(Template.id.in_([t for t, _, _ in template_rows])))
    session.execute(
        update(Gallery).where(Gallery.id.in_(gallery_ids)).values(revision=Gallery.revision + 1)
    )
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


def _sync_indexes(app: Airside, gallery_names: list[str]) -> None:
    from airside.services.gallery_view import get_gallery

    with app.session() as s:
        for name in gallery_names:
            app.index(s, get_gallery(s, name))
    app.db.compact_wal()


def erase_subject(
    app: Airside, principal: Principal, reference: str, reason: str = "erasure request"
) -> ErasureReceipt:
    """Remove every trace of a subject's biometrics; returns a sealed receipt."""
    authorize(app, principal, "subject.erase")
    try:
        with app.session() as s:
            subj = _subject(s, reference)
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
            n_bases = len(
                s.scalars(select(LegalBasis.id).where(LegalBasis.subject_id == subj.id)).all()
            )
            s.execute(delete(LegalBasis).where(LegalBasis.subject_id == subj.id))
            s.execute(delete(Subject).where(Subject.id == subj.id))
            receipt = ErasureReceipt(
                subject=reference,
                erased_at=datetime.now(UTC).isoformat(timespec="seconds"),
                templates=len(rows),
                galleries=galleries,
                legal_bases=n_bases,
                audit_seq=0,
                reason=reason,
                events=n_events,
            )
            rec = audit.append(
                s,
                principal,
                "subject.erase",
                decision="erased",
                result={k: v for k, v in receipt.as_dict().items() if k != "audit_seq"},
            )
            receipt.audit_seq = rec.seq
            receipt.seal()
    except AirsideError as e:
        app.audit_refusal(principal, "subject.erase", e, extra={"subject": reference})
        raise
    _sync_indexes(app, galleries)
    return receipt


def withdraw_basis(
    app: Airside, principal: Principal, reference: str, purpose: str
) -> ErasureReceipt:
    """Withdraw the subject's basis for ``purpose`` and, in the same transaction, erase their
    templates and events from every gallery of that purpose that no other basis still
    covers."""
    from airside.governance.consent import covering_basis

    authorize(app, principal, "consent.withdraw", purpose=purpose)
    try:
        with app.session() as s:
            subj = _subject(s, reference)
            now = datetime.now(UTC)
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
            receipt = ErasureReceipt(
                subject=reference,
                erased_at=now.isoformat(timespec="seconds"),
                templates=len(rows),
                galleries=galleries,
                legal_bases=len(bases),
                audit_seq=0,
                reason=f"withdrawal of basis for {purpose}",
                events=n_events,
            )
            rec = audit.append(
                s,
                principal,
                "consent.withdraw",
                decision="withdrawn",
                purpose=purpose,
                result={k: v for k, v in receipt.as_dict().items() if k != "audit_seq"},
            )
            receipt.audit_seq = rec.seq
            receipt.seal()
    except AirsideError as e:
        app.audit_refusal(
            principal, "consent.withdraw", e, purpose=purpose, extra={"subject": reference}
        )
        raise
    _sync_indexes(app, galleries)
    return receipt
