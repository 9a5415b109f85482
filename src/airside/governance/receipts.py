"""Erasure receipts: signed by the installation, verifiable offline.

A receipt is one JSON object (``airside subject erase --receipt-out FILE``, or the output
of ``--json``). Its *content* says who was erased, when, why and how much (templates,
galleries, legal bases, events, review cases), with a random ``nonce``; ``receipt`` is the
SHA-256 of the content's canonical JSON. That digest, with the counts, is all the audit log
keeps of an erasure: the nonce makes it impossible to confirm a guess of who was erased
and when by recomputing it. The receipt then names the audit record (``audit_seq``) and is
signed with the installation's Ed25519 key (``governance/signing.py``, the key of the audit
checkpoints) over

    b"airside-receipt/v1\\n" + canonical JSON of every field except ``signature``

where canonical JSON is ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` in UTF-8. It carries the public key (PEM) and its fingerprint (the
first 16 hex characters of the SHA-256 of the 32 raw public-key bytes), so anyone can
check it with nothing but the file and ``cryptography``: ``airside receipt verify FILE
--key FINGERPRINT``. Without ``--key`` a valid signature only shows that whoever holds the
embedded key signed it; pinning the installation's fingerprint (``airside audit
checkpoint`` prints it) shows that the installation did.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm

from airside.errors import AirsideError
from airside.governance import signing
from airside.governance.signing import Signer

VERSION = "airside-receipt/v1"
DOMAIN = b"airside-receipt/v1\n"
# Fields the installation adds around the content; the digest covers everything else.
SEAL_FIELDS = ("receipt", "audit_seq", "key_fingerprint", "public_key", "signature")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT = re.compile(rf"[0-9a-f]{{{signing.FINGERPRINT_CHARS}}}")


class ReceiptError(AirsideError):
    """A receipt that does not verify; ``code`` says why (see ``verify``)."""

    code = "bad_receipt"


def canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(content: dict[str, Any]) -> str:
    """The receipt's own digest: SHA-256 of its content's canonical JSON (hex)."""
    return hashlib.sha256(canonical(content)).hexdigest()


def content_of(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in SEAL_FIELDS}


def message(doc: dict[str, Any]) -> bytes:
    """The bytes the installation signs: the domain prefix, then every field but the
    signature as canonical JSON."""
    return DOMAIN + canonical({k: v for k, v in doc.items() if k != "signature"})


def sign(doc: dict[str, Any], signer: Signer) -> dict[str, Any]:
    """``doc`` (content, ``receipt`` and ``audit_seq``) with the key and its signature."""
    out = {**doc, "key_fingerprint": signer.fingerprint, "public_key": signer.public_pem}
    out.pop("signature", None)
    out["signature"] = signer.sign(message(out))
    return out


@dataclass(frozen=True)
class Verified:
    """What a receipt that verified says."""

    key_fingerprint: str
    receipt: str
    audit_seq: int
    content: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "key_fingerprint": self.key_fingerprint,
            "receipt": self.receipt,
            "audit_seq": self.audit_seq,
            **{k: self.content[k] for k in ("kind", "subject", "erased_at") if k in self.content},
        }


def verify(doc: object, key: str | None = None) -> Verified:
    """Check a receipt offline; raises ``ReceiptError`` with the first problem's code:

    ``bad_receipt`` (not a receipt: not an object, a field missing or malformed),
    ``bad_key`` (the embedded public key is not an Ed25519 PEM key), ``key_mismatch``
    (``key_fingerprint`` is not the embedded key's), ``untrusted_key`` (the key is not
    ``key``, a pinned fingerprint), ``bad_signature`` (the signature does not verify over
    the receipt as it is: a field was changed, added or removed, or another key signed),
    ``digest_mismatch`` (``receipt`` is not the digest of the content)."""
    if not isinstance(doc, dict):
        raise ReceiptError("a receipt is a JSON object")
    if doc.get("version") != VERSION:
        raise ReceiptError(f"not an {VERSION} receipt (version {doc.get('version')!r})")
    for name in SEAL_FIELDS:
        if name not in doc:
            raise ReceiptError(f"the receipt has no {name!r}")
    sig, pem, fp = doc["signature"], doc["public_key"], doc["key_fingerprint"]
    if not isinstance(sig, str) or not re.fullmatch(r"[0-9a-f]{128}", sig):
        raise ReceiptError("'signature' must be 128 hex characters")
    if not isinstance(doc["receipt"], str) or not _HEX64.fullmatch(doc["receipt"]):
        raise ReceiptError("'receipt' must be 64 hex characters")
    if not isinstance(doc["audit_seq"], int) or isinstance(doc["audit_seq"], bool):
        raise ReceiptError("'audit_seq' must be an integer")
    if not isinstance(pem, str) or not isinstance(fp, str):
        raise ReceiptError("'public_key' and 'key_fingerprint' must be text")
    try:
        actual = signing.public_key_fingerprint(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ReceiptError(f"the embedded public key is unusable: {e}", code="bad_key") from None
    if fp != actual:
        raise ReceiptError(
            f"key_fingerprint {fp!r} is not the embedded key's ({actual})", code="key_mismatch"
        )
    if key is not None and actual != key.strip().lower():
        raise ReceiptError(f"signed by key {actual}, not by {key.strip()!r}", code="untrusted_key")
    if not signing.verify_signature(pem, sig, message(doc)):
        raise ReceiptError(
            "the signature does not verify: the receipt was changed after it was signed",
            code="bad_signature",
        )
    content = content_of(doc)
    if digest(content) != doc["receipt"]:
        raise ReceiptError(
            "'receipt' is not the SHA-256 of the receipt's content", code="digest_mismatch"
        )
    return Verified(actual, doc["receipt"], doc["audit_seq"], content)


def valid_fingerprint(key: str) -> bool:
    return bool(_FINGERPRINT.fullmatch(key.strip().lower()))
