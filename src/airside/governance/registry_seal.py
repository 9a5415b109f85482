"""Seals on the principal registry, so that editing it in the database grants nothing.

Roles, scopes and API keys live in ordinary tables; whoever can write the database could
``UPDATE principals SET role = 'admin'``. Each principal row (with its scopes) and each API
key row therefore carries an HMAC-SHA256 under the installation's registry key, a secret
file beside the other keys. Services write the seal with every permission change and check
it at every authorisation: a row changed behind their back is refused as
``registry_tampered`` (and the refusal audited), never obeyed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from datetime import UTC, datetime

from airside.errors import AccessDenied
from airside.store.tables import ApiKey, ConsoleSession, PrincipalRecord, PrincipalScope

# Where ``Airside.session`` puts the seal, so every check in that unit of work can use it.
SESSION_KEY = "airside.registry_seal"


def _iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).isoformat(timespec="seconds")


class RegistrySeal:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, fields: object) -> str:
        msg = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def principal_mac(self, rec: PrincipalRecord, scopes: Iterable[PrincipalScope]) -> str:
        return self._mac(
            {
                "name": rec.name,
                "role": rec.role,
                "disabled": rec.disabled_at is not None,
                "scopes": sorted([s.gallery_pattern, s.purpose_pattern] for s in scopes),
            }
        )

    def key_mac(self, k: ApiKey, principal_name: str) -> str:
        return self._mac(
            {
                "key_id": k.key_id,
                "principal": principal_name,
                "secret_sha256": k.secret_sha256,
                "expires_at": _iso(k.expires_at),
                "revoked": k.revoked_at is not None,
            }
        )

    def seal_principal(self, rec: PrincipalRecord) -> None:
        rec.mac = self.principal_mac(rec, rec.scopes)

    def seal_key(self, k: ApiKey, principal_name: str) -> None:
        k.mac = self.key_mac(k, principal_name)

    def check_principal(self, rec: PrincipalRecord) -> None:
        want = self.principal_mac(rec, rec.scopes)
        if rec.mac is None or not hmac.compare_digest(rec.mac, want):
            raise AccessDenied(
                f"the registry entry of {rec.name!r} was changed outside Airside "
                "(its seal does not match); an administrator must re-create it",
                code="registry_tampered",
            )

    def principal_ok(self, rec: PrincipalRecord) -> bool:
        try:
            self.check_principal(rec)
        except AccessDenied:
            return False
        return True

    def check_key(self, k: ApiKey, principal_name: str) -> None:
        want = self.key_mac(k, principal_name)
        if k.mac is None or not hmac.compare_digest(k.mac, want):
            raise AccessDenied(
                f"API key {k.key_id} was changed outside Airside (its seal does not match)",
                code="registry_tampered",
            )

    def session_mac(self, row: ConsoleSession, principal_name: str) -> str:
        """Console sessions are sealed too: a database writer cannot lengthen one, revive an
        ended one or move it to another principal or key."""
        return self._mac(
            {
                "token_sha256": row.token_sha256,
                "csrf_sha256": row.csrf_sha256,
                "principal": principal_name,
                "key_id": row.key_id,
                "expires_at": _iso(row.expires_at),
                "ended": row.ended_at is not None,
            }
        )

    def seal_session(self, row: ConsoleSession, principal_name: str) -> None:
        row.mac = self.session_mac(row, principal_name)

    def check_session(self, row: ConsoleSession, principal_name: str) -> None:
        want = self.session_mac(row, principal_name)
        if row.mac is None or not hmac.compare_digest(row.mac, want):
            raise AccessDenied(
                "the console session was changed outside Airside (its seal does not match)",
                code="registry_tampered",
            )
