"""Moving a store's rows between databases, table by table, and checking what arrived.

Engine-neutral (SQLAlchemy Core over ``tables.Base.metadata``) except where ids continue:
PostgreSQL's sequences and SQLite's ``sqlite_sequence`` must be told where the copied ids
end, or the next insert would reuse one. Used by the store migration
(``services/store_transfer.py``) and by the backups' manifests (``services/backup.py``).

Values travel as SQLAlchemy reads them: bytes, text and numbers exactly, times as instants.
A time read from SQLite carries no zone (SQLite keeps none); Airside writes UTC, so a time
without a zone is taken as UTC, as the services do when they read one. A row's *digest*
(``RowDigest``) is computed from the same canonical form on both sides, so "the target
holds the same rows" is checked, not assumed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Table, func, inspect, select, text
from sqlalchemy.engine import make_url

from airside.errors import AirsideError
from airside.store.db import BEGIN_OPTION, MIGRATIONS_DIR
from airside.store.tables import (
    AuditCheckpoint,
    AuditHead,
    AuditRecord,
    Base,
    Event,
    Gallery,
    Template,
    Webhook,
)

# (table, rows copied so far, rows in the table)
Progress = Callable[[str, int, int], None]
DEFAULT_BATCH_ROWS = 1000
_MOD = 1 << 256


def tables() -> list[Table]:
    """Airside's tables, parents before children (the order rows can be inserted in)."""
    return list(Base.metadata.sorted_tables)


# ---------------------------------------------------------------------------------------------
# URLs


def redact(url: str) -> str:
    """``url`` with its password hidden (``***``), for records, reports and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: say nothing of what it holds
        return "(an unreadable database URL)"


def same_database(a: str, b: str) -> bool:
    """Whether two URLs name the same database (same file, or same server and name)."""
    ua, ub = make_url(a), make_url(b)
    if ua.get_backend_name() != ub.get_backend_name():
        return False
    if ua.get_backend_name() == "sqlite":
        return bool(ua.database and ub.database) and (
            Path(str(ua.database)).resolve() == Path(str(ub.database)).resolve()
        )
    return (ua.host or "", ua.port or 5432, ua.database, ua.query.get("host")) == (
        ub.host or "",
        ub.port or 5432,
        ub.database,
        ub.query.get("host"),
    )


# ---------------------------------------------------------------------------------------------
# schema revisions


def _scripts() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg)


def head_revision() -> str:
    """The newest schema revision this version of Airside knows."""
    head = _scripts().get_current_head()
    assert head is not None
    return head


def known_revision(revision: str) -> bool:
    """Whether this version of Airside has the migration ``revision`` (it can bring a
    store at that revision to its head)."""
    try:
        return _scripts().get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an unknown or malformed id
        return False


def revision_of(conn: Connection) -> str | None:
    """The schema revision of the store ``conn`` is on (None: not an Airside store)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    value = conn.scalar(text("SELECT version_num FROM alembic_version"))
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# reading a consistent snapshot


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction that sees one moment of the store, however long it lasts:
    SQLite's deferred transaction in WAL mode (a reader keeps its snapshot), PostgreSQL's
    REPEATABLE READ. Writers carry on meanwhile; what they commit is not seen."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        elif engine.dialect.name == "sqlite":
            conn = conn.execution_options(**{BEGIN_OPTION: "DEFERRED"})
        with conn.begin():
            yield conn


def row_counts(conn: Connection) -> dict[str, int]:
    """Rows per Airside table."""
    return {t.name: int(conn.scalar(select(func.count()).select_from(t)) or 0) for t in tables()}


@dataclass(frozen=True)
class Inventory:
    """What a store holds, as a backup's manifest records it and a restore checks it."""

    revision: str | None
    counts: dict[str, int]
    audit_head_seq: int
    audit_head_hash: str | None
    # The template keys that rows are sealed under (templates, gallery seeds, event crops,
    # webhook secrets) and the keys that signed audit records and checkpoints.
    template_key_ids: list[str] = field(default_factory=list)
    audit_key_fingerprints: list[str] = field(default_factory=list)


def inventory(conn: Connection) -> Inventory:
    """The inventory of the store, read in ``conn``'s transaction."""
    head = conn.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).first()
    kids: set[str] = set()
    for col in (
        Template.key_id,
        Gallery.transform_key_id,
        Event.evidence_key_id,
        Webhook.secret_key_id,
    ):
        kids.update(k for k in conn.scalars(select(col).distinct()) if k is not None)
    fps: set[str] = set()
    for fcol in (AuditRecord.key_fingerprint, AuditCheckpoint.key_fingerprint):
        fps.update(k for k in conn.scalars(select(fcol).distinct()) if k is not None)
    return Inventory(
        revision=revision_of(conn),
        counts=row_counts(conn),
        audit_head_seq=int(head[0]) if head else 0,
        audit_head_hash=str(head[1]) if head else None,
        template_key_ids=sorted(kids),
        audit_key_fingerprints=sorted(fps),
    )


# ---------------------------------------------------------------------------------------------
# row digests


