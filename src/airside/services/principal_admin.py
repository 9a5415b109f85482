"""Principals, their scopes and API keys: who may call Airside, and proving who is calling.

Every change here is a permission change and is audited. API keys are shown once, at issue;
only the SHA-256 of their secret part is stored. The secret is 256 random bits, so a plain
hash is enough (no password-style stretching is needed against guessing).
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from airside.errors import AccessDenied, AirsideError, ConflictError, NotFoundError
from airside.governance import access, audit
from airside.governance.principals import SYSTEM, Principal
from airside.services.app import Airside
from airside.services.authz import authorize
from airside.store.tables import ApiKey, PrincipalRecord, PrincipalScope

KEY_PREFIX = "as1_"
_KEY_ID_CHARS = 12
# The secret part: ``secrets.token_urlsafe(32)``, 43 characters of URL-safe base64.
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
# Who the audit log names for a caller whose key did not authenticate.
ANONYMOUS = Principal("anonymous", "none")
# ``last_used_at`` is written at most this often per key (it is a hint, not a log).
_LAST_USED_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class PrincipalInfo:
    name: str
    role: str
    scopes: list[dict[str, str]]
    keys: list[dict[str, Any]]
    created_at: str
    created_by: str
    disabled: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class IssuedKey:
    """The key itself is in ``secret`` and is never shown again."""

    key_id: str
    principal: str
    secret: str
    expires_at: str | None


def local_user_name() -> str:
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local:unknown"


def ensure_local_admin(app: Airside) -> Principal:
    """The CLI's principal. The first run on a fresh install registers the local user as the
    administrator (so the quick start needs no set-up); later runs by another local user get
    whatever role an administrator gave them, or are refused as unregistered."""
    name = local_user_name()
    with app.session() as s:
        rec = s.scalar(select(PrincipalRecord).where(PrincipalRecord.name == name))
        if rec is not None:
            return Principal(rec.name, rec.role)
        if s.scalar(select(func.count()).select_from(PrincipalRecord)):
            return Principal(name, "unregistered")
        rec = PrincipalRecord(name=name, role="admin", created_by=SYSTEM.name)
        why = "first run on a fresh install"
        _add_record(app, s, SYSTEM, rec, {"principal": name, "role": "admin", "why": why})
    return Principal(name, "admin")


def _add_record(
    app: Airside, s: Session, actor: Principal, rec: PrincipalRecord, result: dict[str, Any]
) -> None:
    """Seal a new principal's record, add it to ``s`` and audit it (``principal.add``)."""
    app.registry_seal.seal_principal(rec)
    s.add(rec)
    audit.append(s, actor, "principal.add", decision="created", result=result)


def _record(s: Session, name: str) -> PrincipalRecord:
    rec = s.scalar(select(PrincipalRecord).where(PrincipalRecord.name == name))
    if rec is None:
        raise NotFoundError(f"no principal named {name!r}")
    return rec


@contextmanager
def _refusing(
    app: Airside, principal: Principal, action: str, extra: dict[str, Any]
) -> Iterator[None]:
    """Audit an error raised inside as a refusal of ``action`` (AccessDenied from
    ``authorize`` is audited already)."""
    try:
        yield
    except AccessDenied:
        raise
    except AirsideError as e:
        app.audit_refusal(principal, action, e, extra=extra)
        raise
    except ValueError as e:
        app.audit_refusal(principal, action, AirsideError(str(e), code="bad_request"), extra=extra)
        raise


def add_principal(
    app: Airside,
    actor: Principal,
    name: str,
    role: str,
    scopes: list[tuple[str, str]] | None = None,
) -> Principal:
    """Register ``name`` with ``role`` and optional (gallery pattern, purpose pattern) scopes."""
    extra = {"principal": name, "role": role}
    authorize(app, actor, "principal.add")
    with _refusing(app, actor, "principal.add", extra):
        access.validate_name(name)
        access.validate_role(role)
        grants = [
            (access.validate_pattern(g, "gallery"), access.validate_pattern(p, "purpose"))
            for g, p in scopes or []
        ]
        with app.session() as s:
            if s.scalar(select(PrincipalRecord).where(PrincipalRecord.name == name)):
                raise ConflictError(f"principal {name!r} already exists")
            rec = PrincipalRecord(name=name, role=role, created_by=actor.name)
            rec.scopes = [
                PrincipalScope(gallery_pattern=g, purpose_pattern=p, granted_by=actor.name)
                for g, p in grants
            ]
            _add_record(app, s, actor, rec, {**extra, "scopes": [list(g) for g in grants]})
    return Principal(name, role)


