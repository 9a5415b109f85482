"""``airside backup`` and ``airside restore``: a consistent snapshot of the running store
(SQLite's online backup API, or pg_dump when the suite runs on PostgreSQL) with a manifest,
the keys kept apart from it, and a restore that refuses damaged backups, missing keys and
stores holding data before touching anything, then verifies what it restored."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from tests.conftest import SQLITE_ONLY, CliOnDir, png_bytes

from airside.config import Settings
from airside.errors import AirsideError
from airside.governance.consent import BasisInput
from airside.services import enrolment, galleries, matching, principal_admin
from airside.services.app import Airside
from airside.services.audit_service import verify_chain
from airside.services.backup import backup, read_manifest, restore
from airside.store import transfer
from airside.store.tables import AuditRecord, Gallery
from airside.vision.analyzer import FaceAnalyzer

REPO = Path(__file__).resolve().parents[1]
GALLERY = "boarding"


def enrol_astronaut(app: Airside, astronaut: np.ndarray) -> None:
    admin = principal_admin.ensure_local_admin(app)
    galleries.create_gallery(app, admin, GALLERY, GALLERY)
    enrolment.enrol(app, admin, GALLERY, "S-ASTRO", [png_bytes(astronaut)], BasisInput("consent"))


def take_backup(app: Airside, tmp_path: Path, keys: bool = True) -> tuple[Path, Path]:
    folder, key_dir = tmp_path / "backup", tmp_path / "keys"
    backup(app, principal_admin.ensure_local_admin(app), folder, keys_to=key_dir if keys else None)
    return folder, key_dir


def fresh(tmp_path: Path, name: str, analyzer: FaceAnalyzer, keys: Path | None) -> Airside:
    """A new installation; with ``keys``, the backup's keys put in place before it first runs."""
    data_dir = tmp_path / name
    if keys is not None:
        shutil.copytree(keys, data_dir / "keys")
    return Airside(Settings(data_dir=data_dir), analyzer_factory=lambda _s: analyzer)


def counts(app: Airside) -> dict[str, int]:
    with app.session(readonly=True) as s:
        return transfer.row_counts(s.connection())


def enrolled_until(child: subprocess.Popen[str], n: int) -> bool:
    """Read the enrolling child's lines until it has enrolled ``n`` subjects."""
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("enrolled ") and int(line.split()[1]) + 1 >= n:
            return True
    return False  # it stopped


def test_a_backup_taken_while_another_process_enrols_is_one_consistent_moment(
    app: Airside, tmp_path: Path, analyzer: FaceAnalyzer
) -> None:
    admin = principal_admin.ensure_local_admin(app)
    galleries.create_gallery(app, admin, GALLERY, GALLERY)
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *inherited])}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.store_child", "enrol", str(app.settings.data_dir), GALLERY],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert enrolled_until(child, 2), child.stderr and child.stderr.read()[-2000:]
        folder, keys = take_backup(app, tmp_path)
        in_snapshot = read_manifest(folder)["tables"]["subjects"]
        # and it went on enrolling past the snapshot
        assert enrolled_until(child, in_snapshot + 1)
    finally:
        child.kill()
        child.communicate(timeout=60)
    manifest = read_manifest(folder)
    assert manifest["tables"]["subjects"] >= 2
    assert counts(app)["subjects"] > manifest["tables"]["subjects"]

    other = fresh(tmp_path, "other", analyzer, keys)
    try:
        rep = restore(other, principal_admin.ensure_local_admin(other), folder)
    finally:
        other.close()
    # restore checks the chain and that the counts are the manifest's: one moment
    assert rep.tables["subjects"] == manifest["tables"]["subjects"]
    assert rep.tables["templates"] == rep.templates == manifest["tables"]["templates"]
    assert rep.audit_records == manifest["audit_head"]["seq"]


