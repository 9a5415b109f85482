"""``airside store migrate``: an installation's store moves to another database whole, and
runs there. Real faces enrolled into SQLite, moved into a fresh PostgreSQL database (and
into a SQLite file, which works everywhere); a target that holds data is refused; a
migration killed halfway leaves the target empty, and a second one succeeds."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, delete, func, select, text
from sqlalchemy.engine import make_url
from tests.conftest import CliOnDir, png_bytes, store_bytes

from airside.config import Settings
from airside.errors import AirsideError
from airside.governance.consent import BasisInput
from airside.services import enrolment, events, galleries, matching, principal_admin
from airside.services.app import Airside
from airside.services.audit_service import verify_chain
from airside.services.store_transfer import MigrationReport, migrate_store
from airside.store import local_postgres, transfer
from airside.store.db import Database
from airside.store.tables import AuditRecord, Base, Event, Subject, Template
from airside.vision.analyzer import FaceAnalyzer

REPO = Path(__file__).resolve().parents[1]
GALLERY = "boarding"


@pytest.fixture
def pg_target(_test_database: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty PostgreSQL database: the suite's server's when it runs on PostgreSQL,
    else one created on the server ``postgres_admin_url`` finds (skipped when none)."""
    if _test_database is not None:
        yield _test_database.fresh(empty=True)
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    with local_postgres.scratch_database(admin_url, "airside_t") as url:
        yield url


@dataclass
class Installation:
    """A data directory whose store is a SQLite file, with two people enrolled."""

    data_dir: Path
    url: str
    analyzer: FaceAnalyzer
    probe: bytes
    subject: str
    score: float

    def open(self, url: str | None = None) -> Airside:
        settings = Settings(data_dir=self.data_dir, database_url=url or self.url)
        return Airside(settings, analyzer_factory=lambda _s: self.analyzer)


@pytest.fixture
def sqlite_install(
    tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray, hopper: np.ndarray
) -> Installation:
    data_dir = tmp_path / "data"
    inst = Installation(data_dir, f"sqlite:///{data_dir / 'airside.db'}", analyzer, b"", "", 0)
    app = inst.open()
    try:
        admin = principal_admin.ensure_local_admin(app)
        galleries.create_gallery(app, admin, GALLERY, GALLERY)
        for ref, face in (("S-ASTRO", astronaut), ("S-HOPPER", hopper)):
            enrolment.enrol(app, admin, GALLERY, ref, [png_bytes(face)], BasisInput("consent"))
        inst.probe = png_bytes(np.ascontiguousarray(astronaut[:, ::-1]))  # another photo
        found = matching.identify(app, admin, GALLERY, inst.probe)
        inst.subject, inst.score = found.candidates[0].subject, found.candidates[0].score
    finally:
        app.close()
    return inst


def migrate(inst: Installation, target: str, **kw: Any) -> MigrationReport:
    app = inst.open()
    try:
        return migrate_store(app, principal_admin.ensure_local_admin(app), target, **kw)
    finally:
        app.close()


def _plain(value: Any) -> str:
    """A value as text: bytes in hex, times as UTC instants (SQLite keeps no zone)."""
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat()
    return repr(value)