def grant(
    app: Airside, actor: Principal, name: str, gallery_pattern: str, purpose_pattern: str = "*"
) -> None:
    extra = {"principal": name, "gallery": gallery_pattern, "purpose": purpose_pattern}
    authorize(app, actor, "principal.grant")
    with _refusing(app, actor, "principal.grant", extra):
        access.validate_pattern(gallery_pattern, "gallery")
        access.validate_pattern(purpose_pattern, "purpose")
        with app.session() as s:
            rec = _record(s, name)
            app.registry_seal.check_principal(rec)  # never re-seal a tampered entry
            if any(
                sc.gallery_pattern == gallery_pattern and sc.purpose_pattern == purpose_pattern
                for sc in rec.scopes
            ):
                raise ConflictError(f"{name!r} already has that scope")
            rec.scopes.append(
                PrincipalScope(
                    gallery_pattern=gallery_pattern,
                    purpose_pattern=purpose_pattern,
                    granted_by=actor.name,
                )
            )
            app.registry_seal.seal_principal(rec)
            audit.append(s, actor, "principal.grant", decision="granted", result=extra)


def revoke_scope(
    app: Airside, actor: Principal, name: str, gallery_pattern: str, purpose_pattern: str = "*"
) -> None:
    extra = {"principal": name, "gallery": gallery_pattern, "purpose": purpose_pattern}
    authorize(app, actor, "principal.revoke")
    with _refusing(app, actor, "principal.revoke", extra), app.session() as s:
        rec = _record(s, name)
        keep = [
            sc
            for sc in rec.scopes
            if (sc.gallery_pattern, sc.purpose_pattern) != (gallery_pattern, purpose_pattern)
        ]
        if len(keep) == len(rec.scopes):
            raise NotFoundError(f"{name!r} has no scope {gallery_pattern} / {purpose_pattern}")
        app.registry_seal.check_principal(rec)
        rec.scopes = keep
        app.registry_seal.seal_principal(rec)
        audit.append(s, actor, "principal.revoke", decision="revoked", result=extra)


def disable_principal(app: Airside, actor: Principal, name: str) -> None:
    """Disable a principal and revoke all its keys (records stay for the audit trail)."""
    authorize(app, actor, "principal.disable")
    with _refusing(app, actor, "principal.disable", {"principal": name}), app.session() as s:
        rec = _record(s, name)
        if rec.name == actor.name:
            raise ConflictError("a principal cannot disable itself")
        now = datetime.now(UTC)
        rec.disabled_at = now
        app.registry_seal.seal_principal(rec)
        keys = s.scalars(
            select(ApiKey).where(ApiKey.principal_id == rec.id, ApiKey.revoked_at.is_(None))
        ).all()
        for k in keys:
            k.revoked_at = now
            app.registry_seal.seal_key(k, rec.name)
        audit.append(
            s,
            actor,
            "principal.disable",
            decision="disabled",
            result={"principal": name, "keys_revoked": [k.key_id for k in keys]},
        )


def list_principals(app: Airside, actor: Principal) -> list[PrincipalInfo]:
    authorize(app, actor, "principal.list")
    with app.session() as s:
        out = []
        for rec in s.scalars(select(PrincipalRecord).order_by(PrincipalRecord.name)):
            keys = s.scalars(select(ApiKey).where(ApiKey.principal_id == rec.id)).all()
            out.append(
                PrincipalInfo(
                    rec.name,
                    rec.role,
                    [
                        {"gallery": sc.gallery_pattern, "purpose": sc.purpose_pattern}
                        for sc in rec.scopes
                    ],
                    [
                        {
                            "key_id": k.key_id,
                            "expires_at": _iso(k.expires_at),
                            "revoked": k.revoked_at is not None,
                            "last_used_at": _iso(k.last_used_at),
                        }
                        for k in keys
                    ],
                    _iso(rec.created_at) or "",
                    rec.created_by,
                    rec.disabled_at is not None,
                )
            )
        audit.append(s, actor, "principal.list", decision="listed", result={"n": len(out)})
    return out


def own_scopes(app: Airside, who: Principal) -> list[dict[str, str]]:
    """The caller's own grants (a principal may always know its own; not audited: it
    reveals nothing the caller did not already hold)."""
    with app.session(readonly=True) as s:
        rec = s.scalar(select(PrincipalRecord).where(PrincipalRecord.name == who.name))
        if rec is None:
            return []
        return [{"gallery": sc.gallery_pattern, "purpose": sc.purpose_pattern} for sc in rec.scopes]