def test_a_restored_installation_verifies_and_identifies_the_enrolled_person(
    app: Airside, tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    enrol_astronaut(app, astronaut)
    probe = png_bytes(np.ascontiguousarray(astronaut[:, ::-1]))
    before = matching.identify(app, principal_admin.ensure_local_admin(app), GALLERY, probe)
    folder, keys = take_backup(app, tmp_path)

    other = fresh(tmp_path, "other", analyzer, keys)
    try:
        admin = principal_admin.ensure_local_admin(other)
        rep = restore(other, admin, folder)
        chain = verify_chain(other, admin)
        after = matching.identify(other, admin, GALLERY, probe)
        with other.session(readonly=True) as s:
            actions = list(s.scalars(select(AuditRecord.action).order_by(AuditRecord.seq)))
    finally:
        other.close()
    assert rep.templates == 1 and rep.gallery_seeds == 1
    assert chain.ok, chain.problems
    assert after.candidates[0].subject == before.candidates[0].subject == "S-ASTRO"
    assert after.candidates[0].score == pytest.approx(before.candidates[0].score, abs=1e-6)
    # the backup holds its own record; the restored log records the restore
    assert "store.backup" in actions and actions.index("store.restore") > actions.index(
        "store.backup"
    )


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_damaged_dump_is_refused_before_anything_is_touched(
    app: Airside, tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray, damage: str
) -> None:
    enrol_astronaut(app, astronaut)
    folder, keys = take_backup(app, tmp_path)
    dump = folder / read_manifest(folder)["dump"]["file"]
    data = bytearray(dump.read_bytes())
    if damage == "flipped byte":
        data[len(data) // 2] ^= 0x01
    else:
        del data[len(data) - 4096 :]
    dump.write_bytes(bytes(data))

    other = fresh(tmp_path, "other", analyzer, keys)
    try:
        admin = principal_admin.ensure_local_admin(other)
        before = counts(other)
        with pytest.raises(AirsideError) as refused:
            restore(other, admin, folder, replace=True)
        after = counts(other)
        with other.session(readonly=True) as s:
            last = s.scalar(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1))
    finally:
        other.close()
    assert refused.value.code == "backup_corrupt"
    assert after["audit_log"] == before["audit_log"] + 1  # only the refusal, recorded
    assert {**after, "audit_log": 0, "audit_head": 0} == {**before, "audit_log": 0, "audit_head": 0}
    assert last is not None and last.decision == "refused:backup_corrupt"
    assert not (other.settings.data_dir / "replaced").exists()


def test_without_the_backups_keys_the_restore_names_the_missing_key(
    app: Airside, tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    enrol_astronaut(app, astronaut)
    folder, _keys = take_backup(app, tmp_path, keys=False)
    needed = read_manifest(folder)["keys"]["template_key_ids"]

    other = fresh(tmp_path, "other", analyzer, keys=None)  # keys of its own, made on first use
    try:
        with pytest.raises(AirsideError) as refused:
            restore(other, principal_admin.ensure_local_admin(other), folder)
        with other.session(readonly=True) as s:
            galleries_there = s.scalar(select(func.count()).select_from(Gallery))
    finally:
        other.close()
    assert refused.value.code == "restore_keys_missing"
    assert len(needed) == 1
    assert (
        f"the templates were sealed with key id {needed[0]} which this installation does not "
        "have" in str(refused.value)
    )
    assert "audit log was signed with key" in str(refused.value)
    assert galleries_there == 0


def test_a_store_that_holds_data_is_refused_without_replace(
    app: Airside, tmp_path: Path, astronaut: np.ndarray
) -> None:
    enrol_astronaut(app, astronaut)
    folder, _keys = take_backup(app, tmp_path)
    galleries.create_gallery(app, principal_admin.ensure_local_admin(app), "later", "later")

    with pytest.raises(AirsideError) as refused:
        restore(app, principal_admin.ensure_local_admin(app), folder)

    assert refused.value.code == "store_not_empty"
    assert refused.value.details == {"field": "replace"}
    with app.session(readonly=True) as s:
        assert set(s.scalars(select(Gallery.name))) == {GALLERY, "later"}
    assert not (app.settings.data_dir / "replaced").exists()


def test_with_replace_the_old_store_is_kept_aside_and_the_restored_log_names_it(
    app: Airside, tmp_path: Path, astronaut: np.ndarray
) -> None:
    enrol_astronaut(app, astronaut)
    folder, _keys = take_backup(app, tmp_path)
    admin = principal_admin.ensure_local_admin(app)
    galleries.create_gallery(app, admin, "later", "later")  # after the backup: rolled back
    replaced = app.witness.read()
    assert replaced is not None

    rep = restore(app, admin, folder, replace=True)

    with app.session(readonly=True) as s:
        assert set(s.scalars(select(Gallery.name))) == {GALLERY}
        last = s.scalar(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1))
    assert last is not None and (last.action, last.decision) == ("store.restore", "restored")
    named = json.loads(last.result)["replaced_head"]
    assert named["seq"] > replaced.seq  # the head it replaced, its "replacing" record included
    chain = verify_chain(app, admin)  # the witness starts again from the restore's record
    assert chain.ok, chain.problems
    # what was replaced is a backup of its own, holding the gallery made after the backup
    assert rep.kept_aside is not None
    aside = read_manifest(Path(rep.kept_aside))
    assert aside["tables"]["galleries"] == 2
    assert aside["audit_head"]["seq"] == named["seq"]


def test_the_keys_go_to_a_private_folder_of_their_own_and_never_into_the_backup(
    app: Airside, tmp_path: Path, astronaut: np.ndarray
) -> None:
    enrol_astronaut(app, astronaut)

    folder, keys = take_backup(app, tmp_path)

    assert sorted(p.name for p in keys.iterdir()) == [
        "audit_ed25519.pem",
        "probe_digest.key",
        "registry.key",
        "templates.keyring",
    ]
    assert keys.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in keys.iterdir())
    assert folder.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["manifest.json", read_manifest(folder)["dump"]["file"]]
    )
    secrets_held = [(keys / "registry.key").read_bytes(), (keys / "probe_digest.key").read_bytes()]
    ring = json.loads((keys / "templates.keyring").read_text())
    secrets_held += [bytes.fromhex(k) for k in ring["keys"].values()]
    secrets_held += [(keys / "audit_ed25519.pem").read_bytes().split(b"-----")[2].strip()]
    for f in folder.iterdir():
        content = f.read_bytes()
        assert f.stat().st_mode & 0o777 == 0o600
        for key in secrets_held:
            assert key not in content and key.hex().encode() not in content, f.name


