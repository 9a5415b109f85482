"""Subject pseudonyms: how the append-only audit log names a person, so that erasure can
unlink them from it (crypto-shredding).

The audit log cannot forget: its records are chained and signed, and rewriting one would
break the chain. So a record never names a subject by their reference (a passenger name
record, a booking code...). It names them by a *pseudonym*: HMAC-SHA256, under the
subject's own random key, of a fixed label (domain separation from the other use of that
key, the digests of their enrolment photos in ``audit.subject_digest``), shortened to 24
hex characters (96 bits) behind ``ps_``.

The key is ``Subject.audit_salt``: 16 random bytes on the subject's row, deleted with it
when the subject is erased (SQLite overwrites deleted rows, ``secure_delete``). While the
subject lives, an operator's reader (the audit export) can turn a pseudonym back into a
reference by recomputing the pseudonyms of the living subjects (:func:`lookup`); nothing
stores that mapping. Once the row is gone nobody can: the pseudonym is a random-looking
string, the same in every record about that person (the log still shows that someone was
searched for three times), but linked to no one. A reference enrolled again after an
erasure is a new subject with a new key, and a new pseudonym.

A request about a reference that is not (or no longer) a subject records no reference at
all (:func:`redact` takes it out of the refusal's message too).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from airside.errors import AirsideError
from airside.store.tables import Subject

PREFIX = "ps_"
HEX_CHARS = 24
_LABEL = b"airside/subject-pseudonym/v1"
PATTERN = re.compile(rf"\b{PREFIX}[0-9a-f]{{{HEX_CHARS}}}\b")
# What a refusal's message says instead of a reference that is not a subject.
UNKNOWN = "<reference>"


def pseudonym(audit_salt: str) -> str:
    """The pseudonym of the subject whose key (``Subject.audit_salt``, hex) is given."""
    mac = hmac.new(bytes.fromhex(audit_salt), _LABEL, hashlib.sha256).hexdigest()
    return PREFIX + mac[:HEX_CHARS]


def of_reference(session: Session, reference: str) -> str | None:
    """The pseudonym of the living subject ``reference``, or None when there is none."""
    salt = session.scalar(select(Subject.audit_salt).where(Subject.reference == reference))
    return None if salt is None else pseudonym(salt)


def of_subject_id(session: Session, subject_id: int | None) -> str | None:
    """The pseudonym of the living subject with this row id, or None."""
    if subject_id is None:
        return None
    salt = session.scalar(select(Subject.audit_salt).where(Subject.id == subject_id))
    return None if salt is None else pseudonym(salt)


def lookup(session: Session) -> dict[str, str]:
    """Pseudonym -> reference for every living subject, computed now and kept nowhere.
    (One HMAC per subject: about a second per million.)"""
    return {
        pseudonym(salt): ref
        for ref, salt in session.execute(select(Subject.reference, Subject.audit_salt))
    }


def found_in(texts: Iterable[str | None], names: dict[str, str]) -> dict[str, str]:
    """The pseudonyms in ``texts`` that name living subjects (per ``names``), resolved."""
    out: dict[str, str] = {}
    for text in texts:
        for ps in PATTERN.findall(text or ""):
            ref = names.get(ps)
            if ref is not None:
                out[ps] = ref
    return out


def scrub(message: str, reference: str, replacement: str | None) -> str:
    """``message`` with ``reference`` (quoted or bare, as a whole word) replaced by
    ``replacement`` (a pseudonym; None: :data:`UNKNOWN`)."""
    instead = replacement or UNKNOWN
    if not reference:
        return message
    text = message.replace(repr(reference), instead)
    bare = re.compile(rf"(?<![\w-]){re.escape(reference)}(?![\w-])")
    return bare.sub(lambda _m: instead, text)


def redact(error: AirsideError, reference: str, replacement: str | None) -> AirsideError:
    """A copy of ``error`` for the audit log, its message :func:`scrub`-bed (same code)."""
    return AirsideError(scrub(str(error), reference, replacement), code=error.code)
