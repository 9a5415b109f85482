"""Console sessions: an API key exchanged once for a browser session, so the key never sits
in the browser's storage where page scripts could read it.

A session is two random 256-bit values: the cookie (HttpOnly: page scripts never see it)
and a CSRF token (given to the page, sent back in a header on every change: another site
can make the browser send the cookie, but cannot read the token). Only their SHA-256
digests are stored, and each row is sealed like the principal registry (an HMAC under the
registry key, which is not in the database): a database writer cannot lengthen a session,
revive an ended one or hand it to another principal. A session lives at most ``ttl`` and
ends earlier with its key (revoked or expired), its principal (disabled) or at sign-out;
signing in and out are audited, and a refused session is audited as a refused key is.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from airside.errors import AccessDenied
from airside.governance import audit
from airside.governance.access import GLOBAL_ROLES, PERMISSIONS, ROLES
from airside.governance.principals import Principal
from airside.services import principal_admin
from airside.services.app import Airside
from airside.store.tables import ApiKey, ConsoleSession, PrincipalRecord

DEFAULT_TTL = timedelta(hours=8)  # one shift


@dataclass(frozen=True)
class SignedIn:
    """A new session: ``token`` goes in the cookie, ``csrf`` to the page (both shown once)."""

    token: str
    csrf: str
    principal: Principal
    key_id: str
    expires_at: datetime


@dataclass(frozen=True)
class ActiveSession:
    principal: Principal
    csrf_sha256: str
    key_id: str
    expires_at: datetime


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def sign_in(app: Airside, presented_key: str, ttl: timedelta = DEFAULT_TTL) -> SignedIn:
    """A session for the holder of ``presented_key`` (refused and audited like the key)."""
    if not timedelta(minutes=1) <= ttl <= timedelta(days=1):
        raise ValueError("a console session lasts between 1 minute and 1 day")
    who = principal_admin.authenticate(app, presented_key)
    key_id = principal_admin.key_id_of(presented_key)
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with app.session() as s:
        rec = s.scalar(select(PrincipalRecord).where(PrincipalRecord.name == who.name))
        assert rec is not None  # authenticate just found it
        # Expired sessions are dead weight: cleared as new ones begin.
        s.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
        row = ConsoleSession(
            token_sha256=_digest(token),
            csrf_sha256=_digest(csrf),
            principal_id=rec.id,
            key_id=key_id,
            created_at=now,
            expires_at=now + ttl,
        )
        app.registry_seal.seal_session(row, who.name)
        s.add(row)
        audit.append(
            s, who, "session.start", decision="started",
            result={"key_id": key_id, "expires_at": (now + ttl).isoformat()},
        )  # fmt: skip
    return SignedIn(token, csrf, who, key_id, now + ttl)


def resolve(app: Airside, token: str) -> ActiveSession:
    """The live session of a cookie, or ``AccessDenied`` (audited) saying why not."""
    now = datetime.now(UTC)
    try:
        with app.session(readonly=True) as s:
            row = s.scalar(
                select(ConsoleSession).where(ConsoleSession.token_sha256 == _digest(token))
            )
            if row is None or row.ended_at is not None:
                raise AccessDenied("not signed in (the session ended)", code="session_ended")
            if _aware(row.expires_at) <= now:
                raise AccessDenied("the console session has expired", code="session_expired")
            key = s.scalar(select(ApiKey).where(ApiKey.key_id == row.key_id))
            rec = s.get(PrincipalRecord, row.principal_id)
            if key is None or key.revoked_at is not None:
                raise AccessDenied("the session's API key was revoked", code="key_revoked")
            if key.expires_at is not None and _aware(key.expires_at) <= now:
                raise AccessDenied("the session's API key has expired", code="key_expired")
            if rec is None or rec.disabled_at is not None:
                raise AccessDenied("the session's principal is disabled", code="principal_disabled")
            app.registry_seal.check_key(key, rec.name)
            app.registry_seal.check_principal(rec)
            app.registry_seal.check_session(row, rec.name)
            return ActiveSession(
                Principal(rec.name, rec.role), row.csrf_sha256, row.key_id, _aware(row.expires_at)
            )
    except AccessDenied as e:
        app.audit_refusal(principal_admin.ANONYMOUS, "session", e)
        raise


def csrf_ok(session: ActiveSession, presented: str | None) -> bool:
    """Whether ``presented`` is the session's CSRF token (compared in constant time)."""
    return presented is not None and hmac.compare_digest(session.csrf_sha256, _digest(presented))


def sign_out(app: Airside, token: str) -> None:
    """End the session of ``token`` (audited); ending an ended session changes nothing."""
    active = resolve(app, token)
    now = datetime.now(UTC)
    with app.session() as s:
        row = s.scalar(select(ConsoleSession).where(ConsoleSession.token_sha256 == _digest(token)))
        if row is None or row.ended_at is not None:
            return
        row.ended_at = now
        app.registry_seal.seal_session(row, active.principal.name)
        audit.append(
            s, active.principal, "session.end", decision="ended", result={"key_id": active.key_id}
        )


def describe(app: Airside, who: Principal) -> dict[str, object]:
    """Who is calling: name, role, what the role may do and which galleries it reaches (the
    console shows only those pages; the services decide regardless)."""
    return {
        "principal": who.name,
        "role": who.role,
        "role_means": ROLES.get(who.role, ""),
        "actions": ["*"] if who.role == "admin" else sorted(PERMISSIONS.get(who.role, ())),
        "all_galleries": who.role in GLOBAL_ROLES,
        "scopes": principal_admin.own_scopes(app, who),
    }
