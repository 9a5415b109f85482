"""Moving an installation's store to another database (normally: embedded SQLite to
PostgreSQL), whole and checked.

The copy is one transaction on the target: the target is brought to the schema head, must
be empty, receives every row of every table (parents first, keys kept, in batches) and has
its id sequences moved past the copied ids; then, still inside that transaction, row counts
and row digests are compared with what was read and the audit chain is verified as
``audit verify`` does (records, signatures, checkpoints, and the signed head kept outside
the database). Only then does it commit. A crash or a failed check leaves the target empty.

The source is read in one snapshot, after the ``store.migrate`` record has been appended
to it (so the copy holds its own record). Nothing is written to the source afterwards
unless the migration fails (the refusal is recorded there): the source and the target are
then the same log, and the installation's witness matches both. Writes that other
processes make to the source during the copy are not in it; the witness check notices
them, and the migration is refused (stop every process that uses the store first).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from airside.errors import AirsideError
from airside.governance import audit
from airside.governance.principals import Principal
from airside.private_files import prepare_sqlite_file
from airside.services.app import Airside
from airside.services.audit_service import verify_in
from airside.services.authz import authorize
from airside.store import transfer
from airside.store.db import Database

ACTION = "store.migrate"
SETTING = "AIRSIDE_DATABASE_URL"


@dataclass
class MigrationReport:
    source: str  # both URLs with their passwords hidden
    target: str
    tables: dict[str, int]
    audit_records: int
    seconds: float
    # What points the installation at the new store (the password is to be filled in).
    setting: str
    checks: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "rows": self.rows}


def _check_url(app: Airside, url: str) -> str:
    """The target's engine (``postgresql`` or ``sqlite``), or a refusal saying why not."""
    try:
        backend = make_url(url).get_backend_name()
    except Exception:
        raise AirsideError(
            "the target is not a database URL (postgresql+psycopg://USER@HOST:PORT/DB or "
            "sqlite:////PATH)",
            code="bad_database_url",
            details={"field": "to"},
        ) from None
    if backend not in ("postgresql", "sqlite") or (
        backend == "postgresql" and make_url(url).get_driver_name() != "psycopg"
    ):
        raise AirsideError(
            f"the target {transfer.redact(url)} is neither PostgreSQL through psycopg "
            "(postgresql+psycopg://...) nor SQLite (sqlite:////PATH)",
            code="bad_database_url",
            details={"field": "to"},
        )
    if transfer.same_database(url, app.settings.db_url):
        raise AirsideError(
            f"the target {transfer.redact(url)} is the installation's own store",
            code="same_store",
            details={"field": "to"},
        )
    return backend


def migrate_store(
    app: Airside,
    principal: Principal,
    target_url: str,
    *,
    batch_rows: int = transfer.DEFAULT_BATCH_ROWS,
    on_progress: transfer.Progress | None = None,
) -> MigrationReport:
    """Copy the installation's store into the empty database ``target_url`` and check it
    there (see the module docstring). Administrators only; audited as ``store.migrate``."""
    shown = transfer.redact(target_url)
    authorize(app, principal, ACTION)
    try:
        return _migrate(app, principal, target_url, shown, batch_rows, on_progress)
    except AirsideError as e:
        app.audit_refusal(principal, ACTION, e, extra={"target": shown})
        raise


def _migrate(
    app: Airside,
    principal: Principal,
    target_url: str,
    shown: str,
    batch_rows: int,
    on_progress: transfer.Progress | None,
) -> MigrationReport:
    started = time.monotonic()
    backend = _check_url(app, target_url)
    if backend == "sqlite":
        prepare_sqlite_file(target_url)  # 0600 in a 0700 folder, before SQLite creates it
    try:
        target = Database(target_url)  # brings it to the schema head
    except SQLAlchemyError as e:
        raise AirsideError(
            f"cannot open the target {shown}: {type(e.__cause__ or e).__name__}: "
            f"{str(e.__cause__ or e).splitlines()[0]}",
            code="bad_database_url",
            details={"field": "to"},
        ) from None
    try:
        with target.engine.connect() as probe:
            transfer.require_empty(probe, f"the target {shown}")
            probe.rollback()
        with app.session() as s:
            audit.append(
                s,
                principal,
                ACTION,
                decision="copying",
                result={"source": transfer.redact(app.settings.db_url), "target": shown},
            )
        with transfer.snapshot(app.db.engine) as src:
            counts = transfer.row_counts(src)
            high = transfer.id_high_water(src)
            with target.engine.begin() as dst:
                transfer.require_empty(dst, f"the target {shown}")
                with transfer.triggers_off(dst):
                    read = transfer.copy_rows(
                        src, dst, counts, batch_rows=batch_rows, on_progress=on_progress
                    )
                transfer.continue_ids(dst, high)
                checks, records = _check_copy(app, dst, counts, read, on_progress)
    except SQLAlchemyError as e:
        raise AirsideError(
            f"the copy into {shown} failed and was rolled back (the target holds nothing): "
            f"{type(e.__cause__ or e).__name__}: {str(e.__cause__ or e).splitlines()[0]}",
            code="migration_failed",
        ) from None
    finally:
        target.dispose()
    return MigrationReport(
        source=transfer.redact(app.settings.db_url),
        target=shown,
        tables=counts,
        audit_records=records,
        seconds=round(time.monotonic() - started, 3),
        setting=f"{SETTING}={shown}",
        checks=checks,
    )


def _check_copy(
    app: Airside,
    dst: Connection,
    counts: dict[str, int],
    read: dict[str, str],
    on_progress: transfer.Progress | None,
) -> tuple[list[str], int]:
    """Inside the target's transaction: the same rows, and an audit chain that verifies.
    Raises (rolling the copy back) when anything differs."""
    arrived = transfer.row_counts(dst)
    wrong = {t: (counts[t], arrived.get(t)) for t in counts if arrived.get(t) != counts[t]}
    if wrong:
        raise AirsideError(
            f"rows differ after the copy ({wrong}); nothing was kept", code="migration_failed"
        )
    digests = transfer.table_digests(dst, on_progress=on_progress, total=sum(counts.values()))
    differ = sorted(t for t in read if digests.get(t) != read[t])
    if differ:
        raise AirsideError(
            f"the copied rows of {', '.join(differ)} differ from the source; nothing was kept",
            code="migration_failed",
        )
    with Session(bind=dst) as s:
        report = verify_in(app, s)
    if not report.ok:
        first = report.problems[0]
        raise AirsideError(
            f"the audit chain does not verify on the target (record {first['seq']}: "
            f"{first['detail']}); nothing was kept. When other processes wrote to the store "
            "during the copy, stop them and migrate again",
            code="audit_chain_broken",
            details={"problems": report.problems[:20]},
        )
    checks = [
        f"rows equal in all {len(counts)} tables",
        "row digests equal in every table",
        f"audit chain verifies ({report.records} records, {report.signed_records} signed)",
    ]
    return checks, report.records
