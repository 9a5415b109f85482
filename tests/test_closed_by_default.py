"""Closed by default: what Airside does when a setting, a file or an input is not what it
should be is to refuse, with a code, never to fall open.

- An API key that is set is used: empty, blank or malformed, it is refused (audited), never
  taken for the local administrator; only an unset ``AIRSIDE_API_KEY`` means the local user.
- The data directory is the owner's alone: 0700, and every file in it 0600 (the database
  and its -wal/-shm journals, keys, the error log), as are the files a command writes
  with personal data (a watch's event list and annotated video).
- No traceback reaches a user of the command line: a bad CSV, a place an export cannot be
  written to, or a damaged database are each answered with a code and a message; the last,
  unexpected, is logged (0600) without personal data under an incident number.
- A caller learns that a gallery does not exist only for a name it could be entitled to;
  any other name is out of its scope, whether or not such a gallery exists.

Real components throughout: SQLite under ``tmp_path``, the session's one dlib analyzer,
scikit-image's astronaut, the CLI through Typer's runner.
"""

from __future__ import annotations

import gc
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from tests.conftest import ON_POSTGRES, jpeg_bytes, png_bytes
from typer.testing import CliRunner

from airside.cli.main import app as cli_app
from airside.config import Settings
from airside.errors import AccessDenied, NotFoundError
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, events, galleries, matching, principal_admin
from airside.services.app import Airside
from airside.store.tables import AuditRecord, Gallery
from airside.vision.analyzer import FaceAnalyzer

CONSENT = BasisInput("consent")


