"""Several `airside serve` processes on one store, as a deployment behind a load balancer
runs them: 4 servers, each sent 200 mixed calls (enrol, identify, erase, purge, lookups)
at the same time by its own client. Afterwards the audit chain is one linear chain that
verifies, every acknowledged call is in it exactly once, the galleries hold exactly what
the acknowledged calls left, and no process finds an erased or purged subject (each
process's in-memory index followed the others' writes).

It runs on PostgreSQL (`make test`'s second pass, tests/conftest.py), as deployed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select
from tests.conftest import ON_POSTGRES, png_bytes

from airside.config import Settings
from airside.server.local_broker import free_port
from airside.services import principal_admin
from airside.services.app import Airside
from airside.services.audit_service import verify_chain
from airside.store.tables import AuditRecord, Gallery, Template

# Several servers on one store is PostgreSQL's deployment (docs/deployment.md): this runs
# in `make test`'s PostgreSQL pass. On SQLite, tests/test_concurrency.py runs 4 processes
# on one file.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ON_POSTGRES, reason="runs in the PostgreSQL pass of `make test`"),
]

SERVERS = 4
CALLS = 200
BOARDING = "boarding-KE123"
TRANSIT = "transit-T1"  # templates kept 1 s: every purge finds some due


def _face(astronaut: np.ndarray, n: int) -> bytes:
    """The astronaut's face, cropped small (cheap to detect), made unique by one pixel."""
    out = astronaut[20:260, 110:350].copy()
    out[0, 0] = (n % 256, (n // 256) % 256, 7)
    return png_bytes(out)


def _serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AIRSIDE_DATA_DIR": str(data_dir), "AIRSIDE_SERVER_WORKERS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "airside.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server at {url} not ready")


class Client:
    """One server's caller: 200 mixed calls; what was acknowledged is recorded."""

    def __init__(self, n: int, url: str, key: str, astronaut: np.ndarray) -> None:
        self.n, self.astronaut = n, astronaut
        self.http = httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=120
        )
        self.done: Counter[str] = Counter()
        self.alive: list[str] = []  # enrolled in BOARDING by this client, not erased
        self.erased: list[str] = []
        self.transit: list[str] = []
        self.failures: list[str] = []

    def _ok(self, r: httpx.Response, kind: str) -> bool:
        if r.status_code in (200, 201):
            self.done[kind] += 1
            return True
        self.failures.append(f"{kind}: {r.status_code} {r.text[:300]}")
        return False

    def _enrol(self, gallery: str, ref: str, i: int) -> bool:
        r = self.http.post(
            f"/galleries/{gallery}/subjects/{ref}/enrolments",
            files={"image": ("face.png", _face(self.astronaut, self.n * 1000 + i), "image/png")},
            data={"basis": "consent", "basis_ref": f"form-{ref}"},
        )
        return self._ok(r, "enrol")

    def run(self) -> None:
        for i in range(CALLS):
            kind = i % 10
            if kind in (0, 1):
                ref = f"P{self.n}-{i}"
                if self._enrol(BOARDING, ref, i):
                    self.alive.append(ref)
            elif kind == 2 and self.alive:
                ref = self.alive[0]
                if self._ok(self.http.delete(f"/subjects/{ref}"), "erase"):
                    self.erased.append(self.alive.pop(0))
            elif kind == 3:
                ref = f"T{self.n}-{i}"
                if self._enrol(TRANSIT, ref, 500 + i):
                    self.transit.append(ref)
            elif kind == 4:
                self._ok(self.http.post("/purge"), "purge")
            elif kind in (5, 6):
                face = _face(self.astronaut, 90_000 + self.n * 1000 + i)
                r = self.http.post(
                    f"/galleries/{BOARDING}/identify",
                    files={"image": ("p.png", face, "image/png")},
                    data={"top_k": "100"},
                )
                if self._ok(r, "identify"):
                    found = {c["subject"] for c in r.json()["candidates"]}
                    if found & set(self.erased):
                        self.failures.append(f"found erased {found & set(self.erased)}")
            elif kind == 7:
                self._ok(self.http.get("/galleries"), "list")
            else:
                self._ok(self.http.get("/audit/verify"), "verify")


def test_four_servers_on_one_store_keep_one_truth(tmp_path: Path, astronaut: np.ndarray) -> None:
    data_dir = tmp_path / "airside"
    setup = Airside(Settings(data_dir=data_dir))
    admin = principal_admin.ensure_local_admin(setup)
    keys = []
    for n in range(SERVERS):
        principal_admin.add_principal(setup, admin, f"desk-{n}", "admin", [("*", "*")])
        keys.append(principal_admin.issue_key(setup, admin, f"desk-{n}").secret)
    ports = [free_port() for _ in range(SERVERS)]
    procs = [_serve(data_dir, p) for p in ports]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, proc in zip(urls, procs, strict=True):
            _wait_ready(url, proc)
        first = httpx.Client(
            base_url=f"{urls[0]}/api/v1", headers={"Authorization": f"Bearer {keys[0]}"}
        )
        for body in (
            {"name": BOARDING, "purpose": "boarding:KE123", "retain_seconds": 86_400},
            {"name": TRANSIT, "purpose": "transit:T1", "retain_seconds": 1},
        ):
            assert first.post("/galleries", json=body).status_code == 201
        clients = [Client(n, urls[n], keys[n], astronaut) for n in range(SERVERS)]
        threads = [threading.Thread(target=c.run) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [f for c in clients for f in c.failures] == []

        time.sleep(1.1)  # every transit template is now due
        assert first.post("/purge").status_code == 200
        alive = {ref for c in clients for ref in c.alive}
        erased = {ref for c in clients for ref in c.erased}
        # Every process answers from an index that followed all the others' writes.
        for n, url in enumerate(urls):
            http = httpx.Client(
                base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {keys[n]}"},
                timeout=120,
            )  # fmt: skip
            face = ("p.png", _face(astronaut, 99_999), "image/png")
            res = http.post(
                f"/galleries/{BOARDING}/identify", files={"image": face}, data={"top_k": "100"}
            ).json()
            assert res["gallery_size"] == len(alive)
            found = {c["subject"] for c in res["candidates"]}
            assert not found & erased, f"server {n} found erased subjects"
            assert found == alive
            res = http.post(
                f"/galleries/{TRANSIT}/identify", files={"image": face}, data={"top_k": "100"}
            ).json()
            assert res["gallery_size"] == 0 and res["candidates"] == []
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)

    done = sum((c.done for c in clients), Counter())
    assert done["enrol"] == sum(len(c.alive) + len(c.erased) + len(c.transit) for c in clients)
    with setup.session(readonly=True) as s:
        count = s.scalar(
            select(func.count(func.distinct(Template.subject_id)))
            .join(Gallery, Gallery.id == Template.gallery_id)
            .where(Gallery.name == BOARDING)
        )
        assert count == len(alive)
        rows = s.execute(select(AuditRecord.action, func.count()).group_by(AuditRecord.action))
        actions: Counter[str] = Counter({a: int(c) for a, c in rows})
    report = verify_chain(setup, admin)
    assert report.ok, report.problems
    assert report.records == sum(actions.values())
    # Every acknowledged state change is in the chain once (retention.purge may add more
    # records of its own; never fewer).
    assert actions["enrol"] == done["enrol"]
    assert actions["subject.erase"] == done["erase"]
    assert actions["identify"] == done["identify"] + 2 * SERVERS
    setup.close()
