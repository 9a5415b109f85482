"""Listing who is enrolled: personal data, so every listing is audited."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from airside.governance import access, audit
from airside.governance.access import GalleryRef
from airside.governance.principals import Principal
from airside.services.app import Airside
from airside.services.authz import authorize
from airside.services.gallery_view import get_gallery
from airside.store.tables import Gallery, LegalBasis, Subject, Template


@dataclass(frozen=True)
class SubjectInfo:
    subject: str
    galleries: dict[str, int]
    bases: list[dict[str, object]]

    def as_dict(self) -> dict[str, object]:
        return {"subject": self.subject, "galleries": self.galleries, "bases": self.bases}


def list_subjects(
    app: Airside,
    principal: Principal,
    gallery_name: str | None = None,
    *,
    reference: str | None = None,
) -> list[SubjectInfo]:
    """Subjects in ``gallery_name``, or in every gallery the principal's scopes reach;
    ``reference``: only that subject (which galleries and legal bases hold them)."""
    authorize(app, principal, "subject.list", gallery=gallery_name)
    with app.session() as s:
        q = (
            select(Subject.id, Subject.reference, Gallery.name, func.count(Template.id))
            .join(Template, Template.subject_id == Subject.id)
            .join(Gallery, Gallery.id == Template.gallery_id)
            .group_by(Subject.id, Subject.reference, Gallery.name)
            .order_by(Subject.reference)
        )
        purpose = None
        if reference is not None:
            q = q.where(Subject.reference == reference)
        if gallery_name is not None:
            g = get_gallery(s, gallery_name)
            purpose = g.purpose
            q = q.where(Gallery.id == g.id)
        else:
            every = [GalleryRef(n, p) for n, p in s.execute(select(Gallery.name, Gallery.purpose))]
            visible = [g.name for g in access.visible_galleries(s, principal, every)]
            q = q.where(Gallery.name.in_(visible))
        by_subject: dict[int, tuple[str, dict[str, int]]] = {}
        for sid, ref, gname, n in s.execute(q):
            by_subject.setdefault(sid, (ref, {}))[1][gname] = int(n)
        bases: dict[int, list[dict[str, object]]] = {}
        if by_subject:
            for b in s.scalars(select(LegalBasis).where(LegalBasis.subject_id.in_(by_subject))):
                bases.setdefault(b.subject_id, []).append(
                    {
                        "kind": b.kind,
                        "purpose": b.purpose,
                        "granted_at": b.granted_at.isoformat(),
                        "expires_at": b.expires_at.isoformat() if b.expires_at else None,
                        "withdrawn": b.withdrawn_at is not None,
                    }
                )
        out = [
            SubjectInfo(ref, gals, bases.get(sid, [])) for sid, (ref, gals) in by_subject.items()
        ]
        audit.append(
            s,
            principal,
            "subject.list",
            decision="listed",
            purpose=purpose,
            gallery=gallery_name,
            result={"n": len(out)},
        )
    return out
