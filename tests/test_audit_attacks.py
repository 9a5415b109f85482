"""An attacker who can write the database, but holds no key, cannot rewrite the audit log
unseen: every way of doing it makes ``audit verify`` fail.

The attacker here works on the database directly (the SQLite file, or the PostgreSQL
database when AIRSIDE_TEST_DATABASE_URL is set), as someone with database access would,
after the newest signed checkpoint (where hashes alone used to be all there was).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import ON_POSTGRES, SQLITE_ONLY, register
from typer.testing import CliRunner

from airside.config import Settings
from airside.governance import audit
from airside.governance.principals import Principal
from airside.services import galleries
from airside.services.app import Airside
from airside.services.audit_service import make_checkpoint, verify_chain

ADMIN = Principal("admin-1", "admin")
FIELDS = audit._FIELDS


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Airside]:
    a = Airside(Settings(data_dir=tmp_path / "data"))
    register(a, ADMIN)
    make_checkpoint(a, ADMIN)  # the attacks below all touch records after this one
    for _ in range(6):
        galleries.list_galleries(a, ADMIN)
    yield a
    a.close()


class _Row(tuple[Any, ...]):
    """A row by position or by column name, as ``sqlite3.Row``."""

    _names: tuple[str, ...]

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        return super().__getitem__(self._names.index(key) if isinstance(key, str) else key)

    def keys(self) -> tuple[str, ...]:
        return self._names


class _PgCursor:
    def __init__(self, cur: Any) -> None:
        self._cur = cur
        names = tuple(d.name for d in cur.description or ())
        self._make = lambda values: _with_names(values, names)

    def fetchone(self) -> _Row | None:
        row = self._cur.fetchone()
        return None if row is None else self._make(row)

    def fetchall(self) -> list[_Row]:
        return [self._make(r) for r in self._cur.fetchall()]


def _with_names(values: Sequence[Any], names: tuple[str, ...]) -> _Row:
    row = _Row(values)
    row._names = names
    return row


class _PgAttacker:
    """The same statements as the SQLite attacker's, on PostgreSQL (autocommit)."""

    def __init__(self, url: str) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        self._conn = psycopg.connect(conninfo, autocommit=True)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _PgCursor:
        return _PgCursor(self._conn.execute(sql.replace("?", "%s"), list(params)))

    def close(self) -> None:
        self._conn.close()


