"""Signed checkpoints make a rewritten audit chain detectable; exports verify offline."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from tests.conftest import register
from typer.testing import CliRunner

from airside.config import Settings
from airside.errors import AirsideError
from airside.governance import audit
from airside.governance.principals import Principal
from airside.governance.signing import Signer, default_key_path, verify_signature
from airside.services import audit_service
from airside.services.app import Airside
from airside.store.db import Database
from airside.store.tables import AuditCheckpoint, AuditHead, AuditRecord

ALICE = Principal("alice", "auditor")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "audit.md"


@pytest.fixture(autouse=True)
def _principals(app: Airside) -> None:
    register(app, ALICE)


@pytest.fixture
def db(store_url: str) -> Iterator[Database]:
    d = Database(store_url)
    add_records(d, 5)
    yield d
    d.dispose()


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.load_or_create(tmp_path / "keys" / "audit_ed25519.pem")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Airside]:
    a = Airside(Settings(data_dir=tmp_path / "data"))
    yield a
    a.close()


def add_records(db: Database, n: int) -> None:
    for i in range(n):
        with db.session() as s:
            audit.append(s, ALICE, "identify", decision="no_match", result={"i": i})


def problems(db: Database, public_keys: list[str] | None = None) -> list[tuple[int, str]]:
    with db.session() as s:
        rep = audit.verify(s, public_keys=public_keys)
    return [(p["seq"], p["problem"]) for p in rep.problems]


def rewrite_chain(s: Session, seq: int, **changes: Any) -> None:
    """What a forger without the key does: change a record, then recompute every hash
    after it and the head, so that the hash chain alone is consistent again."""
    prev = audit.GENESIS
    for rec in s.scalars(select(AuditRecord).order_by(AuditRecord.seq)):
        if rec.seq == seq:
            for k, v in changes.items():
                setattr(rec, k, v)
        rec.prev_hash = prev
        rec.hash = audit.record_hash({k: getattr(rec, k) for k in audit._FIELDS})
        prev = rec.hash
    head = s.get(AuditHead, 1)
    assert head is not None
    head.hash = prev


def test_checkpoint_signature_verifies(db: Database, signer: Signer) -> None:
    with db.session() as s:
        head = s.get(AuditHead, 1)
        assert head is not None
        head_hash = head.hash
        cp = audit.checkpoint(s, signer)
        assert (cp.seq, cp.head_hash) == (5, head_hash)
        # the record appended right after it names it, so deleting it shows
        named = s.get(AuditRecord, 6)
        assert named is not None and named.action == audit.CHECKPOINTED_ACTION
    assert cp.key_fingerprint == signer.fingerprint
    assert verify_signature(cp.public_key, cp.signature, f"5:{cp.head_hash}".encode("ascii"))
    with db.session() as s:
        rep = audit.verify(s)
    assert rep.ok and rep.checkpoints == 1 and rep.signed_seq == 5


def test_rewritten_chain_is_caught_by_the_checkpoint(db: Database, signer: Signer) -> None:
    with db.session() as s:
        audit.checkpoint(s, signer)
    add_records(db, 2)
    with db.session() as s:
        rewrite_chain(s, 3, decision="match")
    # The hash chain itself is consistent again: only the signed head gives it away.
    assert problems(db) == [(5, "checkpoint_mismatch")]


def test_forged_signature_is_detected(db: Database, signer: Signer) -> None:
    with db.session() as s:
        cp = audit.checkpoint(s, signer)
        forged = ("0" if cp.signature[0] != "0" else "1") + cp.signature[1:]
        s.execute(update(AuditCheckpoint).values(signature=forged))
    # a bad signature, and no longer the checkpoint record 6 names
    assert problems(db) == [(5, "bad_signature"), (5, "checkpoint_deleted")]


def test_untrusted_key_is_reported_when_fingerprints_are_given(
    db: Database, signer: Signer
) -> None:
    with db.session() as s:
        audit.checkpoint(s, signer)
    add_records(db, 1)
    with db.session() as s:
        audit.checkpoint(s, Signer.generate())  # e.g. a forger re-signing a rewritten log
    assert problems(db) == []
    # (these bare-session records carry no signature of their own: a service's would)
    assert problems(db, public_keys=[signer.fingerprint]) == [(1, "unsigned"), (7, "untrusted_key")]


def test_checkpoint_refuses_to_sign_a_broken_chain(db: Database, signer: Signer) -> None:
    with db.session() as s:
        s.execute(update(AuditRecord).where(AuditRecord.seq == 2).values(decision="match"))
    with pytest.raises(AirsideError) as e, db.session() as s:
        audit.checkpoint(s, signer)
    assert e.value.code == "audit_chain_broken"


def test_maybe_checkpoint_signs_every_n_records(db: Database, signer: Signer) -> None:
    seqs = []
    for i in range(12):
        with db.session() as s:
            audit.append(s, ALICE, "identify", decision="no_match", result={"j": i})
            cp = audit.maybe_checkpoint(s, signer, every=5)
            seqs.append(cp.seq if cp else None)
    # records 6..: the first call is 5 past the start, then every 5th record after the one
    # naming the checkpoint before
    assert [x for x in seqs if x is not None] == [6, 12, 18]
    assert problems(db) == []


def test_export_writes_every_record_and_checkpoint_and_is_audited(
    app: Airside, tmp_path: Path
) -> None:
    for i in range(3):
        with app.session() as s:
            audit.append(s, ALICE, "identify", decision="no_match", result={"i": i})
    audit_service.make_checkpoint(app, ALICE)
    out = tmp_path / "audit.jsonl"

    n = audit_service.export_jsonl(app, ALICE, out)

    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    records = [x for x in lines if x["type"] == "record"]
    checkpoints = [x for x in lines if x["type"] == "checkpoint"]
    assert lines == records + checkpoints  # records first, then checkpoints
    # Records 1-2 registered ALICE; 3-5 are hers, 6 the checkpoint request, 7 names that
    # checkpoint, 8 the export, 9 names the export's checkpoint.
    assert n == len(records) == 9
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert set(records[0]) >= {*audit._FIELDS, "hash", "signature", "key_fingerprint"}
    assert [r["action"] for r in records[-2:]] == ["audit.export", audit.CHECKPOINTED_ACTION]
    assert json.loads(records[-2]["result"])["since_seq"] == 1
    assert [c["seq"] for c in checkpoints] == [6, 8]  # the export signs its own record
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert audit_service.verify_chain(app, ALICE).ok


def test_export_since_leaves_out_earlier_records(app: Airside, tmp_path: Path) -> None:
    for i in range(4):
        with app.session() as s:
            audit.append(s, ALICE, "identify", decision="no_match", result={"i": i})
    out = tmp_path / "tail.jsonl"
    # Records 1-2 registered ALICE, 3-6 are hers: since 5 gives 5, 6, the export and the
    # record naming the export's checkpoint.
    assert audit_service.export_jsonl(app, ALICE, out, since_seq=5) == 4
    assert len(out.read_text(encoding="utf-8").splitlines()) == 5  # + the export's checkpoint


def offline_verifier() -> Callable[..., list[str]]:
    """``verify_export`` exactly as docs/audit.md prints it."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    (code,) = [b for b in blocks if "def verify_export" in b]
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    fn: Callable[..., list[str]] = namespace["verify_export"]
    return fn


