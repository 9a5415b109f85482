"""The service context: settings, database, models and per-gallery indexes, loaded once."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from airside.biometrics.calibration import CalibrationTable, load_calibration
from airside.biometrics.index import GalleryIndex
from airside.config import Settings
from airside.errors import AirsideError, NotFoundError
from airside.governance import audit, pseudonyms, registry_seal
from airside.governance.gallery_transform import GalleryTransform
from airside.governance.principals import Principal
from airside.governance.registry_seal import RegistrySeal
from airside.governance.secret_files import write_secret
from airside.governance.signing import Signer, default_key_path
from airside.governance.template_protection import StoredTemplate, TemplateProtector
from airside.governance.witness import Witness, default_witness_path
from airside.private_files import prepare_data_dir
from airside.store.db import Database
from airside.store.tables import Gallery, Template
from airside.vision.analyzer import FaceAnalyzer
from airside.vision.contract import EmbeddingContract

if TYPE_CHECKING:
    from airside.services.gallery_view import GalleryView

log = logging.getLogger(__name__)
# The key of the audit log's probe-image digests (see ``Airside.probe_digest``).
PROBE_DIGEST_KEY_FILE = "keys/probe_digest.key"
# The key that seals the principal registry (see ``Airside.registry_seal``).
REGISTRY_KEY_FILE = "keys/registry.key"


class Airside:
    """Owns the long-lived parts; services are functions that take it and a principal."""

    def __init__(
        self,
        settings: Settings | None = None,
        analyzer_factory: Callable[[Settings], FaceAnalyzer] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        prepare_data_dir(self.settings.data_dir, self.settings.db_url)  # 0700; database 0600
        self.db = Database(self.settings.db_url)
        self._analyzer_factory = analyzer_factory
        self._analyzer: FaceAnalyzer | None = None
        self._indexes: dict[int, GalleryIndex] = {}
        self._lock = threading.RLock()
        self._signer: Signer | None = None
        self._protector: TemplateProtector | None = None
        self._keys: dict[str, bytes] = {}
        self._seal: RegistrySeal | None = None
        # The transform each in-memory index was built in (probes must go through it too).
        self._index_transforms: dict[int, GalleryTransform] = {}
        self._witness: Witness | None = None
        self._adoption_checked = False

    @property
    def analyzer(self) -> FaceAnalyzer:
        with self._lock:
            if self._analyzer is None:
                if self._analyzer_factory is not None:
                    self._analyzer = self._analyzer_factory(self.settings)
                else:
                    from airside.vision.factory import default_analyzer

                    self._analyzer = default_analyzer(self.settings)
            return self._analyzer

    @property
    def analyzer_loaded(self) -> bool:
        """Whether the models are loaded (a server is ready only then)."""
        return self._analyzer is not None

    def calibration(self, contract: EmbeddingContract) -> CalibrationTable:
        """The FMR -> threshold table decisions use (re-read when an administrator fits a
        new one, as the fair calibration is)."""
        return load_calibration(contract, self.settings.data_dir)

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A unit of work: one transaction, committed when the block ends.

        Every audit record it appends is signed with the installation's key. Before it
        commits, the chain gets a signed checkpoint when the head has moved
        ``audit_checkpoint_every`` records past the last one; after it commits, the newest
        signed head goes to the witness outside the database."""
        signer = self.signer
        with self.db.session(readonly=readonly) as s:
            s.info[registry_seal.SESSION_KEY] = self.registry_seal
            s.info[audit.SIGNER] = signer
            if not readonly:
                self._adopt_unsigned(s, signer)
            yield s
            if s.info.pop(audit.APPENDED, False):
                audit.maybe_checkpoint(s, signer, self.settings.audit_checkpoint_every)
        head = s.info.pop(audit.SIGNED_HEAD, None)
        if head is not None:
            self.witness.record(head)

    def _adopt_unsigned(self, session: Session, signer: Signer) -> None:
        """Once per process: a log written before records were signed is signed now, if
        it verifies and no signed head was ever witnessed (docs/audit.md)."""
        if self._adoption_checked:
            return
        audit.adopt_unsigned(session, signer, witnessed=self.witness.exists())
        self._adoption_checked = True

    @property
    def witness(self) -> Witness:
        with self._lock:
            if self._witness is None:
                self._witness = Witness(
                    default_witness_path(self.settings.data_dir),
                    self.settings.audit_witness_syslog,
                )
            return self._witness

    @property
    def signer(self) -> Signer:
        with self._lock:
            if self._signer is None:
                self._signer = Signer.load_or_create(default_key_path(self.settings.data_dir))
            return self._signer

    def probe_digest(self, image_sha256: str) -> str:
        """What the audit log and review cases record for a search's input image: an HMAC
        under this installation's digest key, not the raw SHA-256. A raw hash would let
        anyone holding a photo prove it was searched; the keyed one needs the key (kept
        0600 beside the signing key), which an investigator with a warrant can be given."""
        return hmac.new(self._digest_key(), image_sha256.encode(), hashlib.sha256).hexdigest()

    def _digest_key(self) -> bytes:
        return self._installation_key(PROBE_DIGEST_KEY_FILE)

    @property
    def registry_seal(self) -> RegistrySeal:
        """Seals principal and API key rows (governance/registry_seal.py)."""
        with self._lock:
            if self._seal is None:
                self._seal = RegistrySeal(self._installation_key(REGISTRY_KEY_FILE))
            return self._seal

    def _installation_key(self, name: str) -> bytes:
        """A 32-byte secret of this installation, created 0600 on first use."""
        with self._lock:
            key = self._keys.get(name)
            if key is None:
                path = self.settings.data_dir / name
                if not path.exists():
                    write_secret(path, secrets.token_bytes(32), exclusive=True)
                key = path.read_bytes()
                if len(key) != 32:
                    raise AirsideError(
                        f"{path} is not a 32-byte key; restore it from backup",
                        code="bad_installation_key",
                    )
                self._keys[name] = key
            return key

    @property
    def template_protector(self) -> TemplateProtector:
        """Template keys and per-gallery transforms (docs/template_protection.md)."""
        with self._lock:
            if self._protector is None:
                self._protector = TemplateProtector(self.settings)
            return self._protector

    def index(self, session: Session, gallery: GalleryView) -> GalleryIndex:
        """The gallery's in-memory matrix, in step with the store.

        Loaded on first use; afterwards a one-row read of the gallery's revision tells
        whether another transaction (in this process or another) changed its templates.
        Then only newer templates are fetched, unless some were removed or the gallery was
        re-keyed (full reload). The matrix holds the templates as stored: in the gallery's
        transform (``index_with_transform`` gives it, for probes).
        """
        return self.index_with_transform(session, gallery)[0]

    def index_with_transform(
        self, session: Session, gallery: GalleryView
    ) -> tuple[GalleryIndex, GalleryTransform]:
        """The index and the transform its vectors are in: search with ``tf.forward(q)``."""
        row = session.execute(
            select(Gallery.revision, Gallery.transform_seed, Gallery.transform_key_id).where(
                Gallery.id == gallery.id
            )
        ).first()
        if row is None:
            raise NotFoundError(f"gallery {gallery.name!r} no longer exists")
        revision, seed_blob, seed_key_id = row
        with self._lock:
            ix = self._indexes.get(gallery.id)
            tf_ix = self._index_transforms.get(gallery.id)
            if ix is not None and tf_ix is not None and ix.revision == revision:
                return ix, tf_ix
            contract = EmbeddingContract.from_json(gallery.contract_json)
            tf = self.template_protector.transform(gallery.id, seed_blob, seed_key_id, contract.dim)
            if ix is not None and tf_ix is not None and tf_ix.tag == tf.tag:
                self._load(session, gallery, ix, contract.dim, newer_than=ix.max_id)
                total = session.scalar(
                    select(func.count())
                    .select_from(Template)
                    .where(Template.gallery_id == gallery.id)
                )
                if total == len(ix):
                    ix.revision = revision
                    return ix, tf
            ix = GalleryIndex(contract.dim, self.settings.index_dtype)
            self._load(session, gallery, ix, contract.dim, newer_than=0)
            ix.revision = revision
            self._indexes[gallery.id] = ix
            self._index_transforms[gallery.id] = tf
            return ix, tf

    def _load(
        self, session: Session, gallery: GalleryView, ix: GalleryIndex, dim: int, newer_than: int
    ) -> None:
        rows = [
            StoredTemplate(*r)
            for r in session.execute(
                select(*StoredTemplate.columns()).where(
                    Template.gallery_id == gallery.id, Template.id > newer_than
                )
            )
        ]
        if rows:
            ids = np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows))
            vecs = self.template_protector.decode(rows, dim, gallery.name)
            ix.add(ids, vecs)

    def forget_index(self, gallery_id: int) -> None:
        with self._lock:
            self._indexes.pop(gallery_id, None)
            self._index_transforms.pop(gallery_id, None)

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
        about: str | None = None,
    ) -> None:
        """Refusals are logged in their own transaction, since the refused effect rolls back.
        ``about``: the subject reference the request named; the record names that subject by
        pseudonym (``subject``), or not at all when the reference is not a subject, and the
        error's message is scrubbed of the reference."""
        with self.session() as s:
            if about is not None:
                ps = pseudonyms.of_reference(s, about)
                error = pseudonyms.redact(error, about, ps)
                extra = {**(extra or {}), **({"subject": ps} if ps is not None else {})}
            audit.append(
                s,
                principal,
                action,
                decision=f"refused:{error.code}",
                purpose=purpose,
                gallery=gallery,
                input_digest=input_digest,
                result={"error": str(error), **(extra or {})},
            )

    def close(self) -> None:
        if self._witness is not None:
            self._witness.close()
        self.db.dispose()
