"""A batch enrolment is all or nothing; with ``skip_refused`` each subject is. Killed with
SIGKILL at random points of its work, it leaves either nothing or everything of each unit,
and an audit chain that verifies."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select
from tests.conftest import ON_POSTGRES, DatabaseCopies, png_bytes, register

from airside.config import DetectorSettings, Settings
from airside.errors import ConflictError
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries
from airside.services.app import Airside
from airside.services.audit_service import verify_chain
from airside.store.tables import AuditRecord, LegalBasis, Subject, Template

REPO = Path(__file__).resolve().parents[1]
OFFICER = Principal("officer-7", "admin")
GALLERY = "boarding-KE123"
PURPOSE = "boarding:KE123:2026-11-26"
CONSENT = BasisInput("consent", evidence_sha256="ab" * 32)
# SIGKILLs per mode: 10 on SQLite; 5 in `make test`'s PostgreSQL pass, to keep the suite
# within its time (each kill is a child process enrolling real faces, ~7 s).
KILLS_PER_MODE = 5 if ON_POSTGRES else 10


def _variant(image: np.ndarray, n: int) -> bytes:
    out = image.copy()
    out[0, 0] = (n, 5, 9)
    return png_bytes(out)


def _gallery_with_one_subject(app: Airside, astronaut: np.ndarray) -> bytes:
    """The gallery, with PNR-OTHER enrolled; the photo they were enrolled with."""
    register(app, OFFICER)
    galleries.create_gallery(app, OFFICER, GALLERY, PURPOSE)
    taken = _variant(astronaut, 3)
    enrolment.enrol(app, OFFICER, GALLERY, "PNR-OTHER", [taken], CONSENT)
    return taken


def test_a_conflict_in_the_third_row_leaves_nothing_enrolled(
    app: Airside, astronaut: np.ndarray
) -> None:
    taken = _gallery_with_one_subject(app, astronaut)
    rows = [
        enrolment.EnrolRow("PNR-1", _variant(astronaut, 1), CONSENT),
        enrolment.EnrolRow("PNR-2", _variant(astronaut, 2), CONSENT),
        enrolment.EnrolRow("PNR-3", taken, CONSENT),  # already enrolled for PNR-OTHER
    ]
    with pytest.raises(ConflictError):
        enrolment.enrol_batch(app, OFFICER, GALLERY, rows)
    with app.session(readonly=True) as s:
        refs = set(s.scalars(select(Subject.reference)))
        assert refs == {"PNR-OTHER"}
        assert s.scalar(select(func.count()).select_from(Template)) == 1
        assert s.scalar(select(func.count()).select_from(LegalBasis)) == 1
    assert verify_chain(app, OFFICER).ok


def test_with_skip_refused_the_conflicting_row_is_listed_and_the_rest_enrolled(
    app: Airside, astronaut: np.ndarray
) -> None:
    taken = _gallery_with_one_subject(app, astronaut)
    rows = [
        enrolment.EnrolRow("PNR-1", _variant(astronaut, 1), CONSENT),
        enrolment.EnrolRow("PNR-3", taken, CONSENT),
        enrolment.EnrolRow("PNR-2", _variant(astronaut, 2), CONSENT),
    ]
    res = enrolment.enrol_batch(app, OFFICER, GALLERY, rows, skip_refused=True)
    assert [r.subject for r in res.enrolled] == ["PNR-1", "PNR-2"]
    assert [(n, s, r.code) for n, s, r in res.refused] == [(2, "PNR-3", "conflict")]
    with app.session(readonly=True) as s:
        assert set(s.scalars(select(Subject.reference))) == {"PNR-OTHER", "PNR-1", "PNR-2"}


@pytest.fixture(scope="module")
def stores(_pg_admin: Any) -> Iterator[DatabaseCopies]:
    st = DatabaseCopies(_pg_admin)
    yield st
    st.drop()


# The faceless row needs no second opinion from dlib's CNN detector (~2 s a run): the
# children only need it refused.
CHEAP = {"AIRSIDE_DETECTOR_FALLBACK": "none"}


def _settings(data_dir: Path, url: str | None) -> Settings:
    cheap = DetectorSettings(fallback="none")
    if url:
        return Settings(data_dir=data_dir, database_url=url, detector=cheap)
    return Settings(data_dir=data_dir, detector=cheap)


@pytest.fixture(scope="module")
def template_dir(tmp_path_factory: pytest.TempPathFactory, stores: DatabaseCopies) -> Path:
    """A data directory with the officer and the gallery, copied for each run."""
    path = tmp_path_factory.mktemp("batch") / "data"
    app = Airside(_settings(path, stores.template))
    try:
        register(app, OFFICER)
        galleries.create_gallery(app, OFFICER, GALLERY, PURPOSE)
    finally:
        app.close()
    return path


def _run_child(
    data_dir: Path, mode: str, kill_at: int, url: str | None
) -> subprocess.CompletedProcess[str]:
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, **CHEAP, "PYTHONPATH": os.pathsep.join([str(REPO), *inherited])}
    if url:
        env["AIRSIDE_DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "tests.batch_child", str(data_dir), mode, str(kill_at)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _state(data_dir: Path, url: str | None) -> tuple[dict[str, tuple[int, int]], int, bool]:
    """Per subject (templates, bases); how many enrolments the log records; chain ok."""
    app = Airside(_settings(data_dir, url))
    try:
        with app.session(readonly=True) as s:

            def count(model: type[Template] | type[LegalBasis], sid: int) -> int:
                q = select(func.count()).select_from(model).where(model.subject_id == sid)
                return int(s.scalar(q) or 0)

            subjects = {
                ref: (count(Template, sid), count(LegalBasis, sid))
                for sid, ref in s.execute(select(Subject.id, Subject.reference))
            }
            logged = int(
                s.scalar(
                    select(func.count())
                    .select_from(AuditRecord)
                    .where(AuditRecord.action == "enrol", AuditRecord.decision == "enrolled")
                )
                or 0
            )
        ok = verify_chain(app, OFFICER).ok
    finally:
        app.close()
    return subjects, logged, ok


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["all", "skip"])
def test_sigkill_at_random_points_leaves_whole_units(
    template_dir: Path, stores: DatabaseCopies, tmp_path: Path, mode: str
) -> None:
    full = tmp_path / "full"
    shutil.copytree(template_dir, full)
    url = stores.copy()
    done = _run_child(full, mode, 0, url)
    assert done.returncode == 0, done.stderr[-2000:]
    m = re.search(r"statements=(\d+)", done.stdout)
    assert m is not None
    total = int(m.group(1))
    expected, logged, ok = _state(full, url)
    assert ok and len(expected) == 8 and logged == 8
    rng = random.Random(f"airside-{mode}")
    kills = sorted(rng.sample(range(1, total + 1), KILLS_PER_MODE))
    for kill_at in kills:
        run_dir = tmp_path / f"kill-{kill_at}"
        shutil.copytree(template_dir, run_dir)
        url = stores.copy()
        killed = _run_child(run_dir, mode, kill_at, url)
        assert killed.returncode == -9, (kill_at, killed.stderr[-2000:])
        subjects, logged, ok = _state(run_dir, url)
        assert ok, f"chain broken after SIGKILL at statement {kill_at}"
        # every subject present is whole: its template and its basis, and logged
        assert all(v == (1, 1) for v in subjects.values()), (kill_at, subjects)
        assert logged == len(subjects), (kill_at, logged, subjects)
        if mode == "all":
            assert len(subjects) in (0, 8), (kill_at, sorted(subjects))
        shutil.rmtree(run_dir)
