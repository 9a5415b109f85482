"""Service calls at the same time, from threads and from processes, on one data directory:
none fails, none collides on the audit chain, every call is audited exactly once, and the
chain verifies afterwards."""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from tests.conftest import png_bytes, register

from airside.config import Settings
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries, matching
from airside.services.app import Airside
from airside.services.audit_service import verify_chain
from airside.store.tables import AuditRecord

ADMIN = Principal("admin-1", "admin")
CONSENT = BasisInput("consent", evidence_sha256="ab" * 32)
GALLERY = "boarding-KE123"
CALLS = 100
PROCESSES = 4


def _variant(image: np.ndarray, n: int) -> bytes:
    """The same face, different bytes: one pixel in a corner carries ``n``."""
    out = image.copy()
    out[0, 0] = (n % 256, (n // 256) % 256, 7)
    return png_bytes(out)


def _mixed_calls(app: Airside, who: Principal, worker: int, image: np.ndarray) -> Counter[str]:
    """``CALLS`` calls of four kinds; returns how many of each succeeded."""
    done: Counter[str] = Counter()
    contract = app.analyzer.contract
    rng = np.random.default_rng(worker)
    for i in range(CALLS):
        kind = i % 10
        if kind == 0:
            ref = f"W{worker}-S{i}"
            enrolment.enrol(app, who, GALLERY, ref, [_variant(image, worker * 1000 + i)], CONSENT)
            done["enrol"] += 1
        elif kind == 1:
            matching.identify(app, who, GALLERY, _variant(image, 60_000 + worker * 1000 + i))
            done["identify"] += 1
        elif kind < 6:
            vec = rng.standard_normal(contract.dim).astype(np.float32)
            matching.identify_embedding(
                app,
                who,
                GALLERY,
                vec / np.linalg.norm(vec),
                contract=contract,
                quality=80.0,
                input_sha256=f"{worker:02d}{i:062d}",
            )
            done["identify"] += 1
        else:
            galleries.list_galleries(app, who)
            done["gallery.list"] += 1
    return done


def _process_worker(data_dir: str, worker: int, queue: Any) -> None:
    from skimage import data

    app = Airside(Settings(data_dir=Path(data_dir)))
    try:
        who = Principal(f"worker-{worker}", "admin")
        queue.put((worker, dict(_mixed_calls(app, who, worker, np.asarray(data.astronaut())))))
    except BaseException as e:  # reported to the parent, which fails the test with it
        queue.put((worker, f"{type(e).__name__}: {e}"))
    finally:
        app.close()


def _audited(app: Airside) -> Counter[tuple[str, str]]:
    """(actor, action) of every record that is not a refusal."""
    with app.session(readonly=True) as s:
        rows = s.execute(select(AuditRecord.actor, AuditRecord.action, AuditRecord.decision)).all()
    assert not [r for r in rows if r.decision.startswith("refused")], "a call was refused"
    return Counter((r.actor, r.action) for r in rows)


@pytest.fixture
def shared_app(tmp_path: Path, analyzer: Any, astronaut: np.ndarray) -> Any:
    app = Airside(Settings(data_dir=tmp_path / "data"), analyzer_factory=lambda _s: analyzer)
    register(app, ADMIN)
    galleries.create_gallery(app, ADMIN, GALLERY, "boarding:KE123:2026-11-26")
    enrolment.enrol(app, ADMIN, GALLERY, "PNR-0", [png_bytes(astronaut)], CONSENT)
    yield app
    app.close()


def test_four_processes_of_mixed_calls_never_collide(
    shared_app: Airside, astronaut: np.ndarray
) -> None:
    workers = [Principal(f"worker-{w}", "admin") for w in range(PROCESSES)]
    register(shared_app, *workers)
    data_dir = str(shared_app.settings.data_dir)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_process_worker, args=(data_dir, w, queue)) for w in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=900) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    failed = {w: r for w, r in results.items() if isinstance(r, str)}
    assert not failed, failed
    audited = _audited(shared_app)
    for w, done in results.items():
        assert sum(done.values()) == CALLS
        for action, n in done.items():
            assert audited[(f"worker-{w}", action)] == n, (w, action)
    report = verify_chain(shared_app, ADMIN)
    assert report.ok, report.problems
    assert report.signed_records == report.records


def test_threads_sharing_one_service_context_never_collide(
    shared_app: Airside, astronaut: np.ndarray
) -> None:
    workers = [Principal(f"thread-{w}", "admin") for w in range(4)]
    register(shared_app, *workers)
    results: dict[int, Counter[str]] = {}
    errors: list[BaseException] = []

    def run(w: int) -> None:
        try:
            results[w] = _mixed_calls(shared_app, workers[w], w, astronaut)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    audited = _audited(shared_app)
    for w, done in results.items():
        for action, n in done.items():
            assert audited[(f"thread-{w}", action)] == n
    assert verify_chain(shared_app, ADMIN).ok
