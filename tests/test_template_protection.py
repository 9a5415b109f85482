"""Template protection: encrypted at rest, scores exact, galleries unlinkable, keys renewable."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, update
from tests.conftest import jpeg_bytes, png_bytes, register

from airside.config import Settings
from airside.errors import AirsideError
from airside.governance.consent import BasisInput
from airside.governance.gallery_transform import GalleryTransform, orthogonal_matrix
from airside.governance.principals import Principal
from airside.governance.template_keys import TemplateKeyError, key_id_of, read_keyring
from airside.governance.template_protection import NONCE_BYTES, StoredTemplate, TemplateProtector
from airside.services import enrolment, galleries, matching
from airside.services.app import Airside
from airside.services.audit_service import verify_chain as audit_verify
from airside.services.template_keys import rekey_gallery, rotate_keys
from airside.store.tables import AuditRecord, Gallery, Template
from airside.vision.analyzer import FaceAnalyzer

ADMIN = Principal("key-custodian", "admin")
CONSENT = BasisInput("consent")
DIM = 128


@pytest.fixture(autouse=True)
def _principals(app: Airside) -> None:
    register(app, ADMIN)


# --------------------------------------------------------------------------------------------
# helpers and fixtures


@pytest.fixture
def make_app(tmp_path: Path, analyzer: FaceAnalyzer) -> Iterator[Callable[..., Airside]]:
    """Airside instances over data directories in tmp_path (several may share one, like
    processes); all are closed at the end."""
    made: list[Airside] = []

    def make(data: str = "data", **settings: Any) -> Airside:
        settings.setdefault("template_protection", "auto")  # whatever AIRSIDE_* says
        a = Airside(
            Settings(data_dir=tmp_path / data, **settings), analyzer_factory=lambda _s: analyzer
        )
        made.append(a)
        register(a, ADMIN)
        return a

    yield make
    for a in made:
        a.close()


@pytest.fixture
def protected(make_app: Callable[..., Airside]) -> Airside:
    return make_app(template_protection="on")


@pytest.fixture
def probe(astronaut: np.ndarray) -> bytes:
    return jpeg_bytes(astronaut, 40)


def enrol_two(app: Airside, astronaut: np.ndarray, hopper: np.ndarray, name: str = "g") -> None:
    galleries.create_gallery(app, ADMIN, name, "boarding:KE123")
    enrolment.enrol(app, ADMIN, name, "PNR-1", [png_bytes(astronaut)], CONSENT)
    enrolment.enrol(app, ADMIN, name, "PNR-2", [png_bytes(hopper)], CONSENT)


def scores(app: Airside, gallery: str, probe: bytes) -> dict[str, float]:
    res = matching.identify(app, ADMIN, gallery, probe, k=5)
    return {c.subject: c.score for c in res.candidates}


def stored_rows(app: Airside, gallery: str | None = None) -> list[StoredTemplate]:
    with app.session() as s:
        q = select(*StoredTemplate.columns()).order_by(Template.id)
        if gallery is not None:
            q = q.join(Gallery, Gallery.id == Template.gallery_id).where(Gallery.name == gallery)
        return [StoredTemplate(*r) for r in s.execute(q)]


def stored_vectors(app: Airside, gallery: str) -> np.ndarray:
    """The gallery's templates as stored once decrypted: still in the gallery's transform."""
    return app.template_protector.decode(stored_rows(app, gallery), DIM)


def template_count(app: Airside) -> int:
    with app.session() as s:
        return int(s.scalar(select(func.count()).select_from(Template)) or 0)


def refusals(app: Airside, action: str) -> list[AuditRecord]:
    with app.session() as s:
        return list(
            s.scalars(
                select(AuditRecord).where(
                    AuditRecord.action == action, AuditRecord.decision == "refused:template_key"
                )
            )
        )


def assert_same_scores(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert abs(a[k] - b[k]) <= 1e-6, (k, a[k], b[k])


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# the transform on its own


def test_transform_is_orthogonal_deterministic_and_keyed() -> None:
    seed = bytes(range(32))
    q = orthogonal_matrix(seed, DIM)
    assert np.abs(q @ q.T - np.eye(DIM)).max() < 1e-12
    assert np.array_equal(q, orthogonal_matrix(seed, DIM))
    other = orthogonal_matrix(bytes(32), DIM)
    assert np.abs(q - other).max() > 0.1
    # Pinned: the derivation (SHAKE-256 -> Box-Muller -> sign-fixed QR) must never drift,
    # or every protected gallery would silently change its transform.
    assert q[0, :3] == pytest.approx([-0.14478284, 0.13010568, -0.02542161], abs=1e-6)


def test_transform_keeps_scores_to_1e6() -> None:
    rng = np.random.default_rng(1)
    a, b = unit_rows(rng, 200), unit_rows(rng, 50)
    tf = GalleryTransform.from_seed(secrets.token_bytes(32), DIM)
    plain = a.astype(np.float32) @ b.astype(np.float32).T
    protected = tf.forward(a) @ tf.forward(b).T
    assert np.abs(plain - protected).max() < 1e-6
    back = tf.inverse(tf.forward(a))
    assert np.abs(back - a).max() < 1e-6


def test_transformed_galleries_cannot_be_linked() -> None:
    """Two galleries hold noisy templates of the same 300 people. Without transforms, the
    most similar template across galleries is the same person almost always; with each
    gallery in its own secret transform, linking is at chance level."""
    rng = np.random.default_rng(7)
    people = unit_rows(rng, 300)
    in_a = unit_rows(rng, 300) * 0.5 + people
    in_b = unit_rows(rng, 300) * 0.5 + people
    in_a /= np.linalg.norm(in_a, axis=1, keepdims=True)
    in_b /= np.linalg.norm(in_b, axis=1, keepdims=True)
    plain_link = np.mean(np.argmax(in_a @ in_b.T, axis=1) == np.arange(300))
    assert plain_link > 0.95
    tf_a = GalleryTransform.from_seed(secrets.token_bytes(32), DIM)
    tf_b = GalleryTransform.from_seed(secrets.token_bytes(32), DIM)
    cross = tf_a.forward(in_a) @ tf_b.forward(in_b).T
    assert np.mean(np.argmax(cross, axis=1) == np.arange(300)) < 0.03  # chance: 1/300
    mated, nonmated = np.diag(cross), cross[~np.eye(300, dtype=bool)]
    # Mated and non-mated cross-gallery scores are alike (ISO/IEC 30136 unlinkability).
    assert abs(mated.mean()) < 0.03 and abs(mated.mean() - nonmated.mean()) < 0.03
    assert abs(mated.std() - nonmated.std()) < 0.02


# --------------------------------------------------------------------------------------------
# key ring


def test_key_ring_file_is_private_atomic_and_checked(
    protected: Airside, astronaut: np.ndarray
) -> None:
    galleries.create_gallery(protected, ADMIN, "g", "p")
    enrolment.enrol(protected, ADMIN, "g", "PNR-1", [png_bytes(astronaut)], CONSENT)
    path = protected.template_protector.keyring_path
    assert path == protected.settings.data_dir / "keys" / "templates.keyring"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left
    ring = read_keyring(path)
    assert ring.active is not None and list(ring.keys) == [ring.active]
    assert ring.active == key_id_of(ring.keys[ring.active])
    data = json.loads(path.read_text())
    data["keys"][ring.active] = "00" * 32  # a key that does not match its id
    path.write_text(json.dumps(data))
    with pytest.raises(TemplateKeyError, match="damaged"):
        read_keyring(path)


# --------------------------------------------------------------------------------------------
# at rest


def test_stored_bytes_are_not_the_plain_vector(
    protected: Airside, astronaut: np.ndarray, probe: bytes
) -> None:
    galleries.create_gallery(protected, ADMIN, "g", "p")
    photo = png_bytes(astronaut)
    enrolment.enrol(protected, ADMIN, "g", "PNR-1", [photo], CONSENT)
    (row,) = stored_rows(protected)
    ring = read_keyring(protected.template_protector.keyring_path)
    assert row.key_id == ring.active
    assert len(row.vector) == NONCE_BYTES + 4 * DIM + 16  # nonce, ciphertext, GCM tag
    a = protected.analyzer
    from airside.services.captures import capture, embed_captures

    cap = capture(a, photo, max_pixels=protected.settings.max_image_pixels)
    plain = embed_captures(a, [cap])[0]  # type: ignore[list-item]
    plain = (plain / np.linalg.norm(plain)).astype("<f4")
    on_disk = b"".join(
        p.read_bytes() for p in protected.settings.data_dir.rglob("*") if p.is_file()
    )
    assert plain.tobytes()[:16] not in on_disk
    # Decrypted, it is still not the plain vector: it is in the gallery's secret transform.
    stored = stored_vectors(protected, "g")[0]
    assert abs(float(stored @ plain)) < 0.5
    assert matching.identify(protected, ADMIN, "g", probe).match


def test_scores_are_identical_with_and_without_protection(
    make_app: Callable[..., Airside], astronaut: np.ndarray, hopper: np.ndarray, probe: bytes
) -> None:
    plain, prot = make_app("plain"), make_app("prot", template_protection="on")
    enrol_two(plain, astronaut, hopper)
    enrol_two(prot, astronaut, hopper)
    assert all(r.key_id is None for r in stored_rows(plain))
    assert all(r.key_id is not None for r in stored_rows(prot))
    want = scores(plain, "g", probe)
    assert_same_scores(want, scores(prot, "g", probe))
    v_plain = matching.verify_subject(plain, ADMIN, "g", "PNR-1", probe)
    v_prot = matching.verify_subject(prot, ADMIN, "g", "PNR-1", probe)
    assert abs(v_plain.score - v_prot.score) <= 1e-6 and v_prot.match
    # Another process (a fresh instance) reads the same store and gets the same scores.
    assert_same_scores(want, scores(make_app("prot", template_protection="on"), "g", probe))


def test_the_same_face_in_two_galleries_is_stored_unlinkably(
    make_app: Callable[..., Airside], protected: Airside, astronaut: np.ndarray, probe: bytes
) -> None:
    photo = png_bytes(astronaut)
    for app in (protected, make_app("plain")):
        for g in ("boarding", "lounge"):
            galleries.create_gallery(app, ADMIN, g, f"purpose-{g}")
            enrolment.enrol(app, ADMIN, g, "PNR-1", [photo], CONSENT)
    plain = make_app("plain")
    linked = float(stored_vectors(plain, "boarding")[0] @ stored_vectors(plain, "lounge")[0])
    assert linked > 0.999  # unprotected: the same bytes in both galleries
    # Protected, even with the encryption key, the stored templates do not link.
    cross = float(stored_vectors(protected, "boarding")[0] @ stored_vectors(protected, "lounge")[0])
    assert abs(cross) < 0.35
    for g in ("boarding", "lounge"):
        assert matching.identify(protected, ADMIN, g, probe).candidates[0].subject == "PNR-1"


# --------------------------------------------------------------------------------------------
# renewal: gallery re-keying and key rotation


def test_rekey_gives_a_new_transform_and_keeps_scores(
    make_app: Callable[..., Airside],
    protected: Airside,
    astronaut: np.ndarray,
    hopper: np.ndarray,
    probe: bytes,
) -> None:
    enrol_two(protected, astronaut, hopper)
    other = make_app(template_protection="on")  # another process, with the index loaded
    before = scores(protected, "g", probe)
    assert_same_scores(before, scores(other, "g", probe))
    old = stored_vectors(protected, "g")
    with protected.session() as s:
        rev = s.scalar(select(Gallery.revision).where(Gallery.name == "g"))
    rep = rekey_gallery(protected, ADMIN, "g")
    assert rep.templates == 2
    new = stored_vectors(protected, "g")
    assert np.abs(np.diag(old @ new.T)).max() < 0.35  # old and new copies do not link
    assert np.abs(old @ old.T - new @ new.T).max() < 1e-6  # the geometry is kept
    assert_same_scores(before, scores(protected, "g", probe))
    assert_same_scores(before, scores(other, "g", probe))  # it noticed the new transform
    with protected.session() as s:
        assert s.scalar(select(Gallery.revision).where(Gallery.name == "g")) == (rev or 0) + 1
        rec = s.scalar(select(AuditRecord).where(AuditRecord.action == "gallery.rekey"))
    assert rec is not None and rec.decision == "rekeyed" and rec.gallery == "g"
    assert audit_verify(protected, ADMIN).ok


def test_rotation_keeps_scores_and_retires_the_old_key(
    make_app: Callable[..., Airside],
    protected: Airside,
    astronaut: np.ndarray,
    hopper: np.ndarray,
    probe: bytes,
    tmp_path: Path,
) -> None:
    enrol_two(protected, astronaut, hopper)
    before = scores(protected, "g", probe)
    other = make_app(template_protection="on")  # another process, its key ring loaded
    assert_same_scores(before, scores(other, "g", probe))
    ring_path = protected.template_protector.keyring_path
    old_ring = tmp_path / "old.keyring"
    shutil.copy(ring_path, old_ring)
    old_id = read_keyring(ring_path).active

    rep = rotate_keys(protected, ADMIN)
    assert rep.created and rep.templates == 2 and rep.galleries == 1
    assert rep.previous == [old_id] and rep.retired == []
    ring = read_keyring(ring_path)
    assert ring.active == rep.key_id != old_id and set(ring.keys) == {old_id, rep.key_id}
    assert {r.key_id for r in stored_rows(protected)} == {rep.key_id}
    assert_same_scores(before, scores(protected, "g", probe))
    assert_same_scores(before, scores(make_app(template_protection="on"), "g", probe))
    # The other process notices the rotated ring and seals new templates under the new key.
    enrolment.enrol(other, ADMIN, "g", "PNR-3", [jpeg_bytes(hopper, 60)], CONSENT)
    assert stored_rows(other)[-1].key_id == rep.key_id
    before = scores(protected, "g", probe)

    rep2 = rotate_keys(protected, ADMIN, retire_old=True)
    assert sorted(rep2.retired) == sorted([old_id, rep.key_id])
    ring = read_keyring(ring_path)
    assert list(ring.keys) == [rep2.key_id]
    assert stat.S_IMODE(ring_path.stat().st_mode) == 0o600
    assert_same_scores(before, scores(make_app(template_protection="on"), "g", probe))
    # The retired key (a stolen copy of the old ring) no longer opens anything.
    thief = make_app(template_keyring=old_ring)
    with pytest.raises(TemplateKeyError, match=rep2.key_id):
        matching.identify(thief, ADMIN, "g", probe)
    with protected.session() as s:
        actions = [r.action for r in s.scalars(select(AuditRecord))]
    assert actions.count("keys.rotate") == 2 and actions.count("keys.retire") == 1
    assert audit_verify(protected, ADMIN).ok


def test_a_rotation_killed_before_making_its_key_active_resumes_under_that_key(
    make_app: Callable[..., Airside],
    protected: Airside,
    astronaut: np.ndarray,
    hopper: np.ndarray,
    probe: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airside.services import template_keys

    enrol_two(protected, astronaut, hopper)
    before = scores(protected, "g", probe)
    ring_path = protected.template_protector.keyring_path
    old_id = read_keyring(ring_path).active
    writes: list[int] = []
    real_write = template_keys.write_keyring

    def dies_at_the_second_write(*args: Any, **kwargs: Any) -> None:
        writes.append(1)
        if len(writes) == 2:  # 1: the staged key; 2: making it active
            raise SystemExit("killed")
        real_write(*args, **kwargs)

    monkeypatch.setattr(template_keys, "write_keyring", dies_at_the_second_write)
    with pytest.raises(SystemExit):
        rotate_keys(protected, ADMIN)
    monkeypatch.setattr(template_keys, "write_keyring", real_write)
    ring = read_keyring(ring_path)
    (staged,) = set(ring.keys) - {old_id}
    assert ring.active == old_id and {r.key_id for r in stored_rows(protected)} == {staged}

    nxt = make_app(template_protection="on")  # the next start
    enrolment.enrol(nxt, ADMIN, "g", "PNR-3", [jpeg_bytes(hopper, 60)], CONSENT)  # old key
    before = scores(nxt, "g", probe)
    rep = rotate_keys(nxt, ADMIN, retire_old=True)
    assert rep.key_id == staged and not rep.created and rep.templates == 1
    assert list(read_keyring(ring_path).keys) == [staged]
    assert {r.key_id for r in stored_rows(nxt)} == {staged}
    assert_same_scores(before, scores(make_app(template_protection="on"), "g", probe))
    with nxt.session() as s:
        last = s.scalars(
            select(AuditRecord)
            .where(AuditRecord.action == "keys.rotate")
            .order_by(AuditRecord.seq.desc())
        ).first()
    assert last is not None and json.loads(last.result)["resumed"] is True
    assert audit_verify(nxt, ADMIN).ok


def test_legacy_plain_rows_stay_readable_and_are_protected_later(
    make_app: Callable[..., Airside], astronaut: np.ndarray, hopper: np.ndarray, probe: bytes
) -> None:
    legacy = make_app()  # no key: templates stored as before, plain float32
    galleries.create_gallery(legacy, ADMIN, "g", "p")
    enrolment.enrol(legacy, ADMIN, "g", "PNR-1", [png_bytes(astronaut)], CONSENT)
    assert [r.key_id for r in stored_rows(legacy)] == [None]
    assert not legacy.template_protector.keyring_path.exists()
    before = scores(legacy, "g", probe)

    upgraded = make_app(template_protection="on")
    assert_same_scores(before, scores(upgraded, "g", probe))  # plain rows read as they are
    enrolment.enrol(upgraded, ADMIN, "g", "PNR-2", [png_bytes(hopper)], CONSENT)
    rows = stored_rows(upgraded)
    assert rows[0].key_id is None and rows[1].key_id is not None  # new rows are encrypted
    both = scores(upgraded, "g", probe)
    assert both["PNR-1"] == pytest.approx(before["PNR-1"], abs=1e-6)

    rotate_keys(upgraded, ADMIN)  # encrypts the legacy row
    assert all(r.key_id is not None for r in stored_rows(upgraded))
    assert_same_scores(both, scores(upgraded, "g", probe))
    rekey_gallery(upgraded, ADMIN, "g")  # and gives the gallery its transform
    with upgraded.session() as s:
        assert s.scalar(select(Gallery.transform_seed)) is not None
    assert_same_scores(both, scores(upgraded, "g", probe))
    assert_same_scores(both, scores(make_app(), "g", probe))  # "auto" finds the key ring


def test_rotation_from_the_environment(
    make_app: Callable[..., Airside], astronaut: np.ndarray, probe: bytes
) -> None:
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    app = make_app(template_key=SecretStr(old))
    galleries.create_gallery(app, ADMIN, "g", "p")
    enrolment.enrol(app, ADMIN, "g", "PNR-1", [png_bytes(astronaut)], CONSENT)
    assert [r.key_id for r in stored_rows(app)] == [key_id_of(bytes.fromhex(old))]
    assert not app.template_protector.keyring_path.exists()  # the environment replaces it
    before = scores(app, "g", probe)
    both = make_app(template_key=SecretStr(f"{new},{old}"))
    with pytest.raises(TemplateKeyError, match="AIRSIDE_TEMPLATE_KEY"):
        rotate_keys(both, ADMIN, retire_old=True)
    rep = rotate_keys(both, ADMIN)
    assert not rep.created and rep.key_id == key_id_of(bytes.fromhex(new))
    only_new = make_app(template_key=SecretStr(new))
    assert_same_scores(before, scores(only_new, "g", probe))


# --------------------------------------------------------------------------------------------
# wrong or missing key: refused, audited, nothing changed


def test_wrong_key_is_refused_audited_and_changes_nothing(
    make_app: Callable[..., Airside],
    protected: Airside,
    astronaut: np.ndarray,
    hopper: np.ndarray,
    probe: bytes,
    tmp_path: Path,
) -> None:
    galleries.create_gallery(protected, ADMIN, "g", "p")
    enrolment.enrol(protected, ADMIN, "g", "PNR-1", [png_bytes(astronaut)], CONSENT)
    key_id = read_keyring(protected.template_protector.keyring_path).active
    assert key_id is not None
    db_before = stored_rows(protected)
    # The key ring was replaced by another one (here: a new ring elsewhere).
    wrong = make_app(template_protection="on", template_keyring=tmp_path / "other.keyring")
    wrong_ring = tmp_path / "other.keyring"

    with pytest.raises(TemplateKeyError, match=key_id) as e:
        enrolment.enrol(wrong, ADMIN, "g", "PNR-2", [png_bytes(hopper)], CONSENT)
    assert e.value.code == "template_key" and "not in the key ring" in str(e.value)
    with pytest.raises(TemplateKeyError, match=key_id):
        matching.identify(wrong, ADMIN, "g", probe)
    with pytest.raises(TemplateKeyError, match=key_id):
        matching.verify_subject(wrong, ADMIN, "g", "PNR-1", probe)
    ring_before = wrong_ring.read_bytes()
    with pytest.raises(TemplateKeyError, match=key_id):
        rotate_keys(wrong, ADMIN)
    with pytest.raises(TemplateKeyError, match=key_id):
        rekey_gallery(wrong, ADMIN, "g")
    assert wrong_ring.read_bytes() == ring_before
    assert stored_rows(protected) == db_before
    for action in ("enrol", "identify", "verify.subject", "keys.rotate", "gallery.rekey"):
        assert len(refusals(protected, action)) == 1, action
    assert audit_verify(protected, ADMIN).ok

    # A missing key ring ("auto" with no key at all) is refused the same way.
    missing = make_app(template_keyring=tmp_path / "nowhere.keyring")
    with pytest.raises(TemplateKeyError, match="does not exist"):
        matching.identify(missing, ADMIN, "g", probe)
    with pytest.raises(TemplateKeyError):
        enrolment.enrol(missing, ADMIN, "g", "PNR-2", [png_bytes(hopper)], CONSENT)
    assert template_count(protected) == 1
    # The right key still works.
    assert matching.identify(protected, ADMIN, "g", probe).match


def test_wrong_environment_key_is_refused(
    make_app: Callable[..., Airside], astronaut: np.ndarray, probe: bytes
) -> None:
    app = make_app(template_key=SecretStr(secrets.token_hex(32)))
    galleries.create_gallery(app, ADMIN, "g", "p")
    enrolment.enrol(app, ADMIN, "g", "PNR-1", [png_bytes(astronaut)], CONSENT)
    other = make_app(template_key=SecretStr(secrets.token_hex(32)))
    with pytest.raises(TemplateKeyError, match="AIRSIDE_TEMPLATE_KEY"):
        matching.identify(other, ADMIN, "g", probe)
    assert len(refusals(app, "identify")) == 1


def test_a_ciphertext_moved_to_another_row_does_not_decrypt(
    protected: Airside, astronaut: np.ndarray, hopper: np.ndarray, probe: bytes
) -> None:
    """Someone who can write the database swaps two subjects' templates: refused, not
    silently matched to the wrong person."""
    enrol_two(protected, astronaut, hopper)
    a, b = stored_rows(protected)
    with protected.session() as s:
        s.execute(update(Template).where(Template.id == a.id).values(vector=b.vector))
        s.execute(update(Template).where(Template.id == b.id).values(vector=a.vector))
        s.execute(update(Gallery).values(revision=Gallery.revision + 1))
    protected.forget_index(a.gallery_id)
    with pytest.raises(TemplateKeyError, match="altered"):
        matching.identify(protected, ADMIN, "g", probe)


def test_a_failed_rotation_changes_neither_the_store_nor_the_key_ring(
    protected: Airside, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    enrol_two(protected, astronaut, hopper)
    rows = stored_rows(protected)
    damaged = rows[1].vector[:-1] + bytes([rows[1].vector[-1] ^ 1])
    with protected.session() as s:
        s.execute(update(Template).where(Template.id == rows[1].id).values(vector=damaged))
    ring_path = protected.template_protector.keyring_path
    ring_before, db_before = ring_path.read_bytes(), stored_rows(protected)
    with pytest.raises(TemplateKeyError, match="altered"):
        rotate_keys(protected, ADMIN)
    assert ring_path.read_bytes() == ring_before and stored_rows(protected) == db_before
    assert len(refusals(protected, "keys.rotate")) == 1


def test_bad_template_key_setting_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="64 hex"):
        Settings(template_key=SecretStr("not-hex"))


# --------------------------------------------------------------------------------------------
# command line


def test_cli_keys_rotate_and_gallery_rekey(
    tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from airside.cli.main import app as cli

    monkeypatch.setattr("airside.vision.factory.default_analyzer", lambda _s: analyzer)
    for var in (
        "AIRSIDE_DATA_DIR",
        "AIRSIDE_TEMPLATE_KEY",
        "AIRSIDE_TEMPLATE_KEYRING",
        "AIRSIDE_TEMPLATE_PROTECTION",
    ):
        monkeypatch.delenv(var, raising=False)
    # Start as an installation from before protection (plain templates), then protect it.
    monkeypatch.setenv("AIRSIDE_TEMPLATE_PROTECTION", "auto")
    photo = tmp_path / "a.png"
    photo.write_bytes(png_bytes(astronaut))
    base = ["--data-dir", str(tmp_path / "d")]
    run = CliRunner().invoke
    assert run(cli, [*base, "gallery", "create", "g", "--purpose", "p"]).exit_code == 0
    enrol = [*base, "enrol", "--gallery", "g", "--subject", "S", "--basis", "consent"]
    assert run(cli, [*enrol, str(photo)]).exit_code == 0

    res = run(cli, [*base, "keys", "rotate", "--json"])  # first run: creates the key ring
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["created"] and rep["templates"] == 1 and rep["previous"] == []
    res = run(cli, [*base, "gallery", "rekey", "g", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"gallery": "g", "templates": 1, "key_id": rep["key_id"]}
    res = run(cli, [*base, "keys", "rotate", "--retire-old"])
    assert res.exit_code == 0, res.output
    assert "retired" in res.stdout
    res = run(cli, [*base, "identify", "--gallery", "g", str(photo), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["subject"] == "S"

    (tmp_path / "d" / "keys" / "templates.keyring").unlink()
    res = run(cli, [*base, "identify", "--gallery", "g", str(photo), "--json"])
    assert res.exit_code == 1
    assert json.loads(res.stdout)["error"] == "template_key"
    res = run(cli, [*base, "gallery", "rekey", "nope"])
    assert res.exit_code == 1 and "nope" in res.output


# --------------------------------------------------------------------------------------------
# cost


def bench_protection(n: int = 20_000, dim: int = DIM, repeat: int = 3) -> dict[str, float]:
    """Microseconds per template to seal (transform + encrypt) and open (decrypt, as an
    index load does) versus storing/reading plain float32, plus per-probe and per-gallery
    costs. Run: ``AIRSIDE_BENCH=1 pytest tests/test_template_protection.py -k bench -s``."""
    rng = np.random.default_rng(0)
    vecs = unit_rows(rng, n, dim).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        settings = Settings(data_dir=Path(d), template_key=SecretStr(secrets.token_hex(32)))
        prot = TemplateProtector(settings)
        key = prot.write_key()
        assert key is not None

        def best(fn: Callable[[], object]) -> float:
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return min(times)

        seed = secrets.token_bytes(32)
        t_q = best(lambda: GalleryTransform.from_seed(seed, dim))
        tf = GalleryTransform.from_seed(seed, dim)
        from airside.governance.template_protection import TemplateWriter

        plain_w = TemplateWriter(prot, 1, GalleryTransform(), None)
        prot_w = TemplateWriter(prot, 1, tf, key)
        sha = "ab" * 32

        def write(w: TemplateWriter) -> list[tuple[bytes, str | None]]:
            return [
                w.encode(v, subject_id=i, fingerprint="fp", source_sha256=sha)
                for i, v in enumerate(vecs)
            ]

        t_plain_w = best(lambda: write(plain_w))
        sealed = write(prot_w)
        t_prot_w = best(lambda: write(prot_w))
        plain_rows = [
            StoredTemplate(i, 1, i, "fp", sha, v.astype("<f4").tobytes(), None)
            for i, v in enumerate(vecs)
        ]
        enc_rows = [
            StoredTemplate(i, 1, i, "fp", sha, blob, kid) for i, (blob, kid) in enumerate(sealed)
        ]
        t_plain_r = best(lambda: prot.decode(plain_rows, dim))
        t_prot_r = best(lambda: prot.decode(enc_rows, dim))
        q = vecs[:1]
        t_probe = best(lambda: [tf.forward(q) for _ in range(1000)]) / 1000
    us = 1e6
    return {
        "templates": n,
        "write_plain_us": t_plain_w / n * us,
        "write_protected_us": t_prot_w / n * us,
        "read_plain_us": t_plain_r / n * us,
        "read_protected_us": t_prot_r / n * us,
        "probe_transform_us": t_probe * us,
        "seed_to_matrix_ms": t_q * 1e3,
    }


def bench_renewal(n: int = 20_000, dim: int = DIM) -> dict[str, float]:
    """Seconds for a full index load (plain, then encrypted), the first ``keys rotate``
    (encrypting ``n`` legacy rows), ``gallery rekey`` and ``keys rotate --retire-old`` on a
    gallery of ``n`` synthetic templates in SQLite."""
    from airside.services.gallery_view import get_gallery
    from airside.store.tables import Subject
    from airside.vision.contract import EmbeddingContract

    rng = np.random.default_rng(0)
    vecs = unit_rows(rng, n, dim).astype("<f4")
    contract = EmbeddingContract("bench", "1", "0" * 64, dim, "none")
    out: dict[str, float] = {"templates": n}
    with tempfile.TemporaryDirectory() as d:
        app = Airside(Settings(data_dir=Path(d), template_protection="auto"))
        try:
            register(app, ADMIN)
            with app.session() as s:
                g = Gallery(
                    name="g",
                    purpose="p",
                    contract_fingerprint=contract.fingerprint,
                    contract_json=contract.to_json(),
                    quality_bar=0,
                    fmr_target=1e-3,
                )
                subj = Subject(reference="s")
                s.add_all([g, subj])
                s.flush()
                s.add_all(
                    Template(
                        gallery_id=g.id,
                        subject_id=subj.id,
                        contract_fingerprint=contract.fingerprint,
                        dim=dim,
                        vector=v.tobytes(),
                        quality=50.0,
                        source_sha256=f"{i:064x}",
                    )
                    for i, v in enumerate(vecs)
                )
                gid = g.id

            def timed(fn: Callable[[], object]) -> float:
                t0 = time.perf_counter()
                fn()
                return time.perf_counter() - t0

            def load() -> None:
                app.forget_index(gid)
                with app.session() as s:
                    app.index(s, get_gallery(s, "g"))

            out["index_load_plain_s"] = timed(load)
            out["rotate_first_s"] = timed(lambda: rotate_keys(app, ADMIN))
            out["index_load_encrypted_s"] = timed(load)
            out["rekey_s"] = timed(lambda: rekey_gallery(app, ADMIN, "g"))
            out["rotate_retire_s"] = timed(lambda: rotate_keys(app, ADMIN, retire_old=True))
        finally:
            app.close()
    return out


@pytest.mark.skipif(not os.environ.get("AIRSIDE_BENCH"), reason="set AIRSIDE_BENCH=1 to time")
def test_bench_protection() -> None:
    res = {**bench_protection(), **bench_renewal()}
    print(json.dumps({k: round(v, 3) for k, v in res.items()}, indent=2))
    assert res["read_protected_us"] < 100


def test_bench_protection_runs_small() -> None:
    res = bench_protection(n=50, repeat=1)
    assert set(res) >= {"write_protected_us", "read_protected_us", "probe_transform_us"}
    assert set(bench_renewal(n=20)) >= {"rotate_first_s", "rekey_s", "rotate_retire_s"}


def test_refusal_error_is_an_airside_error() -> None:
    assert issubclass(TemplateKeyError, AirsideError)
