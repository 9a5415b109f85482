"""The service context: settings, database, models and per-gallery indexes, loaded once."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from airside.biometrics.calibration import CalibrationTable, load_calibration
from airside.biometrics.index import GalleryIndex
from airside.config import Settings
from airside.errors import AirsideError, ContractMismatchError, NotFoundError
from airside.governance import audit, key_source, pseudonyms, registry_seal
from airside.governance.gallery_transform import GalleryTransform
from airside.governance.key_source import PROBE_DIGEST, REGISTRY, SIGNING, KeySpec
from airside.governance.principals import Principal
from airside.governance.registry_seal import RegistrySeal
from airside.governance.signing import Signer, new_private_key_pem
from airside.governance.template_protection import StoredTemplate, TemplateProtector
from airside.governance.witness import Witness, default_witness_path
from airside.private_files import prepare_data_dir
from airside.store import notifications
from airside.store.db import Database
from airside.store.tables import Gallery, Template
from airside.vision.analyzer import FaceAnalyzer
from airside.vision.contract import EmbeddingContract

if TYPE_CHECKING:
    from airside.services.gallery_view import GalleryView

log = logging.getLogger(__name__)


class Airside:
    """Owns the long-lived parts; services are functions that take it and a principal."""

    def __init__(
        self,
        settings: Settings | None = None,
        analyzer_factory: Callable[[Settings], FaceAnalyzer] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        # Keys first: an insecure key file, or one missing from the secrets directory, is
        # refused before anything is created (governance/key_source.py).
        key_source.check_at_start(self.settings)
        prepare_data_dir(self.settings.data_dir, self.settings.db_url)  # 0700; database 0600
        self.db = Database(self.settings.db_url)
        self._analyzer_factory = analyzer_factory
        self._analyzer: FaceAnalyzer | None = None
        # Analyzers of other embedders, by name: galleries created with another embedder
        # (dlib's, the fused one) keep working (``analyzer_for``). Built under their own
        # lock: loading models takes seconds, and must not hold up searches meanwhile.
        self._other_analyzers: dict[str, FaceAnalyzer] = {}
        self._other_lock = threading.Lock()
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
        # Following other processes' writes (``follow_changes``; PostgreSQL only).
        self._changes: notifications.ChangeListener | None = None
        self._refresher: ThreadPoolExecutor | None = None
        self._refresh_pending: set[int] = set()
        self._event_followers: list[Callable[[int | None], None]] = []

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

    def analyzer_for(self, contract: EmbeddingContract | str) -> FaceAnalyzer:
        """The analyzer that makes templates of ``contract`` (a gallery's): the settings'
        own, or the same settings with the embedder the contract names (``dlib``, ``sface``,
        ``fused`` or a registered model), built once. A gallery made by an embedder this
        installation no longer has is refused (``contract_mismatch``) until migrated."""
        fingerprint = contract.fingerprint if isinstance(contract, EmbeddingContract) else contract
        default = self.analyzer
        if default.contract.fingerprint == fingerprint:
            return default
        name = _embedder_named_by(fingerprint)
        if name is not None and name != self.settings.embedder_model:
            try:
                other = self.analyzer_named(name)
            except NotFoundError as e:  # a registered model since removed
                raise ContractMismatchError(
                    f"templates of {fingerprint} were made by model {name!r}, which this "
                    f"installation no longer has ({e}): migrate the gallery to the "
                    "current model, or register that model again",
                    details={"next": "gallery.migrate"},
                ) from None
            if other.contract.fingerprint == fingerprint:
                return other
        raise ContractMismatchError(
            f"templates of {fingerprint} cannot be made with this installation's models "
            f"(embedder {self.settings.embedder_model!r} makes "
            f"{default.contract.fingerprint}): migrate the gallery to the current model, "
            "or restore the settings it was made with",
            details={"next": "gallery.migrate"},
        )

    def analyzer_named(self, embedder: str) -> FaceAnalyzer:
        """The analyzer of these settings with ``embedder`` (``sface``, ``dlib``, ``fused``
        or a registered model's name) as the embedder."""
        name = embedder.strip()
        name = name.lower() if name.lower() in ("dlib", "fused", "sface") else name
        if name == self.settings.embedder_model:
            return self.analyzer
        from airside.vision.factory import default_analyzer

        with self._other_lock:
            other = self._other_analyzers.get(name)
            if other is None:
                settings = self.settings.model_copy(update={"embedder_model": name})
                other = self._other_analyzers[name] = default_analyzer(settings)
            return other

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
                src = key_source.source_of(self.settings, SIGNING)
                self._signer = Signer.from_material(src.read(new_private_key_pem), src.describe())
            return self._signer

    def probe_digest(self, image_sha256: str) -> str:
        """What the audit log and review cases record for a search's input image: an HMAC
        under this installation's digest key, not the raw SHA-256. A raw hash would let
        anyone holding a photo prove it was searched; the keyed one needs the key (kept
        0600 beside the signing key), which an investigator with a warrant can be given."""
        return hmac.new(self._digest_key(), image_sha256.encode(), hashlib.sha256).hexdigest()

    def _digest_key(self) -> bytes:
        return self.installation_key(PROBE_DIGEST)

    @property
    def registry_seal(self) -> RegistrySeal:
        """Seals principal and API key rows (governance/registry_seal.py)."""
        with self._lock:
            if self._seal is None:
                self._seal = RegistrySeal(self.installation_key(REGISTRY))
            return self._seal

    def installation_key(self, spec: KeySpec) -> bytes:
        """A 32-byte secret of this installation (the registry or probe digest key), from
        where ``key_source`` says; created 0600 on first use in <data_dir>/keys only."""
        with self._lock:
            key = self._keys.get(spec.file)
            if key is None:
                src = key_source.source_of(self.settings, spec)
                key = src.read(lambda: secrets.token_bytes(32))
                if len(key) != 32:
                    raise AirsideError(
                        f"{src.describe()} is not a 32-byte key; restore it from backup",
                        code="bad_installation_key",
                    )
                self._keys[spec.file] = key
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

    def loaded_indexes(self) -> dict[int, int]:
        """Gallery id -> templates held in this process's memory (for metrics and tests)."""
        with self._lock:
            return {gallery_id: len(ix) for gallery_id, ix in self._indexes.items()}

    def follow_changes(self) -> notifications.ChangeListener | None:
        """Follow other processes' writes as they commit (PostgreSQL LISTEN/NOTIFY): an
        index this process has loaded is brought up to date in the background as soon as
        another process enrols into, erases from, purges or re-keys its gallery (so the
        next search does not pay for it), and event followers (``add_event_follower``)
        are told of every new event at once. Correctness never rests on it: a search
        checks the gallery's revision in its own transaction. None on SQLite."""
        if not notifications.supports_notifications(self.settings.db_url):
            return None
        with self._lock:
            if self._changes is None:
                self._refresher = ThreadPoolExecutor(1, thread_name_prefix="index-refresh")
                self._changes = notifications.ChangeListener(
                    self.settings.db_url, self._on_store_change
                ).start()
            return self._changes

    def add_event_follower(self, follower: Callable[[int | None], None]) -> None:
        """``follower(event_id)`` is called from the listener's thread when an event is
        recorded by any process (``None``: events may have been missed; read the store)."""
        self._event_followers.append(follower)

    def remove_event_follower(self, follower: Callable[[int | None], None]) -> None:
        if follower in self._event_followers:
            self._event_followers.remove(follower)

    def _on_store_change(self, channel: str, payload: str | None) -> None:
        if channel == notifications.EVENTS:
            event_id = int(payload) if payload is not None else None
            for follower in list(self._event_followers):
                follower(event_id)
        elif channel == notifications.GALLERIES:
            with self._lock:
                loaded = set(self._indexes)
            wanted = loaded if payload is None else {int(payload)} & loaded
            for gallery_id in wanted - self._refresh_pending:
                self._refresh_pending.add(gallery_id)
                assert self._refresher is not None
                self._refresher.submit(self._refresh_index, gallery_id)

    def _refresh_index(self, gallery_id: int) -> None:
        """Bring one loaded index up to the store's revision (on the refresher thread)."""
        from airside.services.gallery_view import view_of

        self._refresh_pending.discard(gallery_id)
        try:
            with self.session(readonly=True) as s:
                row = s.get(Gallery, gallery_id)
                if row is None:  # the gallery was deleted
                    self.forget_index(gallery_id)
                    return
                self.index_with_transform(s, view_of(row))
        except Exception:  # the next search will load it; say why it could not be done now
            log.exception("refreshing the index of gallery %s failed", gallery_id)

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

    def stop_following(self) -> None:
        with self._lock:
            changes, refresher = self._changes, self._refresher
            self._changes = self._refresher = None
        if changes is not None:
            changes.stop()
        if refresher is not None:
            refresher.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self.stop_following()
        if self._witness is not None:
            self._witness.close()
        self.db.dispose()


def _embedder_named_by(fingerprint: str) -> str | None:
    """The embedder setting that makes a contract's templates, read from its model id
    (``dlib-resnet@...``, ``fused:...``, ``FAMILY:NAME@...``); None when it names none."""
    model_id = fingerprint.split("@", 1)[0]
    if model_id == "dlib-resnet":
        return "dlib"
    if model_id.startswith("fused"):
        return "fused"
    if ":" in model_id:
        return model_id.split(":", 1)[1] or None
    return None
