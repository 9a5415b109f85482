"""SQLAlchemy models. Schema changes go through Alembic migrations in ``migrations/``."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Subject(Base):
    """A person known to the system by an operator-chosen reference (never a name required)."""

    __tablename__ = "subjects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    # Key for the subject's image digests in the audit log (HMAC). Erasing the subject
    # erases the key, so the append-only log can no longer be linked to their photos.
    audit_salt: Mapped[str] = mapped_column(
        String(64), nullable=False, default=lambda: secrets.token_hex(16)
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    legal_bases: Mapped[list[LegalBasis]] = relationship(
        back_populates="subject", cascade="all, delete-orphan"
    )
    templates: Mapped[list[Template]] = relationship(
        back_populates="subject", cascade="all, delete-orphan"
    )


class LegalBasis(Base):
    """A recorded consent or other lawful basis for processing a subject for one purpose."""

    __tablename__ = "legal_bases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), nullable=False, index=True
    )
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    purpose: Mapped[str] = mapped_column(String(200), nullable=False)
    reference: Mapped[str | None] = mapped_column(String(400))
    evidence_sha256: Mapped[str | None] = mapped_column(String(64))
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(String(200), nullable=False)

    subject: Mapped[Subject] = relationship(back_populates="legal_bases")


class Gallery(Base):
    """A purpose-bound set of templates, bound to exactly one embedding contract."""

    __tablename__ = "galleries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    purpose: Mapped[str] = mapped_column(String(200), nullable=False)
    contract_fingerprint: Mapped[str] = mapped_column(String(200), nullable=False)
    contract_json: Mapped[str] = mapped_column(Text, nullable=False)
    quality_bar: Mapped[float] = mapped_column(Float, nullable=False)
    fmr_target: Mapped[float] = mapped_column(Float, nullable=False)
    # Bumped in the same transaction as any change to the gallery's templates, so every
    # process can tell cheaply whether its in-memory index is behind the store.
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # Retention: templates older than ``retain_seconds`` are purged; after ``retain_until``
    # every template of the gallery is (e.g. a boarding gallery 12 h after departure).
    retain_seconds: Mapped[int | None] = mapped_column(Integer)
    retain_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Template protection (governance/template_protection.py): the secret seed of the
    # gallery's orthogonal transform, AES-GCM-sealed (nonce || ciphertext) under the key
    # ``transform_key_id``. NULL: no transform (the gallery's templates are stored as is).
    transform_seed: Mapped[bytes | None] = mapped_column(LargeBinary)
    transform_key_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Which index answers its searches ("exact", "hnsw", "milvus"; biometrics/index.py).
    # NULL: the installation's setting (AIRSIDE_INDEX, "auto" by size).
    index_kind: Mapped[str | None] = mapped_column(String(16))

    templates: Mapped[list[Template]] = relationship(
        back_populates="gallery", cascade="all, delete-orphan"
    )


class ErasureRequest(Base):
    """An erasure or withdrawal that was asked for and not yet carried out.

    Committed before the erasure's own transaction and deleted by it: a process killed in
    between leaves the request here, and the next start carries it out
    (``services/erasure.complete_pending``). It names the subject only while the subject's
    data still exists."""

    __tablename__ = "erasure_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[str] = mapped_column(String(40), nullable=False)
    reference: Mapped[str] = mapped_column(String(200), nullable=False)
    purpose: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    role: Mapped[str] = mapped_column(String(60), nullable=False)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TemplateRemoval(Base):
    """A template removed from a gallery, and the gallery revision that removed it.

    Every index (each process's in-memory one, the shared Milvus collection) replays the
    removals after the revision it last synchronised, instead of being rebuilt: an erasure
    in a 100M gallery costs one delete per template, not a reload. Holds ids only."""

    __tablename__ = "template_removals"
    __table_args__ = (Index("ix_template_removals_gallery_revision", "gallery_id", "revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gallery_id: Mapped[int] = mapped_column(
        ForeignKey("galleries.id", ondelete="CASCADE"), nullable=False
    )
    template_id: Mapped[int] = mapped_column(Integer, nullable=False)
    revision: Mapped[int] = mapped_column(Integer, nullable=False)


class Template(Base):
    """One enrolled face: the embedding, its quality and the digest of its source image."""

    __tablename__ = "templates"
    __table_args__ = (
        UniqueConstraint("gallery_id", "source_sha256", name="uq_template_gallery_source"),
        Index("ix_templates_gallery_subject", "gallery_id", "subject_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gallery_id: Mapped[int] = mapped_column(
        ForeignKey("galleries.id", ondelete="CASCADE"), nullable=False
    )
    subject_id: Mapped[int] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), nullable=False, index=True
    )
    legal_basis_id: Mapped[int | None] = mapped_column(
        ForeignKey("legal_bases.id", ondelete="SET NULL")
    )
    contract_fingerprint: Mapped[str] = mapped_column(String(200), nullable=False)
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    # Little-endian float32 (in the gallery's transform, see Gallery.transform_seed), or,
    # when ``key_id`` is set, nonce || AES-256-GCM ciphertext of those bytes under that key.
    vector: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    key_id: Mapped[str | None] = mapped_column(String(40))
    quality: Mapped[float] = mapped_column(Float, nullable=False)
    source_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    gallery: Mapped[Gallery] = relationship(back_populates="templates")
    subject: Mapped[Subject] = relationship(back_populates="templates")


class AuditRecord(Base):
    """Append-only, hash-chained log entry: ``hash`` covers the record and ``prev_hash``."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(40), nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    role: Mapped[str] = mapped_column(String(60), nullable=False)
    action: Mapped[str] = mapped_column(String(80), nullable=False)
    purpose: Mapped[str | None] = mapped_column(String(200))
    gallery: Mapped[str | None] = mapped_column(String(200))
    input_digest: Mapped[str | None] = mapped_column(Text)
    result: Mapped[str] = mapped_column(Text, nullable=False)
    decision: Mapped[str] = mapped_column(String(80), nullable=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    # Ed25519 signature (hex) of ``f"{seq}:{hash}"`` by the key ``key_fingerprint``: the
    # head this record created, signed as it was appended. NULL only in logs written
    # before records were signed (adopted once, see ``audit.adopt_unsigned``).
    signature: Mapped[str | None] = mapped_column(String(128))
    key_fingerprint: Mapped[str | None] = mapped_column(String(64))


class AuditHead(Base):
    """Single row holding the chain head; updating it serialises concurrent appenders
    and lets verification notice a truncated tail."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class AuditCheckpoint(Base):
    """An Ed25519 signature over the chain head at ``seq``: the signed bytes are
    ``f"{seq}:{head_hash}"`` in ASCII (see ``airside.governance.audit.checkpoint_message``).
    Rewriting the chain, even with every hash recomputed, no longer matches a checkpoint."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    head_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    ts: Mapped[str] = mapped_column(String(40), nullable=False)
    key_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    signature: Mapped[str] = mapped_column(String(128), nullable=False)
    public_key: Mapped[str] = mapped_column(Text, nullable=False)


class ReviewCase(Base):
    """A watchlist hit awaiting (or past) two-person review, with its EU AI Act trail."""

    __tablename__ = "review_cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gallery: Mapped[str] = mapped_column(String(200), nullable=False)
    purpose: Mapped[str] = mapped_column(String(200), nullable=False)
    subject: Mapped[str] = mapped_column(String(200), nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    threshold: Mapped[float] = mapped_column(Float, nullable=False)
    probe_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    opened_by: Mapped[str] = mapped_column(String(200), nullable=False)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ReviewVote(Base):
    """One reviewer's decision on a case; a reviewer votes at most once per case."""

    __tablename__ = "review_votes"
    __table_args__ = (UniqueConstraint("case_id", "reviewer", name="uq_review_vote_reviewer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(
        ForeignKey("review_cases.id", ondelete="CASCADE"), nullable=False, index=True
    )
    reviewer: Mapped[str] = mapped_column(String(200), nullable=False)
    role: Mapped[str] = mapped_column(String(60), nullable=False)
    decision: Mapped[str] = mapped_column(String(20), nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    note: Mapped[str | None] = mapped_column(Text)


class PrincipalRecord(Base):
    """Someone (or something: a camera, a service) that may call Airside, with one role."""

    __tablename__ = "principals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    role: Mapped[str] = mapped_column(String(60), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # HMAC of name, role, state and scopes (governance/registry_seal.py).
    mac: Mapped[str | None] = mapped_column(String(64))

    scopes: Mapped[list[PrincipalScope]] = relationship(
        back_populates="principal", cascade="all, delete-orphan"
    )


class PrincipalScope(Base):
    """A grant to use the galleries whose names match ``gallery_pattern`` (shell-style,
    e.g. ``boarding:*``), for the purpose matching ``purpose_pattern``."""

    __tablename__ = "principal_scopes"
    __table_args__ = (
        UniqueConstraint(
            "principal_id", "gallery_pattern", "purpose_pattern", name="uq_principal_scope"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    principal_id: Mapped[int] = mapped_column(
        ForeignKey("principals.id", ondelete="CASCADE"), nullable=False, index=True
    )
    gallery_pattern: Mapped[str] = mapped_column(String(200), nullable=False)
    purpose_pattern: Mapped[str] = mapped_column(String(200), nullable=False, default="*")
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    granted_by: Mapped[str] = mapped_column(String(200), nullable=False)

    principal: Mapped[PrincipalRecord] = relationship(back_populates="scopes")


class ApiKey(Base):
    """An API key: only the SHA-256 of its secret part is kept (the key is shown once)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(40), unique=True, nullable=False)
    principal_id: Mapped[int] = mapped_column(
        ForeignKey("principals.id", ondelete="CASCADE"), nullable=False, index=True
    )
    secret_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # HMAC of the key's id, principal, secret hash, expiry and state (registry_seal.py).
    mac: Mapped[str | None] = mapped_column(String(64))


class ConsoleSession(Base):
    """A browser signed in to the console with an API key. Only SHA-256 digests of the
    session cookie and of its CSRF token are kept; the session ends with its key (revoked,
    expired), its principal (disabled), at ``expires_at`` or at sign-out."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    csrf_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    principal_id: Mapped[int] = mapped_column(
        ForeignKey("principals.id", ondelete="CASCADE"), nullable=False
    )
    key_id: Mapped[str] = mapped_column(String(40), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, index=True
    )
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # HMAC of the row under the registry key (registry_seal.py): edits are refused.
    mac: Mapped[str | None] = mapped_column(String(64))


class Event(Base):
    """One thing a camera saw or a pipeline noticed: an identity match, a watchlist hit
    (``review_case`` names its two-person review), a safety event, a system event.

    An event about a person is their personal data: it goes with them (erasure, withdrawal)
    and with its retention. ``evidence`` is the best face crop (JPEG) kept only while the
    gallery's retention allows (``evidence_until``); when ``evidence_key_id`` is set it is
    ``nonce || AES-256-GCM`` under that template key (services/events/evidence.py)."""

    __tablename__ = "events"
    # AUTOINCREMENT: an id is never reused, even after the newest event is erased or
    # purged, so "the events above id N" (event streams, MQTT, Last-Event-ID) never skips.
    __table_args__ = (
        Index("ix_events_camera_started_at", "camera", "started_at"),
        # A replayed event (a camera worker elsewhere sends it again: its answer was lost)
        # is recorded once: the worker names each event, unique per camera (NULLs repeat).
        Index("ux_events_camera_client_key", "camera", "client_key", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    severity: Mapped[str] = mapped_column(String(20), nullable=False)
    camera: Mapped[str] = mapped_column(String(200), nullable=False)
    track: Mapped[int | None] = mapped_column(Integer)
    subject_id: Mapped[int | None] = mapped_column(
        ForeignKey("subjects.id", ondelete="CASCADE"), index=True
    )
    # Denormalised for reading (the subject's reference, the gallery's name and purpose
    # when the event was recorded); erasure and withdrawal select by subject_id and purpose.
    subject_ref: Mapped[str | None] = mapped_column(String(200))
    gallery: Mapped[str | None] = mapped_column(String(200))
    purpose: Mapped[str | None] = mapped_column(String(200))
    score: Mapped[float | None] = mapped_column(Float)
    zone: Mapped[str | None] = mapped_column(String(200))
    # Stream time (seconds since the stream started) of the first and last sighting.
    first_seen: Mapped[float] = mapped_column(Float, nullable=False)
    last_seen: Mapped[float] = mapped_column(Float, nullable=False)
    # Wall clock of ``first_seen``: what retention and listings go by.
    started_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # JSON: the decision trail (identity events), the message (system events).
    detail: Mapped[str | None] = mapped_column(Text)
    review_case: Mapped[int | None] = mapped_column(Integer)
    evidence: Mapped[bytes | None] = mapped_column(LargeBinary)
    evidence_key_id: Mapped[str | None] = mapped_column(String(40))
    evidence_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # The name a camera worker on another machine gave the event (services/camera_workers.py).
    client_key: Mapped[str | None] = mapped_column(String(64))


class Webhook(Base):
    """A webhook destination an administrator configured (services/webhooks.py).

    ``secret`` is the HMAC-SHA256 key the body is signed with; when ``secret_key_id`` is
    set it is ``nonce || AES-256-GCM`` under that template key (bound to the destination's
    name). ``cameras`` / ``types``: JSON lists that filter the events sent (NULL: all)."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    url: Mapped[str] = mapped_column(String(2000), nullable=False)
    secret: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    secret_key_id: Mapped[str | None] = mapped_column(String(40))
    include_crops: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    cameras: Mapped[str | None] = mapped_column(Text)
    types: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)


class WebhookOutbox(Base):
    """An event still to be delivered to a destination: written in the transaction that
    records the event, removed when it is delivered (the attempt stays in the delivery
    log). It goes with its event (erasure, purge) and its destination."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (UniqueConstraint("webhook_id", "event_id", name="uq_outbox_webhook_event"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(
        ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False
    )
    event_id: Mapped[int] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), nullable=False, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # When it is next due (a claimed row is pushed ahead by a lease while it is sent).
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500))
    # Set when the retries are spent: the row stays (visible) but is not sent again.
    given_up_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """One delivery attempt (the delivery log): ids, status and timing, no payload."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(Integer, nullable=False)
    webhook: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    event_id: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    outbox_id: Mapped[int] = mapped_column(Integer, nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
    # delivered, failed (will be retried), gave_up (the last retry failed)
    outcome: Mapped[str] = mapped_column(String(20), nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[float | None] = mapped_column(Float)


class EventCursor(Base):
    """How far a publisher (MQTT) has sent the event stream: the last event id it sent,
    so that a restart resumes there instead of sending everything again."""

    __tablename__ = "event_cursors"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GalleryCalibration(Base):
    """A gallery's own FMR -> threshold table, fitted label-free on the impostor pairs of
    its enrolled subjects (services/gallery_calibration.py): thresholds where the system
    runs. Aggregates only (the table's JSON: FMRs, thresholds, pair counts), no template.
    Goes with its gallery."""

    __tablename__ = "gallery_calibrations"

    gallery_id: Mapped[int] = mapped_column(
        ForeignKey("galleries.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    # The embedding contract fingerprint the scores came from: used only while it is the
    # gallery's.
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    table_json: Mapped[str] = mapped_column(Text, nullable=False)
    # The gallery at fit time: distinct subjects, templates scored, cross-subject pairs.
    subjects: Mapped[int] = mapped_column(Integer, nullable=False)
    templates: Mapped[int] = mapped_column(Integer, nullable=False)
    impostor_pairs: Mapped[int] = mapped_column(Integer, nullable=False)
    fitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    fitted_by: Mapped[str] = mapped_column(String(200), nullable=False)


class GalleryFairCalibration(Base):
    """A gallery's own label-free fair calibration, fitted on its enrolled subjects
    (services/calibration_service.py, ``build_from_gallery(..., own=True)``): decisions
    against the gallery use it before the contract-wide one. Aggregates only (the
    calibration's JSON: centroids of regions of at least five people, a mean and a
    projection, per-region score statistics, the FMR table), no template. Goes with its
    gallery."""

    __tablename__ = "gallery_fair_calibrations"

    gallery_id: Mapped[int] = mapped_column(
        ForeignKey("galleries.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    # The embedding contract fingerprint it was fitted for: used only while it is the
    # gallery's.
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    fair_json: Mapped[str] = mapped_column(Text, nullable=False)
    # Distinct subjects of the gallery at fit time.
    subjects: Mapped[int] = mapped_column(Integer, nullable=False)
    fitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    fitted_by: Mapped[str] = mapped_column(String(200), nullable=False)