def rows_of(url: str) -> dict[str, set[str]]:
    """Every row of every table, as text."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table.name: {
                    repr(sorted((k, _plain(v)) for k, v in r._mapping.items()))
                    for r in conn.execute(select(table))
                }
                for table in Base.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def test_after_moving_to_postgresql_every_row_is_the_same_and_the_audit_chain_verifies(
    sqlite_install: Installation, pg_target: str
) -> None:
    rep = migrate(sqlite_install, pg_target)

    assert rep.tables["templates"] == 2 and rep.tables["subjects"] == 2
    assert rows_of(pg_target) == rows_of(sqlite_install.url)
    moved = sqlite_install.open(pg_target)
    try:
        assert moved.db.dialect == "postgresql"
        report = verify_chain(moved, principal_admin.ensure_local_admin(moved))
        assert report.ok, report.problems
        assert report.witness_seq is not None  # checked against the signed head kept outside
    finally:
        moved.close()


def test_after_moving_identify_finds_the_same_subject_with_the_same_score(
    sqlite_install: Installation, pg_target: str
) -> None:
    migrate(sqlite_install, pg_target)

    moved = sqlite_install.open(pg_target)
    try:
        found = matching.identify(
            moved, principal_admin.ensure_local_admin(moved), GALLERY, sqlite_install.probe
        )
    finally:
        moved.close()
    assert found.match
    assert found.candidates[0].subject == sqlite_install.subject == "S-ASTRO"
    assert found.candidates[0].score == pytest.approx(sqlite_install.score, abs=1e-6)


def test_after_moving_new_rows_take_ids_after_the_copied_ones(
    sqlite_install: Installation, pg_target: str, astronaut: np.ndarray
) -> None:
    migrate(sqlite_install, pg_target)

    moved = sqlite_install.open(pg_target)
    try:
        admin = principal_admin.ensure_local_admin(moved)
        other = astronaut.copy()
        other[0, 0] = (1, 2, 3)
        res = enrolment.enrol(
            moved, admin, GALLERY, "S-NEW", [png_bytes(other)], BasisInput("consent")
        )
        with moved.session(readonly=True) as s:
            new_subject = s.scalar(select(Subject.id).where(Subject.reference == "S-NEW"))
            new_template = s.scalar(select(func.max(Template.id)))
        assert res.templates == 1
        assert new_subject == 3 and new_template == 3
        assert verify_chain(moved, admin).ok
    finally:
        moved.close()


def test_an_erased_newest_event_id_is_not_handed_out_again_after_moving(
    sqlite_install: Installation, pg_target: str
) -> None:
    app = sqlite_install.open()
    try:
        admin = principal_admin.ensure_local_admin(app)
        first = events.record_system_event(
            app, admin, camera="gate-1", type_="stream_lost", at=1.0, detail="lost"
        )
        newest = events.record_system_event(
            app, admin, camera="gate-1", type_="stream_lost", at=2.0, detail="lost"
        )
        with app.session() as s:  # as the retention purge removes an event
            s.execute(delete(Event).where(Event.id == newest))
    finally:
        app.close()

    migrate(sqlite_install, pg_target)

    moved = sqlite_install.open(pg_target)
    try:
        admin = principal_admin.ensure_local_admin(moved)
        after = events.record_system_event(
            moved, admin, camera="gate-1", type_="stream_lost", at=3.0, detail="lost"
        )
    finally:
        moved.close()
    assert (first, newest, after) == (1, 2, 3)


def test_a_target_that_holds_data_is_refused_and_left_as_it_was(
    sqlite_install: Installation, pg_target: str
) -> None:
    migrate(sqlite_install, pg_target)
    before = rows_of(pg_target)

    with pytest.raises(AirsideError) as refused:
        migrate(sqlite_install, pg_target)

    assert refused.value.code == "target_not_empty"
    assert rows_of(pg_target) == before
    app = sqlite_install.open()
    try:
        with app.session(readonly=True) as s:
            last = s.scalar(select(AuditRecord).order_by(AuditRecord.seq.desc()).limit(1))
        assert last is not None
        assert (last.action, last.decision) == ("store.migrate", "refused:target_not_empty")
    finally:
        app.close()


def _run_child(*args: str) -> subprocess.CompletedProcess[str]:
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *inherited])}
    return subprocess.run(
        [sys.executable, "-m", "tests.store_child", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_migration_killed_halfway_leaves_the_target_empty_and_a_retry_succeeds(
    sqlite_install: Installation, request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    target = (
        request.getfixturevalue("pg_target")
        if kind == "postgresql"
        else f"sqlite:///{tmp_path / 'moved' / 'target.db'}"
    )
    counting = sqlite_install.open()
    with counting.db.engine.connect() as conn:
        total = sum(transfer.row_counts(conn).values())
    counting.close()
    kill_at = total // 2  # one row per INSERT: halfway through the copy

    killed = _run_child(
        "migrate", str(sqlite_install.data_dir), sqlite_install.url, target, str(kill_at)
    )

    assert killed.returncode == -9, killed.stderr[-3000:]
    engine = create_engine(target)
    try:
        with engine.connect() as conn:
            assert sum(transfer.row_counts(conn).values()) == 0
    finally:
        engine.dispose()
    rep = migrate(sqlite_install, target)
    assert rep.rows == total + 2  # and each attempt's store.migrate record on the source
    assert rows_of(target) == rows_of(sqlite_install.url)


def test_the_installation_s_own_store_moves_to_a_sqlite_file(
    app: Airside, tmp_path: Path, astronaut: np.ndarray
) -> None:
    """SQLite to SQLite on the default suite; PostgreSQL to SQLite when it runs on PostgreSQL."""
    admin = principal_admin.ensure_local_admin(app)
    galleries.create_gallery(app, admin, GALLERY, GALLERY)
    enrolment.enrol(app, admin, GALLERY, "S-1", [png_bytes(astronaut)], BasisInput("consent"))
    target = f"sqlite:///{tmp_path / 'moved.db'}"

    rep = migrate_store(app, admin, target)

    assert rep.setting == f"AIRSIDE_DATABASE_URL={target}"
    assert (tmp_path / "moved.db").stat().st_mode & 0o777 == 0o600
    assert rows_of(target) == rows_of(app.settings.db_url)
    moved = Airside(
        app.settings.model_copy(update={"database_url": target}),
        analyzer_factory=lambda _s: app.analyzer,
    )
    try:
        assert verify_chain(moved, admin).ok
        found = matching.identify(moved, admin, GALLERY, png_bytes(astronaut))
        assert found.candidates[0].subject == "S-1"
    finally:
        moved.close()


def test_the_command_prints_the_setting_and_never_the_password(
    cli_on_dir: CliOnDir, pg_target: str
) -> None:
    cli_on_dir.enrol(GALLERY, "S-1")
    url = make_url(pg_target)
    with_password = url.set(password="s3cret-pw").render_as_string(hide_password=False)

    res = cli_on_dir("store", "migrate", "--to", with_password)

    assert res.exit_code == 0, res.output
    assert "AIRSIDE_DATABASE_URL=" in res.output and "***" in res.output
    assert "s3cret-pw" not in res.output
    app = Airside(Settings(data_dir=cli_on_dir.data_dir))
    try:
        with app.session(readonly=True) as s:
            recorded = s.scalar(
                select(AuditRecord.result).where(AuditRecord.action == "store.migrate")
            )
        assert recorded is not None and "***" in recorded and "s3cret-pw" not in recorded
        assert b"s3cret-pw" not in store_bytes(app)
    finally:
        app.close()
    files = b"".join(p.read_bytes() for p in cli_on_dir.data_dir.rglob("*") if p.is_file())
    assert b"s3cret-pw" not in files
    assert "s3cret-pw" not in repr(rows_of(pg_target))


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("mysql://db/airside", "bad_database_url"),
        ("not a url", "bad_database_url"),
        ("SAME", "same_store"),
    ],
)
def test_a_target_that_is_not_a_usable_database_is_refused(
    app: Airside, target: str, code: str
) -> None:
    admin = principal_admin.ensure_local_admin(app)
    with pytest.raises(AirsideError) as refused:
        migrate_store(app, admin, app.settings.db_url if target == "SAME" else target)
    assert refused.value.code == code
    assert "--" not in str(refused.value)


def test_a_target_that_alters_what_it_is_given_is_found_out_and_keeps_nothing(
    sqlite_install: Installation, tmp_path: Path
) -> None:
    """The row digests are compared, not assumed: a hostile target whose trigger changes
    each template as it arrives is caught, and the copy rolled back."""
    target = f"sqlite:///{tmp_path / 'hostile.db'}"
    Database(target).dispose()  # the schema, empty
    engine = create_engine(target)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TRIGGER tamper AFTER INSERT ON templates BEGIN "
                "UPDATE templates SET quality = quality + 1 WHERE id = NEW.id; END"
            )
        )

    with pytest.raises(AirsideError) as refused:
        migrate(sqlite_install, target)

    assert refused.value.code == "migration_failed"
    assert "templates" in str(refused.value)
    with engine.connect() as conn:
        assert sum(transfer.row_counts(conn).values()) == 0
    engine.dispose()
