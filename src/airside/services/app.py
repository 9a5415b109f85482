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
from airside.biometrics.index import GalleryIndex, HnswIndex, PqIndex, exact_index, kind_of
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
from airside.store.tables import Gallery, Template, TemplateRemoval
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
        """The index and the transform its vectors are in: search with ``tf.forward(q)``.

        In step with the store: removals journalled since the index's revision are
        replayed, newer templates added, and a count that still disagrees (a row deleted
        behind the services' back) is reconciled id by id. Nothing is rebuilt unless the
        gallery was re-keyed or changes kind (``auto`` crossing ``ann_from``). A Milvus
        collection outlives the process: a new process reconciles it instead of
        re-uploading it. Call it in a writing unit of work for Milvus galleries: writers
        are serialised (store/db.py), so no removal can commit between the read of the
        store and the write to the shared collection."""
        row = session.execute(
            select(
                Gallery.revision,
                Gallery.transform_seed,
                Gallery.transform_key_id,
                Gallery.index_kind,
            ).where(Gallery.id == gallery.id)
        ).first()
        if row is None:
            raise NotFoundError(f"gallery {gallery.name!r} no longer exists")
        revision, seed_blob, seed_key_id, chosen_kind = row
        with self._lock:
            ix = self._indexes.get(gallery.id)
            tf_ix = self._index_transforms.get(gallery.id)
            if ix is not None and tf_ix is not None and ix.revision == revision:
                return ix, tf_ix
            contract = EmbeddingContract.from_json(gallery.contract_json)
            tf = self.template_protector.transform(gallery.id, seed_blob, seed_key_id, contract.dim)
            total = int(
                session.scalar(
                    select(func.count())
                    .select_from(Template)
                    .where(Template.gallery_id == gallery.id)
                )
                or 0
            )
            kind = self._index_kind(chosen_kind, total, ix, contract)
            if ix is not None and tf_ix is not None and tf_ix.tag == tf.tag and kind_of(ix) == kind:
                self._catch_up(session, gallery, ix, contract.dim, revision, total)
            else:
                ix = self._new_index(kind, gallery.id, tf, contract.dim)
                if kind == "milvus":
                    self._reconcile(session, gallery, ix, contract.dim)
                    self._drop_other_collections(gallery.id, ix)
                else:
                    self._load(session, gallery, ix, contract.dim, newer_than=0)
                    if self._milvus_in_use():  # left Milvus: no stale copy stays there
                        self._drop_other_collections(gallery.id, ix)
            ix.revision = revision
            self._indexes[gallery.id] = ix
            self._index_transforms[gallery.id] = tf
            return ix, tf

    def index_after_commit(self, session: Session, gallery: GalleryView) -> None:
        """Bring the gallery's index up to what was just committed. The store is the truth
        and the commit stands: a Milvus that does not answer now is caught up later (the
        next search, or ``sync_shared_indexes`` on the purge scheduler's next tick); a
        removed template cannot match meanwhile, since a hit is only a match through its
        row in the store."""
        try:
            self.index_with_transform(session, gallery)
        except AirsideError as e:
            if e.code != "index_unavailable":
                raise
            log.warning("gallery %s: index not brought up to date now: %s", gallery.id, e)

    def sync_shared_indexes(self) -> int:
        """Bring every Milvus-backed gallery's collection up to the store (journalled
        removals first); returns how many galleries were checked. Run by the purge
        scheduler, so removals reach Milvus even where nobody searches."""
        from airside.services.gallery_view import view_of

        checked = 0
        with self.session() as s:  # writing: the collection is written under the lock
            for row in s.scalars(select(Gallery).order_by(Gallery.id)):
                if (row.index_kind or self.settings.index) != "milvus":
                    continue
                self.index_with_transform(s, view_of(row))
                checked += 1
        return checked

    def _index_kind(
        self,
        chosen: str | None,
        templates: int,
        current: GalleryIndex | None,
        contract: EmbeddingContract,
    ) -> str:
        """The gallery's own choice, else the setting; ``auto`` is exact below ``ann_from``
        templates and PQ with exact re-scoring from there (back to exact only below half of
        it, so a gallery hovering at the line is not rebuilt back and forth). Not HNSW:
        measured on face embeddings, a graph loses the mate at a million (docs/scale.md)."""
        kind = chosen or self.settings.index
        if kind != "auto":
            return kind
        if contract.model_id.startswith("dlib"):
            # dlib's scores crowd into a narrow band (impostors 0.85 +- 0.03): 4-bit codes
            # lost 5 points of rank-1 at 1M (docs/scale.md), so its galleries stay exact.
            return "exact"
        line = self.settings.ann_from
        if current is not None and kind_of(current) == "pq":
            return "pq" if templates >= line // 2 else "exact"
        return "pq" if templates >= line else "exact"

    def _new_index(
        self, kind: str, gallery_id: int, tf: GalleryTransform, dim: int
    ) -> GalleryIndex:
        if kind == "exact":
            return exact_index(dim, self.settings.index_dtype)
        if kind == "pq":
            return PqIndex(dim)
        if kind == "hnsw":
            return HnswIndex(dim)
        if kind == "milvus":
            from airside.biometrics import milvus_index

            return milvus_index.MilvusIndex(
                self.milvus_client(), self.milvus_collection(gallery_id, tf), dim
            )
        raise ValueError(f"unknown index kind {kind!r}")

    def milvus_client(self) -> Any:
        """The Milvus this installation keeps vectors in: ``milvus_uri``, or a milvus-lite
        file in the data directory (one machine, and the tests)."""
        from airside.biometrics import milvus_index

        s = self.settings
        uri = s.milvus_uri or str(s.data_dir / "milvus" / "milvus.db")
        token = s.milvus_token.get_secret_value() if s.milvus_token is not None else None
        return milvus_index.connect(uri, token)

    def milvus_collection(self, gallery_id: int, tf: GalleryTransform) -> str:
        """``<prefix>_g<id>_<tag>``: a re-keyed gallery gets a new collection (its vectors
        are in the new transform), and the old one is dropped once the new one is full."""
        return f"{self._milvus_gallery_prefix(gallery_id)}{tf.tag[:16] if tf.tag else 'plain'}"

    def _milvus_in_use(self) -> bool:
        s = self.settings
        return bool(s.milvus_uri) or (s.data_dir / "milvus" / "milvus.db").exists()

    def _milvus_gallery_prefix(self, gallery_id: int) -> str:
        return f"{self.settings.milvus_prefix}_g{gallery_id}_"

    def _drop_other_collections(self, gallery_id: int, keep: GalleryIndex) -> None:
        from airside.biometrics import milvus_index

        client = self.milvus_client()
        keep_name = getattr(keep, "collection", None)
        for name in milvus_index.collections_with_prefix(
            client, self._milvus_gallery_prefix(gallery_id)
        ):
            if name != keep_name:
                client.drop_collection(name)

    def _catch_up(
        self,
        session: Session,
        gallery: GalleryView,
        ix: GalleryIndex,
        dim: int,
        revision: int,
        total: int,
    ) -> None:
        removed = list(
            session.scalars(
                select(TemplateRemoval.template_id).where(
                    TemplateRemoval.gallery_id == gallery.id,
                    TemplateRemoval.revision > ix.revision,
                    TemplateRemoval.revision <= revision,
                )
            )
        )
        newer_than = ix.max_id
        if removed:
            ix.remove(removed)
            # SQLite may hand a removed highest id to the next template: fetch from there.
            newer_than = min(newer_than, min(removed) - 1)
        self._load(session, gallery, ix, dim, newer_than=newer_than)
        if len(ix) != total:
            log.warning(
                "the index of gallery %s disagreed with the store (%d vs %d templates): "
                "reconciling it template by template",
                gallery.id,
                len(ix),
                total,
            )
            self._reconcile(session, gallery, ix, dim)

    def _reconcile(
        self, session: Session, gallery: GalleryView, ix: GalleryIndex, dim: int
    ) -> None:
        """Make the index hold exactly the gallery's templates, id by id (for an index
        that outlived this process, or one a writer with database access went around)."""
        stored = np.fromiter(
            session.scalars(select(Template.id).where(Template.gallery_id == gallery.id)),
            dtype=np.int64,
        )
        held = ix.ids()
        extra = np.setdiff1d(held, stored)
        if extra.size:
            ix.remove(extra)
        missing = np.setdiff1d(stored, held)
        for start in range(0, missing.size, 10_000):
            self._load(session, gallery, ix, dim, only=missing[start : start + 10_000])
        if stored.size:
            ix.max_id = max(ix.max_id, int(stored.max()))

    def _load(
        self,
        session: Session,
        gallery: GalleryView,
        ix: GalleryIndex,
        dim: int,
        newer_than: int = 0,
        only: np.ndarray | None = None,
    ) -> None:
        where = [Template.gallery_id == gallery.id]
        if only is not None:
            where.append(Template.id.in_([int(i) for i in only]))
        else:
            where.append(Template.id > newer_than)
        rows = [
            StoredTemplate(*r)
            for r in session.execute(select(*StoredTemplate.columns()).where(*where))
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
            with self._lock:
                loaded = self._indexes.get(gallery_id)
            shared = loaded is not None and kind_of(loaded) == "milvus"
            # A shared collection is written under the writers' lock (index_with_transform).
            with self.session(readonly=not shared) as s:
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
