"""Template protection: templates encrypted at rest, plus a keyed per-gallery transform.

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

import contextlib
import hashlib
import json
import logging
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from airside.biometrics.contract import EmbeddingContract
from airside.config import Settings
from airside.errors import AirsideError, NotFoundError
from airside.governance import access, audit
from airside.governance.principals import Principal
from airside.governance.secret_files import write_secret
from airside.store.tables import Event, Gallery, Template

log = logging.getLogger(__name__)

KEYRING_FILE = Path("keys") / "templates.keyring"
ENV_VAR = "AIRSIDE_TEMPLATE_KEY"
KEY_BYTES = 32
NONCE_BYTES = 12
SEED_BYTES = 32
_TAG_BYTES = 16
_KEYRING_VERSION = 1


class TemplateKeyError(AirsideError):
    """A template (or a gallery's transform seed) cannot be read or written: its key is
    missing or wrong, or no key is configured. Nothing was changed."""

    code = "template_key"


# ---------------------------------------------------------------------------------------------
# keys


def key_id_of(key: bytes) -> str:
    """A key's name: ``k`` + 16 hex characters of a domain-separated SHA-256 of its bytes."""
    return "k" + hashlib.sha256(b"airside/template-key-id/v1\x00" + key).hexdigest()[:16]


def default_keyring_path(settings: Settings) -> Path:
    return settings.template_keyring or settings.data_dir / KEYRING_FILE


def parse_hex_keys(text: str) -> list[bytes]:
    """Keys written as 64 hex characters each, comma-separated (the first one is active)."""
    keys = []
    for part in text.split(","):
        part = part.strip()
        try:
            key = bytes.fromhex(part)
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise ValueError(
                f"a template key must be {2 * KEY_BYTES} hex characters ({KEY_BYTES} bytes); "
                "give several separated by commas"
            )
        keys.append(key)
    return keys


@dataclass(frozen=True)
class KeyRing:
    """The keys this installation holds; ``active`` seals new data."""

    keys: dict[str, bytes]
    active: str | None
    source: str  # said in error messages: where keys come from
    path: Path | None = None  # the file, when keys come from one (None: the environment)

    @property
    def writable(self) -> bool:
        return self.path is not None

    @classmethod
    def empty(cls, path: Path) -> KeyRing:
        return cls({}, None, f"the key ring {path} (which does not exist)", path)

    @classmethod
    def from_keys(cls, keys: Sequence[bytes], source: str, path: Path | None) -> KeyRing:
        ring = {key_id_of(k): k for k in keys}
        return cls(ring, key_id_of(keys[0]) if keys else None, source, path)

    def with_new_key(self, *, activate: bool = True) -> KeyRing:
        """This ring plus a fresh key (made active, or staged beside the active one)."""
        key = secrets.token_bytes(KEY_BYTES)
        kid = key_id_of(key)
        active = kid if activate or self.active is None else self.active
        return KeyRing({**self.keys, kid: key}, active, self._file_source(), self.path)

    def activate(self, key_id: str) -> KeyRing:
        assert key_id in self.keys
        return KeyRing(self.keys, key_id, self.source, self.path)

    def only_active(self) -> KeyRing:
        assert self.active is not None
        return KeyRing({self.active: self.keys[self.active]}, self.active, self.source, self.path)

    def _file_source(self) -> str:
        return f"the key ring {self.path}" if self.path else self.source

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": _KEYRING_VERSION,
                "active": self.active,
                "keys": {kid: key.hex() for kid, key in sorted(self.keys.items())},
            },
            indent=2,
        )


