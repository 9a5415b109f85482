"""Faults of the store's surroundings, as errors a caller can act on.

A database server that is down or restarting, and a disk that is full, are not bugs: the
request may be tried again once the fault is gone, and nothing was half written (a unit
of work is one transaction, rolled back when it fails). ``store_fault`` names them with a
code the adapters map (HTTP: ``store_unavailable`` 503, ``disk_full`` 507; the CLI prints
the one line); anything else stays an unexpected error.

The driver's message is never carried over: it can quote the statement, its parameters, or
the server's address."""

from __future__ import annotations

import errno
import sqlite3

from sqlalchemy import exc as sa_exc

from airside.errors import AirsideError

# sqlite3's primary result codes (https://www.sqlite.org/rescode.html).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_FULL = 5, 6, 13
# PostgreSQL's SQLSTATE for a full disk on the database server (class 53, insufficient
# resources).
_PG_DISK_FULL = "53100"
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def unavailable() -> AirsideError:
    return AirsideError(
        "the store cannot be reached at the moment; nothing was changed, try again shortly",
        code="store_unavailable",
        details={"retry_after": 2},
    )


def disk_full() -> AirsideError:
    return AirsideError(
        "the disk that holds the store is full; nothing was changed (free some space, "
        "then try again)",
        code="disk_full",
    )


def store_fault(error: BaseException) -> AirsideError | None:
    """The caller's error for ``error`` when it is a fault of the store's surroundings (its
    server unreachable or restarting, a full disk); None for anything else."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:  # the error and what caused it
        seen.add(id(e))
        found = _fault_of(e)
        if found is not None:
            return found
        e = e.__cause__ or e.__context__
    return None


def _fault_of(e: BaseException) -> AirsideError | None:
    if isinstance(e, OSError) and e.errno in _NO_SPACE:
        return disk_full()
    if isinstance(e, sqlite3.Error):
        code = getattr(e, "sqlite_errorcode", 0) & 0xFF
        if code == _SQLITE_FULL:
            return disk_full()
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return unavailable()
        return None
    if isinstance(e, sa_exc.DBAPIError):
        if getattr(e.orig, "sqlstate", None) == _PG_DISK_FULL:
            return disk_full()
        if isinstance(e.orig, sqlite3.Error):
            return _fault_of(e.orig)
        # PostgreSQL's OperationalError: the server is down, restarting, refusing
        # connections or closed ours. A dropped connection is invalidated by SQLAlchemy
        # (the pool reconnects on the next checkout).
        broken = isinstance(e, sa_exc.OperationalError | sa_exc.InterfaceError)
        if e.connection_invalidated or broken:
            return unavailable()
    return None
