"""Template protection: templates sealed at rest (AES-256-GCM), and how a gallery's rows are
read and written through the key ring and the gallery's transform.

The key ring lives in ``template_keys.py``, the transform in ``gallery_transform.py``, and
rotation and re-keying (use-cases) in ``services/template_keys.py``.

Two layers (docs/template_protection.md):

1. **Encryption at rest.** A template row's ``vector`` holds ``nonce || AES-256-GCM(key,
   float32 bytes)`` with a fresh 12-byte nonce, and ``key_id`` names the key. The associated
   data binds the ciphertext to its row's gallery, subject, embedding contract and source
   digest, so a ciphertext copied onto another row (another subject, another gallery) does
   not decrypt. Rows with ``key_id`` NULL are plain float32 (databases from before
   protection, or an installation with no key): they are read as they are.
2. **A secret orthogonal transform per gallery.** Each gallery can hold a random 32-byte
   seed (encrypted under the key ring like a template). The seed determines an orthogonal
   matrix ``Q``; the gallery stores ``Q v`` instead of ``v`` and probes are multiplied by
   ``Q`` before the search. ``(Q p)·(Q v) = p·v``: scores are unchanged, while the same
   face enrolled in two galleries is stored as two unrelated vectors (cosine ~0), and a
   gallery can be re-keyed (a new ``Q``) without the source images.

Keys come from ``AIRSIDE_TEMPLATE_KEY`` (hex; several comma-separated, the first one is
used for new data) or else from the key ring file (JSON, 0600, written atomically), by
default ``<data_dir>/keys/templates.keyring``. A key is named by a digest of its bytes, so
a row names exactly the key that sealed it and a replaced key ring is recognised as such.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from airside.config import Settings
from airside.errors import AirsideError
from airside.governance.gallery_transform import IDENTITY, GalleryTransform
from airside.governance.key_source import TEMPLATES, KeySource, check_key_file, source_of
from airside.governance.template_keys import (
    ENV_VAR,
    KeyRing,
    TemplateKeyError,
    default_keyring_path,
    keyring_lock,
    keyring_stamp,
    parse_hex_keys,
    read_keyring,
    write_keyring,
)
from airside.store.tables import Gallery, Template

log = logging.getLogger(__name__)

NONCE_BYTES = 12
SEED_BYTES = 32
_TAG_BYTES = 16


# ---------------------------------------------------------------------------------------------
# sealing


def template_aad(
    gallery_id: int, subject_id: int, fingerprint: str, source_sha256: str, key_id: str
) -> bytes:
    """What a template's ciphertext is bound to (its row; the id is not known before insert)."""
    return json.dumps(
        ["airside/template/v1", gallery_id, subject_id, fingerprint, source_sha256, key_id]
    ).encode()


def seed_aad(gallery_id: int, key_id: str) -> bytes:
    return json.dumps(["airside/gallery-seed/v1", gallery_id, key_id]).encode()


def event_crop_aad(event_id: int, key_id: str) -> bytes:
    """What an event's sealed face crop is bound to: its event row (services/events/evidence.py)."""
    return json.dumps(["airside/event-crop/v1", event_id, key_id]).encode()


@dataclass(frozen=True)
class StoredTemplate:
    """The columns of a template row that reading its vector needs."""

    id: int
    gallery_id: int
    subject_id: int
    contract_fingerprint: str
    source_sha256: str
    vector: bytes
    key_id: str | None

    @staticmethod
    def columns() -> tuple[Any, ...]:
        return (
            Template.id,
            Template.gallery_id,
            Template.subject_id,
            Template.contract_fingerprint,
            Template.source_sha256,
            Template.vector,
            Template.key_id,
        )

    def aad(self, key_id: str) -> bytes:
        return template_aad(
            self.gallery_id, self.subject_id, self.contract_fingerprint, self.source_sha256, key_id
        )


@dataclass
class TemplateWriter:
    """Seals one gallery's new templates: transform, then encrypt (when a key is active)."""

    protector: TemplateProtector
    gallery_id: int
    transform: GalleryTransform
    key: tuple[str, bytes] | None

    def encode(
        self, vector: np.ndarray, *, subject_id: int, fingerprint: str, source_sha256: str
    ) -> tuple[bytes, str | None]:
        """(bytes for the ``vector`` column, ``key_id``) for one L2-normalised template."""
        raw = self.transform.forward(np.asarray(vector).reshape(1, -1))[0].astype("<f4").tobytes()
        if self.key is None:
            return raw, None
        kid, key = self.key
        aad = template_aad(self.gallery_id, subject_id, fingerprint, source_sha256, kid)
        return self.protector.seal(kid, key, raw, aad), kid