def read_keyring(path: Path) -> KeyRing:
    """The key ring in ``path``; an empty ring when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return KeyRing.empty(path)
    except OSError as e:
        raise TemplateKeyError(f"cannot read the template key ring {path}: {e}") from None
    mode = stat.S_IMODE(path.stat().st_mode)
    if os.name == "posix" and mode & 0o077:
        log.warning(
            "template key ring %s is readable by others (mode %o); it should be 0600", path, mode
        )
    try:
        data = json.loads(text)
        if data.get("version") != _KEYRING_VERSION:
            raise ValueError(f"unknown version {data.get('version')!r}")
        keys: dict[str, bytes] = {}
        for kid, hexkey in data["keys"].items():
            key = bytes.fromhex(hexkey)
            if len(key) != KEY_BYTES or key_id_of(key) != kid:
                raise ValueError(f"key {kid!r} is malformed or does not match its id")
            keys[kid] = key
        active = data["active"]
        if active not in keys:
            raise ValueError(f"the active key {active!r} is not in the ring")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise TemplateKeyError(f"the template key ring {path} is damaged: {e}") from None
    return KeyRing(keys, active, f"the key ring {path}", path)


def write_keyring(ring: KeyRing, *, exclusive: bool = False) -> None:
    """Write ``ring`` to its file atomically, 0600 in a 0700 directory.

    ``exclusive``: only if no file exists yet (two processes creating the first key at
    once end up sharing one; neither silently replaces the other's)."""
    path = ring.path
    assert path is not None
    write_secret(path, ring.to_json().encode("utf-8"), exclusive=exclusive)


@contextmanager
def keyring_lock(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the key ring file between processes."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name != "posix":
        yield
        return
    import fcntl

    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells a changed key ring file from the one read before (cheap: one stat)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


# ---------------------------------------------------------------------------------------------
# the per-gallery orthogonal transform


def orthogonal_matrix(seed: bytes, dim: int) -> np.ndarray:
    """The ``dim`` x ``dim`` orthogonal matrix of ``seed`` (float64), Haar-distributed.

    A Gaussian matrix is drawn from SHAKE-256 of the seed (Box-Muller on 53-bit uniforms:
    fixed by the standard, not by NumPy's random streams, which may change between
    versions), then ``Q`` comes from its QR decomposition with the signs fixed so that
    ``R`` has a positive diagonal, which makes ``Q`` unique."""
    n = dim * dim
    pairs = (n + 1) // 2
    stream = hashlib.shake_256(b"airside/orthogonal/v1\x00" + dim.to_bytes(4, "big") + seed).digest(
        pairs * 16
    )
    words = np.frombuffer(stream, dtype=">u8").astype(np.uint64)
    u = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # in (0, 1)
    u1, u2 = u[0::2], u[1::2]
    r = np.sqrt(-2.0 * np.log(u1))
    gauss = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])[:n]
    q, rr = np.linalg.qr(gauss.reshape(dim, dim))
    signs = np.sign(np.diag(rr))
    signs[signs == 0] = 1.0
    return np.ascontiguousarray(q * signs)


@dataclass(frozen=True, eq=False)
class GalleryTransform:
    """``v -> Q v`` for one gallery (``q`` None: the identity, for unprotected galleries).
    ``tag`` names the transform (a digest of the seed) so that callers can tell whether an
    in-memory index was built with the gallery's current one."""

    q: np.ndarray | None = None
    tag: str | None = None

    @classmethod
    def from_seed(cls, seed: bytes, dim: int) -> GalleryTransform:
        tag = hashlib.sha256(b"airside/transform-tag/v1\x00" + seed).hexdigest()[:32]
        return cls(orthogonal_matrix(seed, dim), tag)

    @property
    def is_identity(self) -> bool:
        return self.q is None

    def forward(self, vectors: np.ndarray) -> np.ndarray:
        """Rows ``v`` to rows ``Q v`` (float32); computed in float64."""
        v = np.asarray(vectors)
        if self.q is None:
            return np.ascontiguousarray(v, dtype=np.float32)
        return np.ascontiguousarray(v.astype(np.float64) @ self.q.T, dtype=np.float32)

    def inverse(self, vectors: np.ndarray) -> np.ndarray:
        """Rows ``Q v`` back to rows ``v`` (float64, for re-keying)."""
        v = np.asarray(vectors, dtype=np.float64)
        return v if self.q is None else v @ self.q