def _canonical(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b": bytes(value).hex()}
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return {"t": aware.astimezone(UTC).isoformat(timespec="microseconds")}
    if isinstance(value, float):
        return {"f": value.hex()}
    return value


class RowDigest:
    """A digest of a table's rows that does not depend on their order (the sum of each
    row's SHA-256 modulo 2^256): two databases may return rows in different orders (a text
    key sorts differently under another collation), the rows themselves must not differ."""

    def __init__(self) -> None:
        self._sum = 0
        self.rows = 0

    def add(self, row: Mapping[Any, Any]) -> None:
        canonical = json.dumps(
            {str(k): _canonical(v) for k, v in row.items()}, sort_keys=True, separators=(",", ":")
        )
        self._sum = (self._sum + int.from_bytes(hashlib.sha256(canonical.encode()).digest())) % _MOD
        self.rows += 1

    def hexdigest(self) -> str:
        return f"{self.rows}:{self._sum:064x}"


def _as_utc(value: Any) -> Any:
    """Times as aware UTC instants (SQLite keeps no zone: Airside's times there are UTC)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def table_digests(
    conn: Connection,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    on_progress: Progress | None = None,
    total: int = 0,
) -> dict[str, str]:
    """``RowDigest`` of every Airside table, read in ``conn``'s transaction (progress: one
    stage, ``digests``, over ``total`` rows)."""
    out = {}
    done = 0
    for table in tables():
        digest = RowDigest()
        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(
            select(table)
        )
        for part in result.partitions():
            for row in part:
                digest.add(row._mapping)
            done += len(part)
            if on_progress is not None:
                on_progress("digests", done, total)
        out[table.name] = digest.hexdigest()
    return out


# ---------------------------------------------------------------------------------------------
# copying


def copy_rows(
    source: Connection,
    target: Connection,
    counts: Mapping[str, int],
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    on_progress: Progress | None = None,
) -> dict[str, str]:
    """Insert every row of the store ``source`` sees into ``target``, parents first, keys
    kept, ``batch_rows`` at a time (never a whole table in memory). Returns the digest of
    what was read, table by table. The caller owns both transactions."""
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    digests = {}
    for table in tables():
        total = counts.get(table.name, 0)
        digest = RowDigest()
        stmt = select(table).order_by(*table.primary_key.columns)
        result = source.execution_options(stream_results=True, yield_per=batch_rows).execute(stmt)
        if on_progress is not None:
            on_progress(table.name, 0, total)
        for part in result.partitions():
            rows = []
            for row in part:
                digest.add(row._mapping)
                rows.append({k: _as_utc(v) for k, v in row._mapping.items()})
            target.execute(table.insert(), rows)
            if on_progress is not None:
                on_progress(table.name, digest.rows, total)
        digests[table.name] = digest.hexdigest()
    return digests


@contextmanager
def triggers_off(conn: Connection) -> Iterator[None]:
    """Airside's own triggers (PostgreSQL change notifications) stay silent while rows are
    copied in, inside ``conn``'s transaction: a fresh store has no listeners, and one
    notification per copied event would only fill the server's queue. Constraint triggers
    (foreign keys) stay on. Nothing to do on SQLite."""
    pg = conn.dialect.name == "postgresql"
    if pg:
        for table in tables():
            conn.exec_driver_sql(f'ALTER TABLE "{table.name}" DISABLE TRIGGER USER')
    yield
    if pg:
        for table in tables():
            conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ENABLE TRIGGER USER')


def _autoincrement(table: Table) -> str | None:
    col = table.autoincrement_column
    return None if col is None else col.name


def id_high_water(conn: Connection) -> dict[str, int]:
    """The highest id each table has handed out, which may be above its highest row (the
    newest event was erased): PostgreSQL's sequences, SQLite's ``sqlite_sequence`` for its
    AUTOINCREMENT tables, else the highest id present."""
    out: dict[str, int] = {}
    seqs: dict[str, int] = {}
    if conn.dialect.name == "sqlite" and _has_sqlite_sequence(conn):
        seqs = {
            str(n): int(s) for n, s in conn.execute(text("SELECT name, seq FROM sqlite_sequence"))
        }
    for table in tables():
        col = _autoincrement(table)
        if col is None:
            continue
        top = int(conn.scalar(select(func.max(table.c[col]))) or 0)
        if conn.dialect.name == "postgresql":
            seq = conn.scalar(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": col}
            )
            if seq is not None:
                last, called = conn.execute(
                    text(f"SELECT last_value, is_called FROM {seq}")  # a name PostgreSQL gave
                ).one()
                top = max(top, int(last) if called else int(last) - 1)
        top = max(top, seqs.get(table.name, 0))
        out[table.name] = top
    return out


def _has_sqlite_sequence(conn: Connection) -> bool:
    """SQLite creates ``sqlite_sequence`` with the first AUTOINCREMENT table."""
    found = conn.scalar(
        text("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'")
    )
    return bool(found)


def continue_ids(conn: Connection, high_water: Mapping[str, int]) -> None:
    """Make new rows in ``conn``'s store take ids above ``high_water`` (in its transaction)."""
    for table in tables():
        col = _autoincrement(table)
        if col is None:
            continue
        present = int(conn.scalar(select(func.max(table.c[col]))) or 0)
        top = max(high_water.get(table.name, 0), present)
        if conn.dialect.name == "postgresql":
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence(:t, :c), :v, :called)"),
                {"t": table.name, "c": col, "v": max(top, 1), "called": top > 0},
            )
        elif conn.dialect.name == "sqlite" and table.dialect_options["sqlite"].get("autoincrement"):
            if top == 0:
                continue
            updated = conn.execute(
                text("UPDATE sqlite_sequence SET seq = MAX(seq, :v) WHERE name = :t"),
                {"v": top, "t": table.name},
            ).rowcount
            if not updated:
                conn.execute(
                    text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :v)"),
                    {"v": top, "t": table.name},
                )


def require_empty(conn: Connection, what: str) -> None:
    """Refuse (``target_not_empty``) unless every Airside table of ``conn``'s store is empty."""
    held = {name: n for name, n in row_counts(conn).items() if n}
    if held:
        listed = ", ".join(f"{name} ({n})" for name, n in sorted(held.items()))
        raise AirsideError(
            f"{what} already holds data: {listed}. Nothing was copied; give an empty database",
            code="target_not_empty",
            details={"tables": held},
        )
