"""Following the store's changes as they commit (PostgreSQL LISTEN/NOTIFY).

Several processes share one PostgreSQL store: API servers, camera workers, CLI calls. The
triggers of migration 0014 announce, at commit, every gallery whose templates or
transform changed (channel ``airside_galleries``, payload the gallery id) and every new
event (``airside_events``, payload the event id). A ``ChangeListener`` holds one
connection that LISTENs to both and calls back from its own thread.

Notifications make following prompt; they are not what makes it correct. A search still
reads the gallery's revision in its own transaction (``Airside.index_with_transform``),
and event followers still read "the events above the last id" from the store, so a
notification lost while the connection was down costs latency, never a wrong answer.
After a reconnection every callback is called with ``None``: "something may have changed".
SQLite has no NOTIFY; there the revision check and the event poll do all the work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

log = logging.getLogger("airside.store.notifications")

GALLERIES = "airside_galleries"
EVENTS = "airside_events"
CHANNELS = (GALLERIES, EVENTS)
# Reconnect after a lost connection no sooner than this, doubling up to RECONNECT_MAX_S.
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0

#: Called with (channel, payload); payload None after a reconnection (anything may have
#: changed meanwhile).
OnChange = Callable[[str, str | None], None]


def supports_notifications(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def _conninfo(url: str) -> str:
    """A libpq URI from SQLAlchemy's (``postgresql+psycopg://`` loses its driver part)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class ChangeListener:
    """One thread, one connection, LISTEN on ``CHANNELS``; ``on_change`` is called from
    that thread, so it must be quick or hand the work on."""

    def __init__(self, url: str, on_change: OnChange) -> None:
        if not supports_notifications(url):
            raise ValueError("change notifications need a PostgreSQL store")
        self._conninfo = _conninfo(url)
        self._on_change = on_change
        self._stop = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="store-changes", daemon=True)
        self.listening = threading.Event()  # set while LISTEN is in force (tests wait on it)

    def start(self) -> ChangeListener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        delay = RECONNECT_MIN_S
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    for channel in CHANNELS:
                        conn.execute(f"LISTEN {channel}")
                    self.listening.set()
                    delay = RECONNECT_MIN_S
                    if not first:  # notifications sent while we were away are lost
                        for channel in CHANNELS:
                            self._deliver(channel, None)
                    first = False
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._deliver(note.channel, note.payload)
            except psycopg.Error as e:
                self.listening.clear()
                log.warning("store change listener lost its connection (%s); retrying in %.1f s",
                            type(e).__name__, delay)  # fmt: skip
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
        self.listening.clear()

    def _deliver(self, channel: str, payload: str | None) -> None:
        try:
            self._on_change(channel, payload)
        except Exception:  # a failing follower must not stop the others being told
            log.exception("store change follower failed on %s", channel)