def _iso(t: datetime | None) -> str | None:
    return t.isoformat(timespec="seconds") if t is not None else None


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def issue_key(
    app: Airside, actor: Principal, name: str, *, expires_in: timedelta | None = None
) -> IssuedKey:
    """A new API key for ``name``. The returned secret is the only copy."""
    authorize(app, actor, "apikey.issue")
    with _refusing(app, actor, "apikey.issue", {"principal": name}):
        if expires_in is not None and expires_in <= timedelta(0):
            raise ValueError("a key's lifetime must be positive")
        key_id = secrets.token_hex(_KEY_ID_CHARS // 2)
        secret = secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + expires_in if expires_in is not None else None
        with app.session() as s:
            rec = _record(s, name)
            if rec.disabled_at is not None:
                raise ConflictError(f"principal {name!r} is disabled")
            row = ApiKey(
                key_id=key_id,
                principal_id=rec.id,
                secret_sha256=_secret_hash(secret),
                created_by=actor.name,
                expires_at=expires,
            )
            app.registry_seal.seal_key(row, rec.name)
            s.add(row)
            audit.append(
                s,
                actor,
                "apikey.issue",
                decision="issued",
                result={"principal": name, "key_id": key_id, "expires_at": _iso(expires)},
            )
    return IssuedKey(key_id, name, f"{KEY_PREFIX}{key_id}_{secret}", _iso(expires))


def revoke_key(app: Airside, actor: Principal, key_id: str) -> None:
    authorize(app, actor, "apikey.revoke")
    with _refusing(app, actor, "apikey.revoke", {"key_id": key_id}), app.session() as s:
        k = s.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
        if k is None:
            raise NotFoundError(f"no API key {key_id!r}")
        if k.revoked_at is not None:
            raise ConflictError(f"API key {key_id} is already revoked")
        k.revoked_at = datetime.now(UTC)
        owner = s.get(PrincipalRecord, k.principal_id)
        app.registry_seal.seal_key(k, owner.name if owner else "")
        audit.append(s, actor, "apikey.revoke", decision="revoked", result={"key_id": key_id})


def authenticate(app: Airside, presented: str) -> Principal:
    """The principal an API key belongs to. Forged, revoked (reused), expired, malformed
    and empty keys, and keys of disabled principals, are refused with ``AccessDenied`` and
    audited. Whitespace around the key (a newline from a file) is ignored."""
    presented = presented.strip()
    key_id = _key_id(presented)
    try:
        if not presented:
            raise AccessDenied(
                "the API key is empty (with no key, leave AIRSIDE_API_KEY unset)", code="bad_key"
            )
        if key_id is None:
            raise AccessDenied("that is not an Airside API key", code="bad_key")
        secret = presented[len(KEY_PREFIX) + _KEY_ID_CHARS + 1 :]
        now = datetime.now(UTC)
        with app.session() as s:
            k = s.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
            # Compare even for an unknown id, so timing does not tell ids apart.
            stored = k.secret_sha256 if k is not None else "0" * 64
            if not hmac.compare_digest(stored, _secret_hash(secret)) or k is None:
                raise AccessDenied("API key not recognised", code="bad_key")
            if k.revoked_at is not None:
                raise AccessDenied(f"API key {key_id} was revoked", code="key_revoked")
            if k.expires_at is not None and _aware(k.expires_at) <= now:
                raise AccessDenied(f"API key {key_id} has expired", code="key_expired")
            rec = s.get(PrincipalRecord, k.principal_id)
            if rec is not None:
                app.registry_seal.check_key(k, rec.name)
                app.registry_seal.check_principal(rec)
            if rec is None or rec.disabled_at is not None:
                raise AccessDenied(
                    f"API key {key_id}'s principal is disabled", code="principal_disabled"
                )
            if k.last_used_at is None or now - _aware(k.last_used_at) > _LAST_USED_EVERY:
                k.last_used_at = now
            return Principal(rec.name, rec.role)
    except AccessDenied as e:
        app.audit_refusal(ANONYMOUS, "auth", e, extra={"key_id": key_id})
        raise


def key_id_of(presented: str) -> str:
    """The key id of a well-formed key (``authenticate`` has accepted it)."""
    key_id = _key_id(presented.strip())
    if key_id is None:
        raise AccessDenied("that is not an Airside API key", code="bad_key")
    return key_id


def _key_id(presented: str) -> str | None:
    """The key id of a key of the form ``as1_<12 hex>_<43 URL-safe base64>``, else None."""
    n = len(KEY_PREFIX) + _KEY_ID_CHARS
    if (
        not presented.startswith(KEY_PREFIX)
        or presented[n : n + 1] != "_"
        or any(c not in "0123456789abcdef" for c in presented[len(KEY_PREFIX) : n])
        or not _SECRET.fullmatch(presented[n + 1 :])
    ):
        return None
    return presented[len(KEY_PREFIX) : n]


def _aware(t: datetime) -> datetime:
    # SQLite returns naive datetimes for timezone-aware columns; they were written in UTC.
    return t if t.tzinfo else t.replace(tzinfo=UTC)
