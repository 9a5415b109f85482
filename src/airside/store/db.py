"""Engine and session factory; the schema is always brought to head by Alembic on open.

Two engines: SQLite (the embedded default, a file in the data directory) and PostgreSQL
(``postgresql+psycopg://...``, psycopg 3). The SQLite specifics (pragmas, BEGIN IMMEDIATE,
the write-ahead log) are set up for SQLite only; on PostgreSQL writers do not queue for
the whole database by themselves: every writing unit of work takes one transaction-scoped
advisory lock first (``_pg_begin``), the same guarantee SQLite's BEGIN IMMEDIATE gives."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# How long a unit of work waits for SQLite's write lock before giving up.
BUSY_TIMEOUT_MS = 60_000
BEGIN_OPTION = "airside_sqlite_begin"
# PostgreSQL advisory lock key that serialises writing units of work across every process
# on the store (arbitrary, fixed: "AIRSIDEA"). The audit chain's appenders take it too.
PG_WRITERS_LOCK = 0x4149_5253_4944_4541


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling starts a transaction only at the first write and
    # lets a SAVEPOINT commit on its own, so a batch was not all-or-nothing. Turn it off and
    # let SQLAlchemy emit BEGIN itself (``_sqlite_begin``), as SQLAlchemy's pysqlite notes
    # prescribe.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL keeps readers going during writes; FULL sync so a committed enrolment survives a crash.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # Erasure must not leave deleted templates readable in free pages of the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """Every unit of work takes SQLite's write lock when it starts (BEGIN IMMEDIATE), so
    that what it reads (the audit head, a gallery's revision, a subject) cannot change
    before it writes: concurrent writers queue on the lock instead of colliding. Read-only
    units (``Database.session(readonly=True)``) begin DEFERRED and never block writers."""
    mode = conn.get_execution_options().get(BEGIN_OPTION, "IMMEDIATE")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _pg_begin(conn: Connection) -> None:
    """Every writing unit of work on PostgreSQL waits for the writers' advisory lock before
    its first statement, and holds it to commit or rollback.

    Without it, two processes could each read "subject S exists, has consent" or "gallery
    G is at revision 7" under READ COMMITTED and both act on it (an enrolment racing an
    erasure, two enrolments claiming one reference). Writers are short (the slow work,
    decoding and embedding, happens before the unit of work starts) and every one of them
    appends to the audit chain, which is one linear sequence anyway, so serialising them
    whole costs little. Read-only units (READ ONLY transactions) never take it."""
    if conn.get_execution_options().get("postgresql_readonly"):
        return
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_WRITERS_LOCK})")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # The option goes through configparser: a "%" (a socket directory in the URL's query,
    # an escaped password) must be doubled.
    url = engine.url.render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> None:
    """Run migrations to head inside one connection (Alembic's env reads it from attributes)."""
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Database:
    """Owns the engine; ``session()`` yields a unit of work committed on success."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # hide_parameters: a database error's message never carries the row it was writing
        # (audit results, digests, scores) into a log or onto a terminal.
        connect_args: dict[str, Any] = {}
        if url.startswith("postgresql"):
            # A unit of work waits for the writers' lock (and any row lock) as long as one
            # waits for SQLite's write lock, then fails rather than hanging for ever.
            connect_args["options"] = f"-c lock_timeout={BUSY_TIMEOUT_MS}"
        self.engine = create_engine(
            url, future=True, hide_parameters=True, connect_args=connect_args
        )
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        elif self.dialect == "postgresql":
            event.listen(self.engine, "begin", _pg_begin)
        upgrade(self.engine)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        reader: Engine
        if self.dialect == "sqlite":
            reader = self.engine.execution_options(**{BEGIN_OPTION: "DEFERRED"})
        elif self.dialect == "postgresql":
            # READ ONLY transactions: a write in a read-only unit of work fails at once.
            reader = self.engine.execution_options(postgresql_readonly=True)
        else:
            reader = self.engine
        self._read_factory = sessionmaker(reader, expire_on_commit=False)

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises.

        On SQLite a writing session holds the database's write lock from its first
        statement to its commit; ``readonly`` sessions do not (and must not write; on
        PostgreSQL they are READ ONLY transactions, which refuse a write)."""
        factory = self._read_factory if readonly else self._factory
        with factory() as s, s.begin():
            yield s

    def compact_wal(self) -> None:
        """Fold the write-ahead log into the database and truncate it, so that old page
        versions (which may hold erased data) do not linger in the -wal file.

        SQLite only. PostgreSQL keeps deleted rows in dead tuples until (auto)VACUUM and
        in its WAL segments until they are recycled, in the server's files, outside the
        data directory: there, erasure removes the rows from every table in the same
        transaction, and the server's storage must be protected (encrypted, access
        controlled) as the database itself is."""
        if self.dialect == "sqlite":
            # Outside any transaction (a checkpoint cannot run inside one): the pooled
            # DBAPI connection is in autocommit mode, SQLAlchemy begins transactions itself.
            raw = self.engine.raw_connection()
            try:
                cur = raw.cursor()
                cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                cur.close()
            finally:
                raw.close()

    def dispose(self) -> None:
        self.engine.dispose()