def tamper_rehash(lines: list[dict[str, Any]]) -> None:
    """Change record 2 and recompute every hash after it, as a forger without the key would."""
    prev = audit.GENESIS
    for obj in lines:
        if obj["type"] != "record":
            continue
        if obj["seq"] == 2:
            obj["decision"] = "match"
        obj["prev_hash"] = prev
        obj["hash"] = audit.record_hash(obj)
        prev = obj["hash"]


def tamper_edit(lines: list[dict[str, Any]]) -> None:
    lines[1]["decision"] = "match"


def tamper_delete(lines: list[dict[str, Any]]) -> None:
    del lines[1]


@pytest.mark.parametrize("tamper", [None, tamper_edit, tamper_delete, tamper_rehash])
def test_offline_verification_from_the_docs(
    app: Airside, tmp_path: Path, tamper: Callable[[list[dict[str, Any]]], None] | None
) -> None:
    for i in range(4):
        with app.session() as s:
            audit.append(s, ALICE, "identify", decision="no_match", result={"i": i})
    audit_service.make_checkpoint(app, ALICE)
    out = tmp_path / "audit.jsonl"
    audit_service.export_jsonl(app, ALICE, out)
    trusted = {audit_service.signer(app).fingerprint}
    if tamper is not None:
        lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
        tamper(lines)
        out.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")

    found = offline_verifier()(str(out), trusted)

    assert (found == []) == (tamper is None), found


def test_offline_verification_rejects_a_key_it_does_not_trust(app: Airside, tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    audit_service.export_jsonl(app, ALICE, out)
    verify_export = offline_verifier()
    assert verify_export(str(out), {audit_service.signer(app).fingerprint}) == []
    assert any("untrusted" in p for p in verify_export(str(out), {"0" * 16}))


def test_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = default_key_path(tmp_path / "fresh")  # not the app's folder: it holds other keys
    first = Signer.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert Signer.load_or_create(path).fingerprint == first.fingerprint
    assert len(first.fingerprint) == 16
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_cli_checkpoint_and_export_print_their_json_shapes(app: Airside, tmp_path: Path) -> None:
    from airside.cli.main import app as cli

    runner = CliRunner()
    base = ["--data-dir", str(app.settings.data_dir)]  # the local administrator's CLI
    with app.session() as s:
        head = audit.append(s, ALICE, "identify", decision="no_match").seq

    cp = runner.invoke(cli, [*base, "audit", "checkpoint", "--json"])
    assert cp.exit_code == 0, cp.output
    cp_json = json.loads(cp.stdout)
    # The checkpoint signs the head, which is its own request's record.
    assert set(cp_json) == {"seq", "head_hash", "key_fingerprint"}
    assert cp_json["seq"] == head + 1

    out = tmp_path / "x.jsonl"
    since = str(head + 1)
    ex = runner.invoke(cli, [*base, "audit", "export", str(out), "--since", since, "--json"])
    assert ex.exit_code == 0, ex.output
    # the checkpoint request, the record naming it, the export, the record naming its own
    assert json.loads(ex.stdout) == {"records": 4, "checkpoints": 2, "path": str(out)}

    bad = runner.invoke(cli, [*base, "audit", "export", str(tmp_path / "no" / "x.jsonl"), "--json"])
    assert bad.exit_code == 1 and json.loads(bad.stdout)["error"] == "bad_request"


def test_an_unusable_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit_ed25519.pem"
    path.parent.mkdir()
    path.write_text("not a key")
    with pytest.raises(AirsideError) as e:
        Signer.load_or_create(path)
    assert e.value.code == "bad_key"
