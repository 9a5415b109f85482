"""The installation's Ed25519 key for signing audit checkpoints.

The private key lives in one PEM file (PKCS#8, unencrypted), by default
``<data_dir>/keys/audit_ed25519.pem``, or a secrets directory's, or the environment's
(``key_source.py`` says which). In <data_dir>/keys it is created on first use with mode
0600 inside a 0700 directory, written to a temporary file and linked into place, so that a
crash never leaves half a key and two processes starting at once end up sharing one key
rather than one of them silently replacing the other's.

A key is named by its *fingerprint*: the SHA-256 of the 32 raw public-key bytes, in hex,
first 16 characters. Verifiers pin fingerprints, not files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from airside.errors import AirsideError
from airside.governance.key_source import SIGNING
from airside.governance.secret_files import write_secret

log = logging.getLogger(__name__)

KEY_FILE = Path("keys") / SIGNING.file
FINGERPRINT_CHARS = 16


class SigningKeyError(AirsideError):
    """The signing key file exists but cannot be used."""

    code = "bad_key"


def default_key_path(data_dir: Path) -> Path:
    """Where an installation keeps its audit signing key."""
    return data_dir / KEY_FILE


def fingerprint(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:FINGERPRINT_CHARS]


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo); ``ValueError`` otherwise."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def public_key_fingerprint(pem: str | bytes) -> str:
    return fingerprint(load_public_key(pem))


def verify_signature(public_pem: str | bytes, signature_hex: str, message: bytes) -> bool:
    """True when ``signature_hex`` is a valid Ed25519 signature of ``message`` by the key."""
    try:
        load_public_key(public_pem).verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


class Signer:
    """An Ed25519 private key with the bits of its public half the audit log records."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.fingerprint = fingerprint(self.public_key)
        self.public_pem = self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @classmethod
    def generate(cls) -> Signer:
        """A fresh in-memory key (tests, or a caller that stores the key itself)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, key_path: Path) -> Signer:
        """The key in ``key_path``, created there (0600, atomically) if it does not exist."""
        try:
            if not key_path.exists():
                _create_key_file(key_path)
            return cls._load(key_path)
        except OSError as e:
            raise SigningKeyError(f"cannot use the audit signing key {key_path}: {e}") from None

    @classmethod
    def _load(cls, key_path: Path) -> Signer:
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if os.name == "posix" and mode & 0o077:
            log.warning(
                "audit signing key %s is readable by others (mode %o); it should be 0600",
                key_path,
                mode,
            )
        return cls.from_material(key_path.read_bytes(), str(key_path))

    @classmethod
    def from_material(cls, data: bytes, where: str) -> Signer:
        """The key in ``data``: a PKCS#8 PEM, or its 32 raw bytes (from the environment).
        ``where`` names the source in errors; the key itself is never repeated."""
        try:
            if len(data) == 32:
                key: object = Ed25519PrivateKey.from_private_bytes(data)
            else:
                key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise SigningKeyError(
                f"cannot read the audit signing key from {where}: not a PEM private key"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{where} does not hold an Ed25519 private key")
        return cls(key)

    def private_pem(self) -> bytes:
        """The private key as PKCS#8 PEM: only for handing the key set to a secrets
        manager (``services/key_sets.py``); never logged."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, message: bytes) -> str:
        """The signature of ``message``, in hex (128 characters)."""
        return self._key.sign(message).hex()


def new_private_key_pem() -> bytes:
    """A fresh Ed25519 private key as PKCS#8 PEM (what the key file holds)."""
    return Signer.generate().private_pem()


def _create_key_file(key_path: Path) -> None:
    write_secret(key_path, new_private_key_pem(), exclusive=True)
