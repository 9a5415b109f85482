"""Human oversight: a match against a watchlist gallery opens a review case that becomes
actionable only after two different reviewers have confirmed it (EU AI Act, Art. 14(5)).

A rejection by any reviewer closes the case as rejected; a case nobody settles before its
deadline expires. Every vote and outcome is audited, and the case keeps the trail the Act
asks for: when the use started and ended, the reference database, the input that matched
and who verified it. The person who ran the search cannot review their own hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from airside.errors import AccessDenied, AirsideError, ConflictError, NotFoundError
from airside.governance import access, audit, pseudonyms
from airside.governance.principals import SYSTEM, Principal
from airside.services.app import Airside
from airside.services.authz import authorize
from airside.store.tables import ReviewCase, ReviewVote

CONFIRMATIONS_NEEDED = 2


class ReviewError(AirsideError):
    code = "review"


def requires_review(purpose: str) -> bool:
    """Watchlist galleries (purpose ``watchlist`` or ``watchlist:...``) need two-person review."""
    return purpose == "watchlist" or purpose.startswith("watchlist:")


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass(frozen=True)
class CaseView:
    id: int
    gallery: str
    purpose: str
    subject: str
    score: float
    threshold: float
    probe_digest: str
    opened_by: str
    opened_at: str
    deadline: str
    status: str
    closed_at: str | None
    votes: list[dict[str, str]]

    @property
    def actionable(self) -> bool:
        return self.status == "confirmed"

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "actionable": self.actionable}


def _view(case: ReviewCase, votes: list[ReviewVote]) -> CaseView:
    return CaseView(
        id=case.id,
        gallery=case.gallery,
        purpose=case.purpose,
        subject=case.subject,
        score=case.score,
        threshold=case.threshold,
        probe_digest=case.probe_digest,
        opened_by=case.opened_by,
        opened_at=_aware(case.opened_at).isoformat(timespec="seconds"),
        deadline=_aware(case.deadline).isoformat(timespec="seconds"),
        status=case.status,
        closed_at=_aware(case.closed_at).isoformat(timespec="seconds") if case.closed_at else None,
        votes=[
            {"reviewer": v.reviewer, "decision": v.decision, "at": _aware(v.at).isoformat(),
             "note": v.note or ""}
            for v in votes
        ],
    )  # fmt: skip


def open_case(
    session: Session,
    app: Airside,
    principal: Principal,
    *,
    gallery: str,
    purpose: str,
    subject: str,
    score: float,
    threshold: float,
    probe_digest: str,
) -> ReviewCase:
    """Open a case in the caller's transaction (the search that produced the hit)."""
    now = datetime.now(UTC)
    case = ReviewCase(
        gallery=gallery,
        purpose=purpose,
        subject=subject,
        score=score,
        threshold=threshold,
        probe_digest=probe_digest,
        opened_by=principal.name,
        opened_at=now,
        deadline=now + timedelta(seconds=app.settings.review_timeout_s),
        status="open",
    )
    session.add(case)
    session.flush()
    audit.append(
        session,
        principal,
        "review.open",
        decision="open",
        purpose=purpose,
        gallery=gallery,
        input_digest=probe_digest,
        # By pseudonym (governance/pseudonyms.py); erasure switches the case to it too.
        result={
            "case": case.id,
            "subject": pseudonyms.of_reference(session, subject),
            "score": round(score, 6),
        },
    )
    return case


def _case(session: Session, case_id: int) -> ReviewCase:
    case = session.get(ReviewCase, case_id, with_for_update=True)
    if case is None:
        raise NotFoundError(f"no review case {case_id}")
    return case


def _votes(session: Session, case_id: int) -> list[ReviewVote]:
    return list(
        session.scalars(
            select(ReviewVote).where(ReviewVote.case_id == case_id).order_by(ReviewVote.id)
        )
    )


def _expire_if_due(session: Session, case: ReviewCase) -> bool:
    """Expire an open case past its deadline (the review policy acts, as ``system``)."""
    now = datetime.now(UTC)
    if case.status == "open" and _aware(case.deadline) <= now:
        case.status = "expired"
        case.closed_at = now
        audit.append(
            session,
            SYSTEM,
            "review.expire",
            decision="expired",
            purpose=case.purpose,
            gallery=case.gallery,
            result={"case": case.id},
        )
        return True
    return False