@pytest.fixture
def db(app: Airside) -> Iterator[Any]:
    if ON_POSTGRES:
        pg = _PgAttacker(app.settings.db_url)
        yield pg
        pg.close()
        return
    app.db.compact_wal()
    conn = sqlite3.connect(app.settings.data_dir / "airside.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    yield conn
    conn.close()


def problems(app: Airside) -> set[str]:
    app.db.dispose()  # the attacker's writes are seen by a fresh connection
    report = verify_chain(app, ADMIN)
    return {p["problem"] for p in report.problems}


def last_seq(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT max(seq) FROM audit_log").fetchone()[0])


def rehash_from(db: sqlite3.Connection, seq: int) -> None:
    """Recompute every hash from record ``seq`` on, and the head: the hash chain alone is
    consistent again, as a forger who knows the (public) hashing rule would leave it."""
    rows = db.execute("SELECT * FROM audit_log WHERE seq >= ? ORDER BY seq", (seq,)).fetchall()
    prev = db.execute("SELECT hash FROM audit_log WHERE seq = ?", (seq - 1,)).fetchone()
    prev_hash = prev[0] if prev else audit.GENESIS
    for row in rows:
        fields = {k: row[k] for k in FIELDS}
        fields["prev_hash"] = prev_hash
        h = audit.record_hash(fields)
        db.execute(
            "UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?", (prev_hash, h, row["seq"])
        )
        prev_hash = h
    top = db.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (top[0], top[1]))


def test_the_untouched_log_verifies_and_every_record_is_signed(app: Airside) -> None:
    report = verify_chain(app, ADMIN)
    assert report.ok, report.problems
    assert report.signed_records == report.records > 0
    assert report.witness_seq == report.last_seq


def test_an_edited_record_is_found(app: Airside, db: sqlite3.Connection) -> None:
    db.execute("UPDATE audit_log SET decision = 'match' WHERE seq = ?", (last_seq(db) - 1,))
    assert "altered" in problems(app)


def test_an_edit_with_every_hash_recomputed_is_found(app: Airside, db: sqlite3.Connection) -> None:
    seq = last_seq(db) - 2
    db.execute("UPDATE audit_log SET actor = 'someone-else' WHERE seq = ?", (seq,))
    rehash_from(db, seq)
    assert "bad_signature" in problems(app)


def test_a_deleted_record_with_later_ones_renumbered_is_found(
    app: Airside, db: sqlite3.Connection
) -> None:
    seq = last_seq(db) - 2
    db.execute("DELETE FROM audit_log WHERE seq = ?", (seq,))
    db.execute("UPDATE audit_log SET seq = seq - 1 WHERE seq > ?", (seq,))
    rehash_from(db, seq)
    assert "bad_signature" in problems(app)


def test_an_inserted_record_is_found(app: Airside, db: sqlite3.Connection) -> None:
    seq = last_seq(db) - 1
    db.execute("UPDATE audit_log SET seq = seq + 1000 WHERE seq >= ?", (seq,))
    db.execute("UPDATE audit_log SET seq = seq - 999 WHERE seq >= ?", (seq + 1000,))
    row = dict(db.execute("SELECT * FROM audit_log WHERE seq = ?", (seq - 1,)).fetchone())
    row.update(seq=seq, action="identify", decision="no_match", hash="x" * 64)
    db.execute(
        f"INSERT INTO audit_log ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        list(row.values()),
    )
    rehash_from(db, seq)
    assert problems(app) & {"bad_signature", "unsigned"}


def test_an_appended_record_is_found(app: Airside, db: sqlite3.Connection) -> None:
    seq = last_seq(db)
    row = dict(db.execute("SELECT * FROM audit_log WHERE seq = ?", (seq,)).fetchone())
    row.update(seq=seq + 1, signature=None, key_fingerprint=None, hash="y" * 64)
    db.execute(
        f"INSERT INTO audit_log ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        list(row.values()),
    )
    rehash_from(db, seq + 1)
    assert "unsigned" in problems(app)


def test_an_appended_record_carrying_a_copied_signature_is_found(
    app: Airside, db: sqlite3.Connection
) -> None:
    seq = last_seq(db)
    row = dict(db.execute("SELECT * FROM audit_log WHERE seq = ?", (seq,)).fetchone())
    row.update(seq=seq + 1, hash="z" * 64)  # keeps record ``seq``'s signature
    db.execute(
        f"INSERT INTO audit_log ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        list(row.values()),
    )
    rehash_from(db, seq + 1)
    assert "bad_signature" in problems(app)


def test_reordered_records_are_found(app: Airside, db: sqlite3.Connection) -> None:
    a = last_seq(db) - 2
    db.execute("UPDATE audit_log SET seq = -1 WHERE seq = ?", (a,))
    db.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (a, a + 1))
    db.execute("UPDATE audit_log SET seq = ? WHERE seq = -1", (a + 1,))
    rehash_from(db, a)
    assert "bad_signature" in problems(app)


def test_a_cut_tail_with_the_head_fixed_is_found(app: Airside, db: sqlite3.Connection) -> None:
    top = last_seq(db)
    db.execute("DELETE FROM audit_log WHERE seq > ?", (top - 3,))
    new = db.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (new[0], new[1]))
    # every remaining record still carries a valid signature: only the witness can tell
    assert problems(app) == {"rolled_back"}