IDENTITY = GalleryTransform()


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
    """What an event's sealed face crop is bound to: its event row (services/events.py)."""
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
        self._ring_stamp = _stamp(self.keyring_path)
        return read_keyring(self.keyring_path)

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
            self._ring_stamp = _stamp(ring.path)

    def ensure_ring(self) -> KeyRing:
        """The ring, with a first key created (in its file) when it has none."""
        ring = self.ring
        if ring.active is not None:
            return ring
        ring = self.reload()
        if ring.active is None:
            path = ring.path
            assert path is not None  # keys from the environment always include an active one
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
        if ring.path is not None and _stamp(ring.path) != self._ring_stamp:
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


# ---------------------------------------------------------------------------------------------
# key rotation and gallery re-keying (use-cases; the service context is passed in)


class ProtectedApp(Protocol):
    """What rotation and re-keying need from ``airside.services.app.Airside``."""

    @property
    def template_protector(self) -> TemplateProtector: ...

    def session(self) -> AbstractContextManager[Session]: ...

    def forget_index(self, gallery_id: int) -> None: ...

    def audit_refusal(
        self,
        principal: Principal,
        action: str,
        error: AirsideError,
        *,
        purpose: str | None = None,
        gallery: str | None = None,
        input_digest: str | list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None: ...


@dataclass
class RotationReport:
    key_id: str
    created: bool
    templates: int
    galleries: int
    previous: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    source: str = ""
    event_crops: int = 0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class RekeyReport:
    gallery: str
    templates: int
    key_id: str

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


_BATCH = 2000


def _reseal_templates(
    s: Session, prot: TemplateProtector, key: tuple[str, bytes], *, gallery_id: int | None = None
) -> int:
    """Re-encrypt (or, for plain rows, encrypt) templates under ``key``; vectors unchanged."""
    kid, k = key
    q = select(*StoredTemplate.columns()).where(
        (Template.key_id.is_(None)) | (Template.key_id != kid)
    )
    if gallery_id is not None:
        q = q.where(Template.gallery_id == gallery_id)
    done = 0
    last = 0
    while True:
        rows = [
            StoredTemplate(*r)
            for r in s.execute(q.where(Template.id > last).order_by(Template.id).limit(_BATCH))
        ]
        if not rows:
            return done
        updates = []
        for r in rows:
            raw = r.vector
            if r.key_id is not None:
                raw = prot.open(r.key_id, raw, r.aad(r.key_id), f"template {r.id}")
            updates.append(
                {"id": r.id, "vector": prot.seal(kid, k, raw, r.aad(kid)), "key_id": kid}
            )
        s.execute(update(Template), updates)
        done += len(rows)
        last = rows[-1].id


def _reseal_event_crops(s: Session, prot: TemplateProtector, key: tuple[str, bytes]) -> int:
    """Re-encrypt (or, for plain ones, encrypt) the face crops kept in events under ``key``."""
    kid, k = key
    q = select(Event.id, Event.evidence, Event.evidence_key_id).where(
        Event.evidence.is_not(None),
        (Event.evidence_key_id.is_(None)) | (Event.evidence_key_id != kid),
    )
    done = 0
    last = 0
    while True:
        rows = s.execute(q.where(Event.id > last).order_by(Event.id).limit(_BATCH)).all()
        if not rows:
            return done
        updates = []
        for eid, blob, old in rows:
            assert blob is not None
            raw = blob
            if old is not None:
                raw = prot.open(old, blob, event_crop_aad(eid, old), f"the crop of event {eid}")
            updates.append(
                {"id": eid, "evidence": prot.seal(kid, k, raw, event_crop_aad(eid, kid)),
                 "evidence_key_id": kid}
            )  # fmt: skip
        s.execute(update(Event), updates)
        done += len(rows)
        last = rows[-1][0]


def rotate_keys(
    app: ProtectedApp, principal: Principal, *, retire_old: bool = False
) -> RotationReport:
    """Seal every template and gallery seed under a new key, in one audited transaction.

    With the key ring file, a new key is added to it (and made active) before the
    transaction, so a crash never leaves rows under a key that is not on disk; the old
    keys stay until ``retire_old``, which removes them only after the re-encryption has
    committed and no row still names them. With ``AIRSIDE_TEMPLATE_KEY`` the ring cannot be
    written: everything is sealed under its first key (put the new key first, the old ones
    after it, run this, then drop the old ones from the variable). Plain (legacy) rows are
    encrypted too. Vectors and transforms do not change, so neither do scores."""
    prot = app.template_protector
    try:
        with app.session() as s:
            access.authorize(s, principal, "keys.rotate")
        return _rotate(app, prot, principal, retire_old)
    except AirsideError as e:
        app.audit_refusal(principal, "keys.rotate", e, extra={"retire_old": retire_old})
        raise


def _rotate(
    app: ProtectedApp, prot: TemplateProtector, principal: Principal, retire_old: bool
) -> RotationReport:
    ring = prot.reload()
    if not ring.writable and retire_old:
        raise TemplateKeyError(
            f"keys come from {ENV_VAR}, which airside cannot edit: remove the old keys from it "
            "yourself once this rotation has run (without --retire-old)"
        )
    lock: AbstractContextManager[None] = (
        keyring_lock(ring.path) if ring.path is not None else contextlib.nullcontext()
    )
    with lock:
        ring_path = ring.path
        if ring_path is not None:
            ring = read_keyring(ring_path)
        with app.session() as s:
            used = set(s.scalars(select(Template.key_id).distinct()).all())
            used |= set(s.scalars(select(Gallery.transform_key_id).distinct()).all())
            used |= set(s.scalars(select(Event.evidence_key_id).distinct()).all())
        used.discard(None)
        for kid in sorted(k for k in used if k is not None):
            if kid not in ring.keys:
                raise TemplateKeyError(
                    f"stored templates are encrypted under template key {kid}, which is not in "
                    f"{ring.source}; restore it before rotating. Nothing was changed"
                )
        old_ring = ring
        created = ring.writable
        if ring_path is not None and not ring.keys:
            # The first key: nothing is encrypted yet, so it is simply created and active.
            write_keyring(ring.with_new_key(), exclusive=True)
            ring = read_keyring(ring_path)
            new_id = ring.active
        elif created:
            # The new key is written to the ring before any row uses it, but only *staged*:
            # other processes (which re-read a changed ring) keep sealing under the old
            # active key until the re-encryption has committed.
            staged = ring.with_new_key(activate=False)
            new_id = next(k for k in staged.keys if k not in ring.keys)
            write_keyring(staged)
            ring = staged
        else:
            new_id = ring.active
        prot.set_ring(ring)
        assert new_id is not None
        key = (new_id, ring.keys[new_id])
        try:
            with app.session() as s:
                n_templates = _reseal_templates(s, prot, key)
                n_crops = _reseal_event_crops(s, prot, key)
                n_galleries = 0
                for g in s.scalars(
                    select(Gallery).where(
                        Gallery.transform_seed.is_not(None),
                        (Gallery.transform_key_id.is_(None)) | (Gallery.transform_key_id != key[0]),
                    )
                ).all():
                    assert g.transform_seed is not None and g.transform_key_id is not None
                    seed = prot.open(
                        g.transform_key_id,
                        g.transform_seed,
                        seed_aad(g.id, g.transform_key_id),
                        f"the transform seed of gallery {g.name!r}",
                    )
                    g.transform_seed = prot.seal_seed(g.id, seed, key)
                    g.transform_key_id = key[0]
                    n_galleries += 1
                previous = sorted(k for k in used if k is not None and k != key[0])
                audit.append(
                    s,
                    principal,
                    "keys.rotate",
                    decision="rotated",
                    result={
                        "key_id": key[0],
                        "created": created,
                        "templates": n_templates,
                        "galleries": n_galleries,
                        "event_crops": n_crops,
                        "previous": previous,
                    },
                )
        except BaseException:
            if created and old_ring.keys:  # no row uses the staged key: drop it again
                write_keyring(old_ring)
                prot.set_ring(old_ring)
            raise
        if ring.active != new_id:
            ring = ring.activate(new_id)
            write_keyring(ring)
            prot.set_ring(ring)
        report = RotationReport(
            key[0],
            created,
            n_templates,
            n_galleries,
            previous,
            source=ring.source,
            event_crops=n_crops,
        )
        if retire_old:
            report.retired = _retire(app, prot, principal, ring)
    return report


def _retire(
    app: ProtectedApp, prot: TemplateProtector, principal: Principal, ring: KeyRing
) -> list[str]:
    assert ring.active is not None
    active = ring.active
    with app.session() as s:
        left = s.scalar(
            select(func.count())
            .select_from(Template)
            .where((Template.key_id.is_(None)) | (Template.key_id != active))
        )
        left_g = s.scalar(
            select(func.count())
            .select_from(Gallery)
            .where(Gallery.transform_seed.is_not(None), Gallery.transform_key_id != active)
        )
        left_e = s.scalar(
            select(func.count())
            .select_from(Event)
            .where(
                Event.evidence.is_not(None),
                (Event.evidence_key_id.is_(None)) | (Event.evidence_key_id != active),
            )
        )
        if left or left_g or left_e:
            raise TemplateKeyError(
                f"{left} templates, {left_g} gallery seeds and {left_e} event crops were "
                "written under another key while rotating; run `airside keys rotate` again "
                "before retiring old keys"
            )
        retired = sorted(k for k in ring.keys if k != active)
        audit.append(
            s,
            principal,
            "keys.retire",
            decision="retired",
            result={"retired": retired, "key_id": active},
        )
        # The ring is rewritten inside the transaction: if the write fails, the audit record
        # rolls back with it; if the commit fails afterwards, no row needs the old keys.
        write_keyring(ring.only_active())
    prot.set_ring(ring.only_active())
    return retired


def rekey_gallery(app: ProtectedApp, principal: Principal, gallery_name: str) -> RekeyReport:
    """Give a gallery a new secret transform, in one audited transaction.

    Every template is decrypted, taken back through the old transform, through the new
    one, and sealed under the active key (created if none exists: re-keying asks for
    protection). Scores do not change; templates stored before can no longer be linked
    to the ones stored after. The gallery's revision is bumped so every process reloads."""
    prot = app.template_protector
    gallery_id: int | None = None
    purpose: str | None = None
    try:
        with app.session() as s:
            access.authorize(s, principal, "gallery.rekey")
            g = s.scalar(select(Gallery).where(Gallery.name == gallery_name).with_for_update())
            if g is None:
                raise NotFoundError(f"no gallery named {gallery_name!r}")
            gallery_id, purpose = g.id, g.purpose
            dim = EmbeddingContract.from_json(g.contract_json).dim
            old = prot.transform(g.id, g.transform_seed, g.transform_key_id, dim)
            key = prot.write_key(create=True)
            assert key is not None
            kid, k = key
            seed = secrets.token_bytes(SEED_BYTES)
            new = GalleryTransform.from_seed(seed, dim)
            n = 0
            last = 0
            q = select(*StoredTemplate.columns()).where(Template.gallery_id == g.id)
            while True:
                rows = [
                    StoredTemplate(*r)
                    for r in s.execute(
                        q.where(Template.id > last).order_by(Template.id).limit(_BATCH)
                    )
                ]
                if not rows:
                    break
                stored = prot.decode(rows, dim, gallery_name)
                fresh = new.forward(old.inverse(stored))
                s.execute(
                    update(Template),
                    [
                        {
                            "id": r.id,
                            "vector": prot.seal(kid, k, v.astype("<f4").tobytes(), r.aad(kid)),
                            "key_id": kid,
                        }
                        for r, v in zip(rows, fresh, strict=True)
                    ],
                )
                n += len(rows)
                last = rows[-1].id
            s.execute(
                update(Gallery)
                .where(Gallery.id == g.id)
                .values(
                    transform_seed=prot.seal_seed(g.id, seed, key),
                    transform_key_id=kid,
                    revision=Gallery.revision + 1,
                )
            )
            audit.append(
                s,
                principal,
                "gallery.rekey",
                decision="rekeyed",
                purpose=g.purpose,
                gallery=g.name,
                result={"templates": n, "key_id": kid},
            )
    except AirsideError as e:
        app.audit_refusal(principal, "gallery.rekey", e, purpose=purpose, gallery=gallery_name)
        raise
    finally:
        if gallery_id is not None:
            app.forget_index(gallery_id)
    return RekeyReport(gallery_name, n, kid)
