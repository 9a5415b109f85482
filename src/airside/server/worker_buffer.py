"""A camera worker's events on their way to the server: an ordered queue on disk.

Every event the worker's pipeline emits is appended here first (a SQLite file in the
worker's data directory, committed with a full sync), and leaves only when the server has
acknowledged it; so an event survives the server being away, the worker being killed, or
both. The sender reads from the head in order, and what it has in flight is neither
changed nor dropped. The file is created 0600: events name people.

The queue is bounded by a number of events and a number of bytes. When an event would not
fit, the oldest events that are not safety events are dropped to make room (the oldest
safety events only when nothing else is left), and the drop is itself queued as a system
event ``events_dropped`` with the count: one report, updated while it waits, never dropped.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from airside.private_files import prepare_sqlite_file

log = logging.getLogger("airside.worker")

DROPPED = "events_dropped"


class EventBuffer:
    def __init__(self, path: Path, *, max_events: int, max_bytes: int) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("the buffer must hold at least one event and one byte")
        self.path, self.max_events, self.max_bytes = path, max_events, max_bytes
        prepare_sqlite_file(path)  # 0600, in a folder created 0700
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an event appended is on disk
        # ``report``: the count of a drop report (a system event), NULL for anything else.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pending (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " safety INTEGER NOT NULL, size INTEGER NOT NULL, report INTEGER, body TEXT NOT NULL)"
        )
        self._lock = threading.Lock()
        self._in_flight = 0  # the sender has everything up to this seq in hand
        self.dropped = 0  # dropped by this process (the reports carry every drop)

    # -- the pipeline's side

    def append(self, event: dict[str, Any], *, safety: bool = False) -> None:
        body = json.dumps(event, separators=(",", ":"))
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            n, size = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM pending WHERE report IS NULL"
            ).fetchone()
            dropped = 0
            while n + 1 > self.max_events or size + len(body) > self.max_bytes:
                victim = self._victim()
                if victim is None:
                    break  # only events in flight are left: they leave soon
                self._db.execute("DELETE FROM pending WHERE seq = ?", (victim[0],))
                n, size, dropped = n - 1, size - victim[1], dropped + 1
            if dropped:
                self._report(dropped, event.get("at", 0.0))
            self._db.execute(
                "INSERT INTO pending (safety, size, body) VALUES (?, ?, ?)",
                (int(safety), len(body), body),
            )
        if dropped:
            self.dropped += dropped
            log.warning("event buffer full: %d older event(s) dropped", dropped)

    def _victim(self) -> tuple[int, int] | None:
        """The oldest event that may be dropped: not in flight, not a report; safety last."""
        row = self._db.execute(
            "SELECT seq, size FROM pending WHERE seq > ? AND report IS NULL"
            " ORDER BY safety, seq LIMIT 1",
            (self._in_flight,),
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def _report(self, dropped: int, at: Any) -> None:
        """Count ``dropped`` into the waiting drop report, or queue a new one."""
        row = self._db.execute(
            "SELECT seq, report, body FROM pending WHERE report IS NOT NULL AND seq > ?"
            " ORDER BY seq DESC LIMIT 1",
            (self._in_flight,),
        ).fetchone()
        total = dropped + (int(row[1]) if row is not None else 0)
        detail = (
            f"{total} event(s) dropped: the worker's buffer was full (at most "
            f"{self.max_events} events, {self.max_bytes} bytes) while the server was out of reach"
        )
        if row is not None:
            body = {**json.loads(row[2]), "detail": detail}
            self._db.execute(
                "UPDATE pending SET report = ?, body = ? WHERE seq = ?",
                (total, json.dumps(body, separators=(",", ":")), row[0]),
            )
            return
        at_s = float(at) if isinstance(at, int | float) else 0.0
        body = {"kind": "system", "key": str(uuid.uuid4()), "type": DROPPED, "at": at_s,
                "detail": detail, "started_at": time.time()}  # fmt: skip
        text = json.dumps(body, separators=(",", ":"))
        self._db.execute(
            "INSERT INTO pending (safety, size, report, body) VALUES (0, ?, ?, ?)",
            (len(text), total, text),
        )

    # -- the sender's side

    def head(self, max_events: int, max_bytes: int) -> list[tuple[int, dict[str, Any]]]:
        """The oldest events, in order: at most ``max_events``, and ``max_bytes`` unless the
        first alone is larger. They are in flight until :meth:`acknowledge`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, size, body FROM pending ORDER BY seq LIMIT ?", (max_events,)
            ).fetchall()
            out: list[tuple[int, dict[str, Any]]] = []
            total = 0
            for seq, size, body in rows:
                if out and total + size > max_bytes:
                    break
                out.append((int(seq), json.loads(body)))
                total += size
            self._in_flight = out[-1][0] if out else self._in_flight
            return out

    def acknowledge(self, through: int) -> None:
        """The server answered for every event up to ``through``: they leave the queue."""
        with self._lock, self._db:
            self._db.execute("DELETE FROM pending WHERE seq <= ?", (through,))
            self._in_flight = 0

    def release(self) -> None:
        """The events in flight did not reach the server: they wait (and may be dropped)
        like the others until the next :meth:`head`."""
        with self._lock:
            self._in_flight = 0

    def __len__(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM pending").fetchone()
            return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()