def vote(
    app: Airside, principal: Principal, case_id: int, decision: str, note: str | None = None
) -> CaseView:
    """Record a reviewer's confirmation or rejection; returns the case as it now stands."""
    if decision not in ("confirm", "reject"):
        raise ValueError("decision must be confirm or reject")
    try:
        with app.session() as s:
            access.authorize(s, principal, "review.vote")
            case = _case(s, case_id)
            access.authorize(
                s, principal, "review.vote", access.GalleryRef(case.gallery, case.purpose)
            )
            if _expire_if_due(s, case):
                view = _view(case, _votes(s, case_id))
                expired = True
            else:
                expired = False
                if case.status != "open":
                    raise ConflictError(f"case {case_id} is already {case.status}")
                if principal.name == case.opened_by:
                    raise ReviewError(
                        "the person who ran the search cannot review its hit", code="forbidden"
                    )
                votes = _votes(s, case_id)
                if any(v.reviewer == principal.name for v in votes):
                    raise ReviewError(
                        f"{principal.name} has already reviewed case {case_id}; a second, "
                        "different reviewer is needed",
                        code="same_reviewer",
                    )
                now = datetime.now(UTC)
                s.add(
                    ReviewVote(
                        case_id=case_id,
                        reviewer=principal.name,
                        role=principal.role,
                        decision=decision,
                        at=now,
                        note=note,
                    )
                )
                s.flush()
                votes = _votes(s, case_id)
                confirms = {v.reviewer for v in votes if v.decision == "confirm"}
                if decision == "reject":
                    case.status, case.closed_at = "rejected", now
                elif len(confirms) >= CONFIRMATIONS_NEEDED:
                    case.status, case.closed_at = "confirmed", now
                audit.append(
                    s,
                    principal,
                    f"review.{decision}",
                    decision=case.status,
                    purpose=case.purpose,
                    gallery=case.gallery,
                    result={"case": case_id, "confirmations": len(confirms), "note": note},
                )
                view = _view(case, votes)
        if expired:
            raise ReviewError(f"case {case_id} expired at {view.deadline}", code="expired")
        return view
    except AirsideError as e:
        app.audit_refusal(principal, f"review.{decision}", e, extra={"case": case_id})
        raise


def get_case(app: Airside, principal: Principal, case_id: int) -> CaseView:
    authorize(app, principal, "review.list")
    try:
        with app.session() as s:
            case = _case(s, case_id)
            ref = access.GalleryRef(case.gallery, case.purpose)
            if not access.visible_galleries(s, principal, [ref]):
                raise AccessDenied(f"case {case_id} is outside your scope", code="out_of_scope")
            _expire_if_due(s, case)
            return _view(case, _votes(s, case_id))
    except AirsideError as e:
        app.audit_refusal(principal, "review.get", e, extra={"case": case_id})
        raise


def list_cases(app: Airside, principal: Principal, status: str | None = "open") -> list[CaseView]:
    """Cases with ``status`` (all when None) in the galleries the principal's scopes reach.
    Open cases past their deadline expire first."""
    authorize(app, principal, "review.list")
    with app.session() as s:
        for c in s.scalars(select(ReviewCase).where(ReviewCase.status == "open")):
            _expire_if_due(s, c)
        q = select(ReviewCase).order_by(ReviewCase.id)
        if status is not None:
            q = q.where(ReviewCase.status == status)
        cases = list(s.scalars(q))
        refs = {access.GalleryRef(c.gallery, c.purpose) for c in cases}
        visible = set(access.visible_galleries(s, principal, refs))
        cases = [c for c in cases if access.GalleryRef(c.gallery, c.purpose) in visible]
        votes: dict[int, list[ReviewVote]] = {c.id: [] for c in cases}
        if cases:
            for v in s.scalars(
                select(ReviewVote).where(ReviewVote.case_id.in_(votes)).order_by(ReviewVote.id)
            ):
                votes[v.case_id].append(v)
        views = [_view(c, votes[c.id]) for c in cases]
        audit.append(s, principal, "review.list", decision="listed", result={"n": len(views)})
    return views