def test_the_keys_are_refused_inside_the_backup_folder(app: Airside, tmp_path: Path) -> None:
    admin = principal_admin.ensure_local_admin(app)
    with pytest.raises(AirsideError) as refused:
        backup(app, admin, tmp_path / "b", keys_to=tmp_path / "b" / "keys")
    assert refused.value.code == "keys_with_backup"
    assert not (tmp_path / "b").exists()


@SQLITE_ONLY
def test_a_backup_altered_with_a_matching_manifest_is_found_out_after_restoring(
    app: Airside, tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    """Someone who rewrites an audit record in the snapshot and recomputes the manifest's
    digest passes the first check, but not the verification after the restore."""
    enrol_astronaut(app, astronaut)
    folder, keys = take_backup(app, tmp_path)
    dump = folder / "airside.db"
    with sqlite3.connect(dump) as db:
        db.execute("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2")
    db.close()
    manifest = read_manifest(folder)
    data = dump.read_bytes()
    manifest["dump"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (folder / "manifest.json").write_text(json.dumps(manifest))

    other = fresh(tmp_path, "other", analyzer, keys)
    try:
        with pytest.raises(AirsideError) as refused:
            restore(other, principal_admin.ensure_local_admin(other), folder)
    finally:
        other.close()
    assert refused.value.code == "restore_unverified"
    assert "audit chain does not verify (record 2" in str(refused.value)
    assert list((other.settings.data_dir / "replaced").iterdir())  # the store it replaced


def test_backup_and_restore_from_the_command_line(cli_on_dir: CliOnDir, tmp_path: Path) -> None:
    cli_on_dir.enrol(GALLERY, "S-1")
    folder, keys = tmp_path / "bk", tmp_path / "bk-keys"

    made = cli_on_dir("backup", str(folder), "--keys-to", str(keys), "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["key_files"]

    other = CliOnDir(tmp_path / "other", cli_on_dir.photo)
    shutil.copytree(keys, other.data_dir / "keys")
    refused = other("restore", str(tmp_path / "nowhere"))
    assert refused.exit_code == 1 and "backup_invalid" in refused.output
    done = other("restore", str(folder))
    assert done.exit_code == 0, done.output
    assert "restored" in done.output and "1 templates" in done.output
    verified = other("audit", "verify")
    assert verified.exit_code == 0, verified.output
    found = other("identify", "--gallery", GALLERY, str(cli_on_dir.photo), "--json")
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["subject"] == "S-1"
    again = other("restore", str(folder))
    assert again.exit_code == 1 and "--replace" in again.output
