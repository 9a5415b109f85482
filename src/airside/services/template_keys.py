"""Key rotation and gallery re-keying: administrator use-cases over every stored template.

Both are audited in the same transaction as the rewrite (``keys.rotate``, ``gallery.rekey``);
neither changes a score. (docs/template_protection.md)
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from airside.errors import AirsideError, NotFoundError
from airside.governance import access, audit
from airside.governance.gallery_transform import GalleryTransform
from airside.governance.principals import Principal
from airside.governance.template_keys import (
    KeyRing,
    TemplateKeyError,
    keyring_lock,
    read_keyring,
    write_keyring,
)
from airside.governance.template_protection import (
    SEED_BYTES,
    StoredTemplate,
    TemplateProtector,
    event_crop_aad,
    seed_aad,
)
from airside.services.app import Airside
from airside.store.tables import AuditRecord, Event, Gallery, Template
from airside.vision.contract import EmbeddingContract

log = logging.getLogger(__name__)


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


def rotate_keys(app: Airside, principal: Principal, *, retire_old: bool = False) -> RotationReport:
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
    app: Airside, prot: TemplateProtector, principal: Principal, retire_old: bool
) -> RotationReport:
    ring = prot.reload()
    if not ring.writable and retire_old:
        raise TemplateKeyError(
            f"keys come from {ring.source}, which airside does not edit: rotate without "
            "retiring, then remove the old keys from it yourself",
            details={"field": "retire_old"},
        )
    # A ring in a secrets directory is read only, like keys from the environment: the
    # rotation re-seals under its active key and writes (and locks) nothing there.
    ring_path = ring.path if ring.writable else None
    lock: AbstractContextManager[None] = (
        keyring_lock(ring_path) if ring_path is not None else contextlib.nullcontext()
    )
    with lock:
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
        elif created and (resumed := _interrupted_rotation(app, ring)) is not None:
            # A rotation committed but died before making its key active: resume it. Only
            # rows sealed under another key since (enrolled after the crash) are re-sealed.
            new_id = resumed
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
        resuming = created and new_id in old_ring.keys and bool(old_ring.keys)
        created = created and not resuming
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
                        **({"resumed": True} if resuming else {}),
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


def _interrupted_rotation(app: Airside, ring: KeyRing) -> str | None:
    """The key of a rotation that committed its re-encryption but was killed before making
    the key active in the ring (the last ``keys.rotate`` record names it; it is still in
    the ring, not active); None when there is none."""
    with app.session(readonly=True) as s:
        last = s.scalar(
            select(AuditRecord.result)
            .where(AuditRecord.action == "keys.rotate", AuditRecord.decision == "rotated")
            .order_by(AuditRecord.seq.desc())
            .limit(1)
        )
    if last is None:
        return None
    kid = json.loads(last).get("key_id")
    return kid if isinstance(kid, str) and kid in ring.keys and kid != ring.active else None


def _retire(
    app: Airside, prot: TemplateProtector, principal: Principal, ring: KeyRing
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
                "written under another key while rotating; rotate again before retiring old "
                "keys",
                details={"next": "keys.rotate"},
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


def rekey_gallery(app: Airside, principal: Principal, gallery_name: str) -> RekeyReport:
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
