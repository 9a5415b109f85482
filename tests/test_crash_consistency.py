"""SIGKILL at random moments of every operation that changes biometric data or keys.

Each operation runs in a child process (``tests/crash_child.py``) on a copy of one
installation, and is killed at a step drawn at random among all of its steps (an SQL
statement, or the moment before or after the key ring file is written). After each kill:

- the store opens and its audit chain verifies;
- no template exists without the enrolment record that added it;
- every template still decrypts, and every gallery answers the same probe with the score
  it gave before (a rekey or a rotation cut in half would break one or the other);
- the operation happened wholly or not at all;
- run again (the next start), it completes: an interrupted rotation resumes under the key
  it had written, and an erasure is done.

The installation: an officer; ``boarding-KE123`` (retention ends a day after departure)
with PNR-0..4 enrolled; ``lounge-LH`` (purpose ``lounge:access``) with PNR-0..2 enrolled;
template protection on, so the key ring file is in the data directory.

Kills per operation and store: ``AIRSIDE_CRASH_KILLS`` (default 4: `make test` keeps its
time). `make crash` runs 50 per operation on both stores and writes
``reports/crash.json`` (docs/reliability.md quotes it).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select
from tests.conftest import ON_POSTGRES, DatabaseCopies, png_bytes, register
from tests.crash_child import BOARDING, NEW_ROWS, OFFICER, WATCH, WATCH_PURPOSE

from airside.config import DetectorSettings, Settings
from airside.governance.consent import BasisInput
from airside.services import enrolment, erasure, galleries, retention, template_keys
from airside.services.app import Airside
from airside.services.audit_service import verify_chain
from airside.services.captures import Capture, capture
from airside.services.gallery_view import get_gallery
from airside.store.tables import AuditRecord, ErasureRequest, LegalBasis, Subject, Template
from airside.vision.analyzer import FaceAnalyzer

REPO = Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("AIRSIDE_CRASH_KILLS", "4"))
REPORT = os.environ.get("AIRSIDE_CRASH_REPORT")
OPERATIONS = ["enrol-batch", "erase", "withdraw", "purge", "rotate", "rekey"]
STORE = "postgresql" if ON_POSTGRES else "sqlite"


def _settings(data_dir: Path, url: str | None) -> Settings:
    cheap = DetectorSettings(fallback="none")
    if url:
        return Settings(data_dir=data_dir, database_url=url, detector=cheap)
    return Settings(data_dir=data_dir, detector=cheap)


def _photo(astronaut: np.ndarray, n: int) -> bytes:
    img = astronaut.copy()
    img[0, 0] = (n, 9, 40)
    return png_bytes(img)


@pytest.fixture(scope="module")
def stores(_pg_admin: Any) -> Iterator[DatabaseCopies]:
    st = DatabaseCopies(_pg_admin)
    yield st
    st.drop()


class Installation:
    def __init__(self, path: Path, url: str | None, probe: np.ndarray, scores: dict[str, float]):
        self.path, self.url, self.probe, self.scores = path, url, probe, scores


@pytest.fixture(scope="module")
def installation(
    tmp_path_factory: pytest.TempPathFactory,
    stores: DatabaseCopies,
    analyzer: FaceAnalyzer,
    astronaut: np.ndarray,
) -> Installation:
    path = tmp_path_factory.mktemp("crash") / "data"
    app = Airside(_settings(path, stores.template), analyzer_factory=lambda _s: analyzer)
    try:
        register(app, OFFICER)
        departs = datetime.now(UTC) + timedelta(hours=2)
        galleries.create_gallery(app, OFFICER, BOARDING, "boarding:KE123", departs=departs)
        galleries.create_gallery(app, OFFICER, WATCH, WATCH_PURPOSE)
        for i in range(5):
            basis = BasisInput("consent", evidence_sha256=f"{i:064x}")
            enrolment.enrol(app, OFFICER, BOARDING, f"PNR-{i}", [_photo(astronaut, i)], basis)
            if i < 3:
                enrolment.enrol(app, OFFICER, WATCH, f"PNR-{i}", [_photo(astronaut, i)], basis)
        res = capture(app.analyzer, png_bytes(astronaut), max_pixels=app.settings.max_image_pixels)
        assert isinstance(res, Capture)
        probe = app.analyzer.embed([res.face])[0]
        scores = _top_scores(app, probe)
    finally:
        app.close()
    return Installation(path, stores.template, probe, scores)


def _top_scores(app: Airside, probe: np.ndarray) -> dict[str, float]:
    out = {}
    with app.session(readonly=True) as s:
        for name in (BOARDING, WATCH):
            gv = get_gallery(s, name)
            ix, tf = app.index_with_transform(s, gv)
            rows = int(
                s.scalar(
                    select(func.count()).select_from(Template).where(Template.gallery_id == gv.id)
                )
                or 0
            )
            assert len(ix) == rows, f"{name}: the index holds {len(ix)} of {rows} templates"
            hits = ix.search(tf.forward(probe[None, :]), 1)[0]
            if hits:
                out[name] = float(hits[0].score)
    return out


def _run_child(data_dir: Path, op: str, kill_at: int, url: str | None) -> str:
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {
        **os.environ,
        "AIRSIDE_DETECTOR_FALLBACK": "none",
        "PYTHONPATH": os.pathsep.join([str(REPO), *inherited]),
    }
    if url:
        env["AIRSIDE_DATABASE_URL"] = url
    done = subprocess.run(
        [sys.executable, "-m", "tests.crash_child", str(data_dir), op, str(kill_at)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    want = -9 if kill_at else 0
    assert done.returncode == want, (op, kill_at, done.returncode, done.stderr[-3000:])
    return done.stdout


def _records(app: Airside, action: str) -> list[dict[str, Any]]:
    with app.session(readonly=True) as s:
        return [
            json.loads(r)
            for r in s.scalars(select(AuditRecord.result).where(AuditRecord.action == action))
        ]


def _templates_of(app: Airside, reference: str, gallery: str | None = None) -> int:
    with app.session(readonly=True) as s:
        q = select(func.count()).select_from(Template).join(Subject)
        q = q.where(Subject.reference == reference)
        if gallery is not None:
            q = q.where(Template.gallery_id == get_gallery(s, gallery).id)
        return int(s.scalar(q) or 0)


def _whole(app: Airside, op: str) -> bool:
    """Whether ``op`` took effect, asserting that it did so wholly or not at all."""
    if op == "enrol-batch":
        with app.session(readonly=True) as s:
            new = s.scalars(select(Subject.id).where(Subject.reference.like("PNR-NEW-%"))).all()
            for sid in new:
                n = select(func.count())
                assert s.scalar(n.select_from(Template).where(Template.subject_id == sid)) == 1
                assert s.scalar(n.select_from(LegalBasis).where(LegalBasis.subject_id == sid)) == 1
        assert len(new) in (0, NEW_ROWS), f"{len(new)} of the batch's {NEW_ROWS} subjects"
        return len(new) == NEW_ROWS
    if op == "erase":
        done = bool(_records(app, "subject.erase"))
        with app.session(readonly=True) as s:
            present = s.scalar(select(Subject.id).where(Subject.reference == "PNR-0"))
        assert (present is None) == done, "the subject and the erasure record disagree"
        assert _templates_of(app, "PNR-0") == (0 if done else 2)
        return done
    if op == "withdraw":
        done = bool(_records(app, "consent.withdraw"))
        with app.session(readonly=True) as s:
            withdrawn = s.scalar(
                select(LegalBasis.withdrawn_at)
                .join(Subject)
                .where(Subject.reference == "PNR-1", LegalBasis.purpose == WATCH_PURPOSE)
            )
        assert (withdrawn is not None) == done, "the basis and the withdrawal record disagree"
        assert _templates_of(app, "PNR-1", WATCH) == (0 if done else 1)
        assert _templates_of(app, "PNR-1", BOARDING) == 1  # another purpose: untouched
        return done
    if op == "purge":
        done = any(r.get("templates") for r in _records(app, "purge"))
        left = sum(_templates_of(app, f"PNR-{i}", BOARDING) for i in range(5))
        assert left == (0 if done else 5), f"{left} boarding templates left"
        assert _templates_of(app, "PNR-0", WATCH) == 1  # no retention end: untouched
        return done
    if op == "rotate":
        return bool(_records(app, "keys.rotate"))
    if op == "rekey":
        return bool(_records(app, "gallery.rekey"))
    raise AssertionError(op)


def _check(inst: Installation, data_dir: Path, url: str | None, op: str) -> bool:
    """The invariants every kill must leave; whether the operation took effect."""
    app = Airside(_settings(data_dir, url))
    try:
        assert verify_chain(app, OFFICER).ok, "the audit chain does not verify"
        added: set[int] = set()
        for rec in _records(app, "enrol"):
            added.update(rec.get("added", []))
        with app.session(readonly=True) as s:
            ids = set(s.scalars(select(Template.id)))
        assert ids <= added, f"templates without their enrolment record: {ids - added}"
        scores = _top_scores(app, inst.probe)  # decrypts every template and transform
        for name, score in scores.items():
            assert abs(score - inst.scores[name]) < 1e-3, (name, score, inst.scores[name])
        return _whole(app, op)
    finally:
        app.close()


def _next_start(data_dir: Path, url: str | None, op: str) -> bool:
    """Do what the next start does about an operation that was cut short (or an operator
    re-running the command that died); whether the operation is owed, i.e. must now have
    taken effect. A batch enrolment and a rekey are all-or-nothing requests the caller
    repeats; an erasure or withdrawal is owed once its request was recorded."""
    app = Airside(_settings(data_dir, url))
    try:
        if op in ("erase", "withdraw"):
            done = _whole(app, op)
            with app.session(readonly=True) as s:
                pending = int(s.scalar(select(func.count()).select_from(ErasureRequest)) or 0)
            assert not (done and pending), "a request outlived the erasure that did it"
            # the child is dead: no request is in flight (the server waits a minute)
            completed = erasure.complete_pending(app, older_than_s=0)
            assert len(completed) == pending
            return done or pending > 0
        if op == "purge":
            retention.purge(app, OFFICER, now=datetime.now(UTC) + timedelta(days=30))
            return True
        if op == "rotate":
            ring = app.template_protector.reload()
            committed = _records(app, "keys.rotate")
            interrupted = bool(committed) and committed[-1]["key_id"] != ring.active
            rep = template_keys.rotate_keys(app, OFFICER, retire_old=True)
            if interrupted:  # resumed under the key it had written, not a new one
                assert rep.key_id == committed[-1]["key_id"] and not rep.created
            ring = app.template_protector.reload()
            assert list(ring.keys) == [rep.key_id] == [ring.active]
            with app.session(readonly=True) as s:
                kids = set(s.scalars(select(Template.key_id).distinct()))
            assert kids == {rep.key_id}, kids
            return True
        return False
    finally:
        app.close()


@pytest.mark.slow
@pytest.mark.parametrize("op", OPERATIONS)
def test_sigkill_at_random_steps_leaves_a_consistent_store(
    installation: Installation, stores: DatabaseCopies, tmp_path: Path, op: str
) -> None:
    full = tmp_path / "full"
    shutil.copytree(installation.path, full)
    url = stores.copy()
    out = _run_child(full, op, 0, url)
    m = re.search(r"steps=(\d+)", out)
    assert m is not None, out
    steps = int(m.group(1))
    assert _check(installation, full, url, op), f"{op} run to the end did not take effect"
    shutil.rmtree(full)
    rng = random.Random(f"airside-crash-{op}-{STORE}")
    kills = sorted(rng.sample(range(1, steps + 1), min(KILLS, steps)))
    if steps < KILLS:  # more kills than steps: every step, then again at random
        kills += sorted(rng.choices(range(1, steps + 1), k=KILLS - steps))
    taken = 0
    for kill_at in kills:
        run_dir = tmp_path / f"kill-{kill_at}"
        shutil.copytree(installation.path, run_dir)
        url = stores.copy()
        _run_child(run_dir, op, kill_at, url)
        taken += _check(installation, run_dir, url, op)
        owed = _next_start(run_dir, url, op)
        assert _check(installation, run_dir, url, op) or not owed, f"{op} did not complete"
        shutil.rmtree(run_dir)
    if REPORT:
        _write_report(op, steps, len(kills), taken)


def _write_report(op: str, steps: int, kills: int, taken: int) -> None:
    path = Path(REPORT or "")
    report = json.loads(path.read_text()) if path.exists() else {"rows": []}
    rows = [r for r in report["rows"] if (r["operation"], r["store"]) != (op, STORE)]
    rows.append(
        {
            "operation": op,
            "store": STORE,
            "steps": steps,
            "kills": kills,
            "took_effect": taken,
            "rolled_back": kills - taken,
            "inconsistent": 0,
        }
    )
    report["rows"] = sorted(rows, key=lambda r: (r["store"], OPERATIONS.index(r["operation"])))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
