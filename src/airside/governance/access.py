"""Roles, what each may do, and the per-gallery scopes that bound them.

The decision is made against the principal registry in the store, never against what a
caller claims: a ``Principal`` object names who is calling, and ``authorize`` looks up that
name's registered role, state and scopes in the same database the effect is written to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from sqlalchemy import select
from sqlalchemy.orm import Session

from airside.errors import AccessDenied
from airside.governance.principals import Principal
from airside.governance.registry_seal import SESSION_KEY, RegistrySeal
from airside.store.tables import PrincipalRecord, PrincipalScope

ROLES: dict[str, str] = {
    "admin": "everything, including principals, keys, purges and erasure",
    "enrolment_officer": "enrol subjects and record or withdraw their legal basis",
    "operator": "verify and identify travellers (gate and boarding staff)",
    "reviewer": "confirm or reject watchlist hits (two-person review)",
    "auditor": "read the audit log and governance reports; no biometric search",
    "camera": "a camera service: identify tracked faces in its galleries",
}

# Actions that act on one gallery: non-global roles need a scope that covers it.
GALLERY_ACTIONS = frozenset(
    {"enrol", "enrol.batch", "verify.subject", "identify", "subject.list", "review.vote",
     "event.record", "event.list", "event.crop"}
)  # fmt: skip
# Configuration changes only an administrator makes (no other role lists them): adding or
# removing a model changes what every later decision rests on, and migrating a gallery
# re-enrols its subjects under another model; moving, backing up and restoring the store
# hands over or replaces everything; a gallery's own threshold table changes what every
# later decision against it means. Each is audited.
ADMIN_ONLY_ACTIONS = frozenset(
    {"model.add", "model.remove", "gallery.migrate", "store.migrate", "store.backup",
     "store.restore", "calibration.fit_gallery", "calibration.remove_gallery"}
)  # fmt: skip
# Roles whose grants are not bounded by gallery scopes.
GLOBAL_ROLES = frozenset({"admin", "auditor"})

PERMISSIONS: dict[str, frozenset[str]] = {
    "enrolment_officer": frozenset(
        {"enrol", "enrol.batch", "consent.withdraw", "subject.list", "verify",
         "verify.subject", "gallery.list"}
    ),
    "operator": frozenset(
        {"verify", "verify.subject", "identify", "gallery.list", "event.record", "event.list",
         "event.crop", "event.safety", "camera.list"}
    ),
    "reviewer": frozenset(
        {"review.list", "review.vote", "gallery.list", "event.list", "event.crop"}
    ),
    "auditor": frozenset(
        {"audit.verify", "audit.export", "audit.checkpoint", "report.governance",
         "gallery.list", "review.list", "principal.list", "event.list", "camera.list"}
    ),
    # event.safety: record a safety event (no identity involved, so not a gallery action).
    "camera": frozenset({"identify", "event.record", "event.safety"}),
}  # fmt: skip

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,199}$")


def seal_of(session: Session) -> RegistrySeal:
    """The registry seal of this unit of work (``Airside.session`` provides it)."""
    seal = session.info.get(SESSION_KEY)
    if not isinstance(seal, RegistrySeal):
        raise RuntimeError("access checks need a session from Airside.session()")
    return seal


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"principal name {name!r} must be 1-200 letters, digits or . _ : @ + - "
            "and start with a letter or digit"
        )
    return name


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return role


def validate_pattern(pattern: str, what: str) -> str:
    if not pattern or len(pattern) > 200 or any(c.isspace() for c in pattern):
        raise ValueError(f"{what} pattern {pattern!r} must be 1-200 characters without spaces")
    return pattern


def allowed(role: str, action: str) -> bool:
    return role == "admin" or action in PERMISSIONS.get(role, frozenset())


@dataclass(frozen=True)
class GalleryRef:
    name: str
    purpose: str


def authorize(
    session: Session,
    principal: Principal,
    action: str,
    gallery: GalleryRef | None = None,
    purpose: str | None = None,
) -> PrincipalRecord:
    """Raise ``AccessDenied`` unless the registered ``principal`` may do ``action`` (on
    ``gallery``, for the declared ``purpose`` when one is given)."""
    rec = session.scalar(select(PrincipalRecord).where(PrincipalRecord.name == principal.name))
    if rec is None:
        raise AccessDenied(
            f"{principal.name!r} is not a registered principal; an administrator adds it",
            code="unknown_principal",
            details={"next": "principal.add"},
        )
    seal_of(session).check_principal(rec)
    if rec.disabled_at is not None:
        raise AccessDenied(f"principal {rec.name!r} is disabled", code="principal_disabled")
    if rec.role != principal.role:
        raise AccessDenied(
            f"{rec.name!r} is registered as {rec.role!r}, not {principal.role!r}",
            code="role_mismatch",
        )
    if not allowed(rec.role, action):
        raise AccessDenied(f"role {rec.role!r} may not {action}", code="forbidden")
    if gallery is None:
        return rec
    if purpose is not None and purpose != gallery.purpose:
        raise AccessDenied(
            f"gallery {gallery.name!r} serves purpose {gallery.purpose!r}, not {purpose!r}",
            code="purpose_mismatch",
        )
    covering = require_scope_on_name(rec, action, gallery.name)
    if covering is None:
        return rec
    if not any(fnmatchcase(gallery.purpose, s.purpose_pattern) for s in covering):
        raise AccessDenied(
            f"{rec.name!r} may use {gallery.name!r} only for "
            f"{', '.join(sorted({s.purpose_pattern for s in covering}))}, "
            f"not for its purpose {gallery.purpose!r}",
            code="purpose_mismatch",
        )
    return rec


def require_scope_on_name(
    rec: PrincipalRecord, action: str, gallery_name: str
) -> list[PrincipalScope] | None:
    """The scopes of ``rec`` whose gallery pattern matches ``gallery_name`` (None when
    ``action`` is not bounded by scopes for its role). Raises ``out_of_scope`` when none
    does: checked on the name alone, before the gallery is looked up, so that a principal
    learns whether a gallery exists (``not_found``) only for names its scopes could cover."""
    if rec.role in GLOBAL_ROLES or action not in GALLERY_ACTIONS:
        return None
    covering = [s for s in rec.scopes if fnmatchcase(gallery_name, s.gallery_pattern)]
    if not covering:
        raise AccessDenied(
            f"{rec.name!r} has no scope on gallery {gallery_name!r}", code="out_of_scope"
        )
    return covering


def visible_galleries(
    session: Session, principal: Principal, galleries: Iterable[GalleryRef]
) -> list[GalleryRef]:
    """The galleries among ``galleries`` that ``principal``'s scopes reach."""
    rec = session.scalar(select(PrincipalRecord).where(PrincipalRecord.name == principal.name))
    if rec is None or rec.disabled_at is not None or not seal_of(session).principal_ok(rec):
        return []
    if rec.role in GLOBAL_ROLES:
        return list(galleries)
    scopes: list[PrincipalScope] = list(rec.scopes)
    return [
        g
        for g in galleries
        if any(
            fnmatchcase(g.name, s.gallery_pattern) and fnmatchcase(g.purpose, s.purpose_pattern)
            for s in scopes
        )
    ]


def who_may(session: Session, actions: Iterable[str], gallery: GalleryRef) -> list[str]:
    """Active principals that may do any of ``actions`` on ``gallery``, as "name (role)"."""
    wanted = list(actions)
    out = []
    for rec in session.scalars(
        select(PrincipalRecord)
        .where(PrincipalRecord.disabled_at.is_(None))
        .order_by(PrincipalRecord.name)
    ):
        if not any(allowed(rec.role, a) for a in wanted):
            continue
        if not seal_of(session).principal_ok(rec):
            out.append(f"{rec.name} (TAMPERED registry entry: refused)")
            continue
        if rec.role in GLOBAL_ROLES or any(
            fnmatchcase(gallery.name, s.gallery_pattern)
            and fnmatchcase(gallery.purpose, s.purpose_pattern)
            for s in rec.scopes
        ):
            out.append(f"{rec.name} ({rec.role})")
    return out
