"""Consent and other legal bases: a subject may be processed for a purpose only while a
recorded basis covers that purpose."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from airside.errors import ConsentError
from airside.store.tables import LegalBasis, Subject

# GDPR Art. 6(1) bases that can apply to biometric processing by an airport or authority.
BASIS_KINDS = ("consent", "contract", "legal_obligation", "vital_interests", "public_task")
NEEDS_REFERENCE = ("legal_obligation", "public_task")


@dataclass(frozen=True)
class BasisInput:
    kind: str
    reference: str | None = None
    evidence_sha256: str | None = None
    expires_at: datetime | None = None

    def validate(self) -> None:
        if self.kind not in BASIS_KINDS:
            raise ConsentError(
                f"unknown legal basis {self.kind!r}; use one of {', '.join(BASIS_KINDS)}",
                code="bad_basis",
            )
        if self.kind in NEEDS_REFERENCE and not self.reference:
            raise ConsentError(
                f"a {self.kind} basis needs a reference naming the law or mandate",
                code="bad_basis",
                details={"field": "basis_ref"},
            )
        if self.expires_at is not None and self.expires_at <= datetime.now(UTC):
            raise ConsentError("the legal basis has already expired", code="bad_basis")


def _aware(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def covering_basis(
    session: Session, subject: Subject, purpose: str, at: datetime | None = None
) -> LegalBasis | None:
    """The newest basis that covers ``purpose`` at time ``at`` (now by default)."""
    now = at or datetime.now(UTC)
    rows = session.scalars(
        select(LegalBasis)
        .where(LegalBasis.subject_id == subject.id, LegalBasis.purpose == purpose)
        .order_by(LegalBasis.granted_at.desc(), LegalBasis.id.desc())
    )
    for b in rows:
        if b.withdrawn_at is not None:
            continue
        exp = _aware(b.expires_at)
        if exp is not None and exp <= now:
            continue
        return b
    return None


def require_basis(session: Session, subject: Subject, purpose: str) -> LegalBasis:
    b = covering_basis(session, subject, purpose)
    if b is None:
        raise ConsentError(
            f"subject {subject.reference!r} has no consent or legal basis for purpose "
            f"{purpose!r}; record one when enrolling",
            details={"field": "basis"},
        )
    return b


def record_basis(
    session: Session, subject: Subject, purpose: str, basis: BasisInput, recorded_by: str
) -> LegalBasis:
    """Record a basis; an identical one still in force is reused, not duplicated."""
    basis.validate()
    current = covering_basis(session, subject, purpose)
    if (
        current is not None
        and current.kind == basis.kind
        and current.reference == basis.reference
        and current.evidence_sha256 == basis.evidence_sha256
        and _aware(current.expires_at) == _aware(basis.expires_at)
    ):
        return current
    row = LegalBasis(
        subject_id=subject.id,
        kind=basis.kind,
        purpose=purpose,
        reference=basis.reference,
        evidence_sha256=basis.evidence_sha256,
        expires_at=basis.expires_at,
        recorded_by=recorded_by,
    )
    session.add(row)
    session.flush()
    return row