class TemplateProtector:
    """The installation's template keys and per-gallery transforms (one per ``Airside``).

    Keys are read on first use and cached; a key that a row names but the cache lacks
    makes it read the ring again once (another process may have rotated)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ring: KeyRing | None = None
        self._ring_stamp: tuple[int, int, int] | None = None
        self._aead: dict[str, AESGCM] = {}
        self._transforms: dict[tuple[bytes, int], GalleryTransform] = {}

    # -- keys ---------------------------------------------------------------------------------

    @property
    def keyring_path(self) -> Path:
        return default_keyring_path(self.settings)

    @property
    def source(self) -> KeySource:
        return source_of(self.settings, TEMPLATES)

    def _env_keys(self) -> list[bytes] | None:
        secret = self.settings.template_key
        text = secret.get_secret_value().strip() if secret is not None else ""
        if not text:
            return None
        try:
            return parse_hex_keys(text)
        except ValueError as e:
            raise TemplateKeyError(f"{ENV_VAR}: {e}") from None

    def _read_ring(self) -> KeyRing:
        env = self._env_keys()
        if env is not None:
            return KeyRing.from_keys(env, ENV_VAR, None)
        src = self.source
        self._ring_stamp = keyring_stamp(src.path)
        if src.path.exists():
            check_key_file(src.path)
        return read_keyring(src.path, read_only=not src.managed)

    @property
    def ring(self) -> KeyRing:
        if self._ring is None:
            self._ring = self._read_ring()
        return self._ring

    def reload(self) -> KeyRing:
        self._ring = self._read_ring()
        return self._ring

    def set_ring(self, ring: KeyRing) -> None:
        """Use ``ring`` (just written to its file, or from the environment)."""
        self._ring = ring
        if ring.path is not None:
            self._ring_stamp = keyring_stamp(ring.path)

    def ensure_ring(self) -> KeyRing:
        """The ring, with a first key created (in its file) when it has none."""
        ring = self.ring
        if ring.active is not None:
            return ring
        ring = self.reload()
        if ring.active is None:
            path = ring.path
            assert path is not None  # keys from the environment always include an active one
            if not ring.writable:  # a secrets directory's ring: never created by Airside
                raise self.source.missing()
            with keyring_lock(path):
                ring = read_keyring(path)
                if ring.active is None:
                    write_keyring(ring.with_new_key(), exclusive=True)
                    log.info("created the template key ring %s", path)
                ring = read_keyring(path)
            self.set_ring(ring)
        return ring

    def write_key(self, *, create: bool | None = None) -> tuple[str, bytes] | None:
        """The key that seals new templates, or None when protection is not in force
        (``template_protection="auto"`` and no key configured). ``create``: make the first
        key if there is none (default: when ``template_protection="on"``)."""
        if create is None:
            create = self.settings.template_protection == "on"
        ring = self.ring
        if ring.path is not None and keyring_stamp(ring.path) != self._ring_stamp:
            ring = self.reload()  # rotated by another process: seal under its new key
        if create:
            ring = self.ensure_ring()
        if ring.active is None:
            return None
        return ring.active, ring.keys[ring.active]

    def key(self, key_id: str, what: str) -> bytes:
        """The key named ``key_id``, or a clear refusal naming it and where keys come from."""
        key = self.ring.keys.get(key_id)
        if key is None:
            key = self.reload().keys.get(key_id)
        if key is None:
            raise TemplateKeyError(
                f"{what} is encrypted under template key {key_id}, which is not in "
                f"{self.ring.source}; restore the key ring that holds it (or set {ENV_VAR}). "
                "Nothing was changed"
            )
        return key

    def seal(self, key_id: str, key: bytes, plaintext: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aesgcm(key_id, key).encrypt(nonce, plaintext, aad)

    def open(self, key_id: str, blob: bytes, aad: bytes, what: str) -> bytes:
        key = self.key(key_id, what)
        try:
            if len(blob) < NONCE_BYTES + _TAG_BYTES:
                raise InvalidTag
            return self._aesgcm(key_id, key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise TemplateKeyError(
                f"template key {key_id} from {self.ring.source} cannot decrypt {what}: the key "
                "is wrong or the stored data was altered. Nothing was changed"
            ) from None

    def _aesgcm(self, key_id: str, key: bytes) -> AESGCM:
        aead = self._aead.get(key_id)
        if aead is None:
            aead = self._aead[key_id] = AESGCM(key)
        return aead

    # -- transforms ---------------------------------------------------------------------------

    def transform(
        self, gallery_id: int, seed_blob: bytes | None, seed_key_id: str | None, dim: int
    ) -> GalleryTransform:
        """The transform a gallery's stored seed describes (identity when it has none)."""
        if seed_blob is None:
            return IDENTITY
        if seed_key_id is None:
            raise TemplateKeyError(f"gallery {gallery_id}'s transform seed names no key")
        cached = self._transforms.get((seed_blob, dim))
        if cached is not None:
            return cached
        seed = self.open(
            seed_key_id,
            seed_blob,
            seed_aad(gallery_id, seed_key_id),
            "the gallery's transform seed",
        )
        tf = GalleryTransform.from_seed(seed, dim)
        if len(self._transforms) > 256:
            self._transforms.clear()
        self._transforms[(seed_blob, dim)] = tf
        return tf

    def gallery_transform(self, session: Session, gallery_id: int, dim: int) -> GalleryTransform:
        row = session.execute(
            select(Gallery.transform_seed, Gallery.transform_key_id).where(Gallery.id == gallery_id)
        ).one()
        return self.transform(gallery_id, row[0], row[1], dim)

    def seal_seed(self, gallery_id: int, seed: bytes, key: tuple[str, bytes]) -> bytes:
        kid, k = key
        return self.seal(kid, k, seed, seed_aad(gallery_id, kid))

    # -- reading and writing templates --------------------------------------------------------

    def decode(self, rows: Sequence[StoredTemplate], dim: int, gallery: str = "") -> np.ndarray:
        """The stored (transformed) vectors of ``rows`` as an (n, dim) float32 matrix."""
        if all(r.key_id is None for r in rows):
            blob = b"".join(r.vector for r in rows)
            if len(blob) != 4 * dim * len(rows):
                raise AirsideError(f"stored templates are not {dim}-dimensional", code="corrupt")
            return np.frombuffer(blob, dtype="<f4").reshape(len(rows), dim)
        out = np.empty((len(rows), dim), dtype=np.float32)
        where = f" of gallery {gallery!r}" if gallery else ""
        for i, r in enumerate(rows):
            raw = r.vector
            if r.key_id is not None:
                raw = self.open(r.key_id, raw, r.aad(r.key_id), f"template {r.id}{where}")
            if len(raw) != 4 * dim:
                raise AirsideError(f"template {r.id} is not {dim}-dimensional", code="corrupt")
            out[i] = np.frombuffer(raw, dtype="<f4")
        return out

    def require_keys_for(self, session: Session, gallery_id: int, gallery: str = "") -> None:
        """Refuse unless every key the gallery's templates name is available."""
        used = session.scalars(
            select(Template.key_id)
            .distinct()
            .where(Template.gallery_id == gallery_id, Template.key_id.is_not(None))
        ).all()
        where = f" of gallery {gallery!r}" if gallery else ""
        for kid in used:
            if kid is not None:
                self.key(kid, f"templates{where}")

    def writer(
        self, session: Session, gallery_id: int, dim: int, gallery: str = ""
    ) -> TemplateWriter:
        """How to store new templates in a gallery, inside ``session``'s transaction.

        With a key in force, an empty gallery without a transform gets a fresh secret seed
        here (in the same transaction as its first templates). A gallery that already holds
        unprotected templates keeps the identity transform until ``gallery rekey``."""
        # Locks the gallery row where the database can (not SQLite, which serialises
        # writers anyway), so a concurrent re-key cannot slip in between reading the
        # transform and storing templates in it.
        seed_blob, seed_kid = session.execute(
            select(Gallery.transform_seed, Gallery.transform_key_id)
            .where(Gallery.id == gallery_id)
            .with_for_update()
        ).one()
        key = self.write_key()
        if seed_blob is None and key is not None:
            n = session.scalar(
                select(func.count()).select_from(Template).where(Template.gallery_id == gallery_id)
            )
            if not n:
                blob = self.seal_seed(gallery_id, secrets.token_bytes(SEED_BYTES), key)
                session.execute(
                    update(Gallery)
                    .where(Gallery.id == gallery_id, Gallery.transform_seed.is_(None))
                    .values(transform_seed=blob, transform_key_id=key[0])
                )
                seed_blob, seed_kid = session.execute(
                    select(Gallery.transform_seed, Gallery.transform_key_id).where(
                        Gallery.id == gallery_id
                    )
                ).one()
        tf = self.transform(gallery_id, seed_blob, seed_kid, dim)
        self.require_keys_for(session, gallery_id, gallery)
        return TemplateWriter(self, gallery_id, tf, key)