@pytest.fixture(autouse=True)
def _shared_analyzer(analyzer: FaceAnalyzer, monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI runs use the session's analyzer (one model load) and only ``--data-dir``."""
    monkeypatch.setattr("airside.vision.factory.default_analyzer", lambda _settings: analyzer)
    for var in ("AIRSIDE_DATA_DIR", "AIRSIDE_API_KEY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems give a user (022): files are world-readable unless a mode is
    set on purpose, which is what these tests look for."""
    old = os.umask(0o022)
    yield
    os.umask(old)


class Cli:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str | None] | None = None) -> Any:
        return self.runner.invoke(
            cli_app, ["--data-dir", str(self.data_dir), *args], env=env, catch_exceptions=False
        )


def no_traceback(res: Any) -> None:
    """A clean exit with one error line, not a crash."""
    assert isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output and "Traceback" not in res.stderr, res.output


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def refusals(app: Airside, code: str) -> list[AuditRecord]:
    with app.session() as s:
        return list(s.scalars(select(AuditRecord).where(AuditRecord.decision == f"refused:{code}")))


def gallery_names(app: Airside) -> set[str]:
    with app.session() as s:
        return set(s.scalars(select(Gallery.name)))


# --------------------------------------------------------------------------------------------
# an API key that is set is used


@pytest.mark.parametrize(
    "key",
    ["", "   ", "\n", "as1_", "as1_0123456789ab_", "as1_0123456789ab_short", "Bearer as1_x"],
    ids=["empty", "blank", "newline", "prefix-only", "no-secret", "short-secret", "garbage"],
)
def test_a_set_but_empty_or_malformed_key_is_refused_not_taken_for_the_local_admin(
    app: Airside, tmp_path: Path, key: str
) -> None:
    principal_admin.ensure_local_admin(
        app
    )  # an installed system: the local user is its administrator
    app.close()
    cli = Cli(app.settings.data_dir)

    res = cli("gallery", "create", "mine", "--purpose", "anything", "--json",
              env={"AIRSIDE_API_KEY": key})  # fmt: skip

    assert res.exit_code == 1
    no_traceback(res)
    assert json.loads(res.stdout)["error"] == "bad_key"
    reopened = Airside(app.settings)
    try:
        assert "mine" not in gallery_names(reopened)
        [refused] = refusals(reopened, "bad_key")
        assert (refused.actor, refused.action) == ("anonymous", "auth")
    finally:
        reopened.close()


def test_only_an_unset_key_acts_as_the_local_user(app: Airside) -> None:
    principal_admin.ensure_local_admin(app)
    app.close()
    cli = Cli(app.settings.data_dir)

    res = cli("gallery", "create", "mine", "--purpose", "anything", "--json",
              env={"AIRSIDE_API_KEY": None})  # fmt: skip

    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["name"] == "mine"


# --------------------------------------------------------------------------------------------
# files with personal data are the owner's alone


@pytest.fixture
def enrolled(app: Airside, astronaut: np.ndarray) -> Principal:
    """Gallery 'gate-12' with the astronaut enrolled as PNR-1; returns its camera."""
    admin = principal_admin.ensure_local_admin(app)
    galleries.create_gallery(app, admin, "gate-12", "boarding")
    enrolment.enrol(app, admin, "gate-12", "PNR-1", [png_bytes(astronaut)], CONSENT)
    return principal_admin.add_principal(app, admin, "cam-12", "camera", [("gate-12", "*")])


def test_the_data_directory_and_every_file_in_it_are_private(
    usual_umask: None, tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    app = Airside(Settings(data_dir=tmp_path / "data"), analyzer_factory=lambda _s: analyzer)
    try:
        admin = principal_admin.ensure_local_admin(app)
        galleries.create_gallery(app, admin, "gate-12", "boarding")
        enrolment.enrol(app, admin, "gate-12", "PNR-1", [png_bytes(astronaut)], CONSENT)
        crop = jpeg_bytes(np.ascontiguousarray(astronaut[20:220, 140:330]), 90)
        events.record_identity_event(
            app, admin, camera="gate-12", track=1, subject="PNR-1", gallery="gate-12",
            score=0.9, first_seen=0.0, last_seen=1.0, crop_jpeg=crop,
        )  # fmt: skip
        data = app.settings.data_dir
        entries = [data, *data.rglob("*")]
        names = {p.relative_to(data).as_posix() for p in entries[1:]}
        # The database and, while it is open, its write-ahead log and shared memory (on
        # PostgreSQL the database is the server's, outside the data directory).
        if not ON_POSTGRES:
            assert {"airside.db", "airside.db-wal", "airside.db-shm"} <= names
        assert [p for p in entries if not private(p)] == []
    finally:
        app.close()


def test_a_data_directory_left_open_by_an_older_version_is_closed_on_opening(
    usual_umask: None, tmp_path: Path, analyzer: FaceAnalyzer
) -> None:
    data = tmp_path / "data"
    first = Airside(Settings(data_dir=data), analyzer_factory=lambda _s: analyzer)
    principal_admin.ensure_local_admin(first)
    first.close()
    data.chmod(0o755)
    files = [data] if ON_POSTGRES else [data, data / "airside.db"]
    for f in files[1:]:
        f.chmod(0o644)

    again = Airside(Settings(data_dir=data), analyzer_factory=lambda _s: analyzer)
    try:
        principal_admin.ensure_local_admin(again)
        assert all(private(f) for f in files)
    finally:
        again.close()


def test_a_watchs_event_list_and_annotated_video_are_private(
    usual_umask: None, app: Airside, enrolled: Principal, tmp_path: Path
) -> None:
    from airside.services.watch import WatchRequest, watch
    from airside.synthetic.clips import Sprite, make_video
    from airside.video.sources import open_source

    clip = tmp_path / "gate.mp4"
    make_video(
        clip, 12, (320, 240), 25, [Sprite("astronaut", "astronaut", (120, 140), ((160, 120),))]
    )
    request = WatchRequest(
        ["gate-12"], camera="gate-12", out=tmp_path / "seen.mp4", events_path=tmp_path / "ev.jsonl"
    )

    watch(app, enrolled, open_source(str(clip)), request)

    assert request.out is not None and request.events_path is not None
    assert "PNR-1" in request.events_path.read_text()  # it names who was seen
    assert private(request.events_path) and private(request.out)


# --------------------------------------------------------------------------------------------
# no traceback reaches a user


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    c = Cli(tmp_path / "data")
    res = c("gallery", "create", "boarding", "--purpose", "boarding", "--json")
    assert res.exit_code == 0, res.output
    return c


def test_a_csv_field_over_the_csv_limit_is_refused_with_a_code(cli: Cli, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("subject,image\n" + "P" * 131_073 + ",photo.jpg\n", encoding="utf-8")

    res = cli("enrol", "--gallery", "boarding", "--csv", str(manifest), "--basis", "consent",
              "--json")  # fmt: skip

    assert res.exit_code == 1
    no_traceback(res)
    body = json.loads(res.stdout)
    assert body["error"] == "bad_csv" and "line 2" in body["message"]


@pytest.mark.parametrize("where", ["name too long", "read-only folder"])
def test_an_audit_export_to_a_place_it_cannot_write_is_refused_with_a_code(
    cli: Cli, tmp_path: Path, where: str
) -> None:
    if where == "name too long":
        dest = tmp_path / ("x" * 300 + ".jsonl")
    else:
        if os.geteuid() == 0:
            pytest.skip("the superuser writes into read-only folders")
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
        dest = folder / "audit.jsonl"

    res = cli("audit", "export", str(dest), "--json")

    assert res.exit_code == 1
    no_traceback(res)
    assert json.loads(res.stdout)["error"] == "cannot_write"
    assert not dest.parent.exists() or not any(dest.parent.glob("*.jsonl*"))


def damage_database(cli: Cli) -> tuple[str, str]:
    """Break the store behind Airside's back; the type of the error that follows, and a
    phrase of its message (which must never be logged)."""
    if ON_POSTGRES:  # the server's files are not ours to overwrite: drop a table instead
        from sqlalchemy import create_engine, text

        engine = create_engine(Settings(data_dir=cli.data_dir).db_url)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE galleries CASCADE"))
        engine.dispose()
        return "ProgrammingError", "does not exist"
    # The CLI runs in this process: a connection an earlier command left for the garbage
    # collector would, when collected, checkpoint its WAL over the damage and mend the file
    # (one CI run saw `subjects` succeed here). Close them all before damaging it.
    gc.collect()
    db = cli.data_dir / "airside.db"
    for journal in ("airside.db-wal", "airside.db-shm"):
        (cli.data_dir / journal).unlink(missing_ok=True)
    db.write_bytes(b"this is no longer a database " * 512)
    return "DatabaseError", "not a database"


def test_an_unexpected_failure_is_answered_with_a_code_and_no_traceback(cli: Cli) -> None:
    damage_database(cli)

    res = cli("galleries")

    assert res.exit_code == 70
    no_traceback(res)
    line = " ".join(res.stderr.split())
    assert line.startswith("error (internal_error): `airside galleries` stopped on an")


def test_an_unexpected_failure_with_json_is_machine_readable(cli: Cli) -> None:
    damage_database(cli)

    res = cli("subjects", "--gallery", "boarding", "--json")

    assert res.exit_code == 70
    no_traceback(res)
    body = json.loads(res.stdout)
    assert body["error"] == "internal_error" and body["incident"] in body["message"]


def test_an_unexpected_failure_is_logged_privately_without_its_message_or_arguments(
    usual_umask: None, cli: Cli
) -> None:
    error, message = damage_database(cli)

    res = cli("subjects", "--gallery", "PNR-SECRET-GALLERY", "--json")

    incident = json.loads(res.stdout)["incident"]
    log = cli.data_dir / "logs" / "errors.log"
    assert private(log) and private(log.parent)
    text = log.read_text()
    assert f"incident {incident} in `airside subjects`" in text
    assert error in text and 'File "' in text  # the type and where it happened
    assert message not in text  # never the message (a database's may quote rows)
    assert "PNR-SECRET-GALLERY" not in text  # never the arguments


# --------------------------------------------------------------------------------------------
# scope errors do not tell which galleries exist


@pytest.fixture
def agent(app: Airside, enrolled: Principal) -> Principal:
    """An operator for boarding galleries only; 'seamless' exists and is not one of them."""
    admin = principal_admin.ensure_local_admin(app)
    galleries.create_gallery(app, admin, "seamless", "seamless-travel")
    return principal_admin.add_principal(app, admin, "agent", "operator", [("gate-*", "*")])


def test_a_gallery_outside_the_scope_is_out_of_scope_whether_or_not_it_exists(
    app: Airside, agent: Principal, astronaut: np.ndarray
) -> None:
    probe = jpeg_bytes(astronaut, 70)
    with pytest.raises(AccessDenied) as existing:
        matching.identify(app, agent, "seamless", probe)
    with pytest.raises(AccessDenied) as missing:
        matching.identify(app, agent, "no-such-gallery", probe)

    assert existing.value.code == missing.value.code == "out_of_scope"
    assert str(missing.value) == str(existing.value).replace("seamless", "no-such-gallery")
    assert [r.gallery for r in refusals(app, "out_of_scope")] == ["seamless", "no-such-gallery"]


def test_a_caller_entitled_to_the_name_learns_that_the_gallery_does_not_exist(
    app: Airside, agent: Principal, astronaut: np.ndarray
) -> None:
    with pytest.raises(NotFoundError) as e:
        matching.identify(app, agent, "gate-99", jpeg_bytes(astronaut, 70))
    assert e.value.code == "not_found"