def test_a_deleted_checkpoint_is_found(app: Airside, db: sqlite3.Connection) -> None:
    assert db.execute("SELECT count(*) FROM audit_checkpoints").fetchone()[0] >= 1
    db.execute("DELETE FROM audit_checkpoints")
    assert "checkpoint_deleted" in problems(app)


def test_stripped_signatures_on_a_rewritten_log_are_found(
    app: Airside, db: sqlite3.Connection
) -> None:
    db.execute("UPDATE audit_log SET decision = 'match' WHERE seq = 3")
    db.execute("UPDATE audit_log SET signature = NULL, key_fingerprint = NULL")
    db.execute("DELETE FROM audit_checkpoints")
    rehash_from(db, 1)
    found = problems(app)
    assert "unsigned" in found and "forked" in found


@SQLITE_ONLY  # PostgreSQL: the variant below restores a copy made by CREATE DATABASE
def test_a_database_restored_from_an_earlier_copy_is_found(app: Airside, tmp_path: Path) -> None:
    app.db.compact_wal()
    app.db.dispose()
    copy = tmp_path / "backup.db"
    shutil.copy(app.settings.data_dir / "airside.db", copy)
    for _ in range(3):
        galleries.list_galleries(app, ADMIN)
    app.db.compact_wal()
    app.db.dispose()
    shutil.copy(copy, app.settings.data_dir / "airside.db")
    assert problems(app) == {"rolled_back"}


@pytest.mark.skipif(not ON_POSTGRES, reason="the SQLite variant is the test above")
def test_a_postgresql_database_restored_from_an_earlier_copy_is_found(
    app: Airside, _pg_admin: Any
) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = make_url(app.settings.db_url).database
    copy = f"{name}_copy"
    app.db.dispose()  # CREATE DATABASE ... TEMPLATE needs the source without connections
    with _pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"'))
    try:
        for _ in range(3):
            galleries.list_galleries(app, ADMIN)
        app.db.dispose()
        with _pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            conn.execute(text(f'ALTER DATABASE "{copy}" RENAME TO "{name}"'))
        assert problems(app) == {"rolled_back"}
    finally:
        with _pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)'))


def test_a_forged_witness_is_found(app: Airside) -> None:
    path = app.settings.data_dir / "keys" / "audit_witness.json"
    head = json.loads(path.read_text())
    head["seq"] += 5
    head["hash"] = hashlib.sha256(b"forged").hexdigest()
    path.write_text(json.dumps(head))
    assert problems(app) == {"witness_invalid"}


def test_the_witness_only_moves_forward(app: Airside) -> None:
    path = app.settings.data_dir / "keys" / "audit_witness.json"
    before = json.loads(path.read_text())
    older = audit.SignedHead(1, "0" * 64, "00", "x", "t")  # e.g. a slow process, late
    app.witness.record(older)
    assert json.loads(path.read_text()) == before


def test_the_cli_says_how_much_a_signature_covers(app: Airside) -> None:
    from airside.cli.main import app as cli

    res = CliRunner().invoke(cli, ["--data-dir", str(app.settings.data_dir), "audit", "verify"])
    assert res.exit_code == 0, res.output
    assert "records signed" in res.output and "kept outside" in res.output


def test_a_legacy_unsigned_log_is_adopted_once(tmp_path: Path) -> None:
    from airside.store.db import Database

    data_dir = tmp_path / "old"
    data_dir.mkdir()
    old = Database(Settings(data_dir=data_dir).db_url)
    for i in range(3):
        with old.session() as s:  # as a release before signed records wrote them
            audit.append(s, ADMIN, "identify", decision="no_match", result={"i": i})
    old.dispose()
    app = Airside(Settings(data_dir=data_dir))
    try:
        register(app, ADMIN)
        report = verify_chain(app, ADMIN)
        assert report.ok, report.problems
        assert report.signed_records == report.records
    finally:
        app.close()
