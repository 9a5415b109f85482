"""``make soak``: a steady mixed load on a real ``airside serve`` for a long time, watching
the server and its camera workers for leaks (issue 18, "Hardening").

    python -m airside.soak [--minutes 30] [--warmup-s N] [--rate 2] [--rss-limit 5]
        [--p99-ratio 2] [--json reports/soak.json]

What runs: ``airside serve`` as a subprocess on 127.0.0.1 (a free port, a fresh temporary
data directory, deleted at the end), with two camera workers (``gate-a``, ``gate-b``) that
the server supervises, each playing a short synthetic clip (generated at run time) in a
loop, searching the soak's gallery. Client threads send a fixed rate of requests (``--rate``
per second in all; a thread that falls behind starts its next request at once, without
piling up a backlog): enrolments of new subjects (the scikit-image astronaut with one pixel
changed each time, so every photo is new), verifications against the newest subject,
identifications, subject and event listings, and ``/metrics``. Once more than
``KEEP_SUBJECTS`` soak subjects are enrolled the oldest is erased (``DELETE /subjects``), so
the gallery, and with it the server's legitimate working set, has a steady size: without
it RSS would grow with the gallery and a leak could not be told from growth.

Every ``--sample-s`` seconds it samples, for the server process and each camera worker
process (their pids from ``GET /cameras``), the resident set (``VmRSS`` in
``/proc/PID/status``), the thread count (``Threads``) and the open file descriptors (entries
of ``/proc/PID/fd``); and the latency p50/p99 of the requests that ended in that window.
Linux only (it reads ``/proc``).

The verdict (:func:`judge`, a pure function of the samples) looks only at what follows the
warm-up (default: the first 20% of the run, at least 30 s), when caches, thread pools and
the models are loaded:

* **RSS growth**: per process, the median of the last ``k`` samples against the median of
  the first ``k`` after warm-up, ``k`` = 10% of the post-warm-up samples (at least 3, at
  most half of them). Medians, not single samples: the allocator returns memory in bursts
  and one sample taken mid-request is noise, while a leak moves the whole tail. Limit:
  under ``RSS_GROWTH_LIMIT_PCT`` (5%; ``--rss-limit``).
* **File descriptors and threads**: the most seen after warm-up minus the count at the end
  of warm-up, per process. Tolerance ``FD_TOLERANCE`` (8: a keep-alive connection or a
  SQLite journal open during a sample) and ``THREAD_TOLERANCE`` (4: AnyIO's thread pool
  starts threads on demand and retires them after 10 s idle); a leak of one per request
  is thousands over a run, far past either.
* **p99 stable**: p99 of the requests in the first ``compare`` seconds after warm-up
  against the last ``compare`` seconds of the run (``compare`` = 10% of the run, at least
  30 s, at most half of what follows the warm-up); limit: the last at most
  ``P99_RATIO_LIMIT`` (2) times the first. Latency is what the machine gives: on a shared
  machine another tenant's burst in one window moves p99 by 3x (seen on the 2-core
  development machine), so each timeline window records the load average beside p99.
* **Errors**: any answer that is not 2xx and not an expected refusal (``503`` overloaded or
  not ready, ``429``), and any request that got no answer: none allowed.
* **Camera workers**: a worker restarted (its pid changed), or not running at the end, is
  a failure.

It prints a table, writes ``--json`` (``{minutes, requests, errors, processes: [...],
p99_ms_first, p99_ms_last, pass, ...}``) and exits 1 when a limit is broken (2 when the
soak could not run at all). Every process it started is stopped at the end, on Ctrl-C and
on SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

console = Console(width=150)

RSS_GROWTH_LIMIT_PCT = 5.0
FD_TOLERANCE = 8
THREAD_TOLERANCE = 4
P99_RATIO_LIMIT = 2.0
#: Answers that are refusals the API documents under load, not errors (docs/api.md, Limits).
EXPECTED_REFUSALS = frozenset({429, 503})
KEEP_SUBJECTS = 20
GALLERY = "soak"
PURPOSE = "boarding:SOAK"
CAMERAS = ("gate-a", "gate-b")
#: One cycle of each client thread's work, in order (each entry one request; ``enrol``
#: adds a ``DELETE /subjects`` once more than ``KEEP_SUBJECTS`` are enrolled).
MIX = ("enrol", "verify", "identify", "subjects", "events", "metrics", "identify", "verify")


# --------------------------------------------------------------------------------------------
# The verdict: pure functions of the samples


@dataclass(frozen=True)
class Sample:
    """One process at one moment: ``t`` seconds after the load started."""

    t: float
    rss_kb: int
    fds: int
    threads: int


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation), ``None`` for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _edge(n: int) -> int:
    """How many samples at each end the RSS medians take: 10%, at least 3, at most n/2."""
    return max(1, min(max(3, n // 10), n // 2))


def judge_process(
    name: str,
    samples: Sequence[Sample],
    warmup_s: float,
    *,
    rss_limit_pct: float = RSS_GROWTH_LIMIT_PCT,
    fd_tolerance: int = FD_TOLERANCE,
    thread_tolerance: int = THREAD_TOLERANCE,
) -> dict[str, Any]:
    """One process's figures after warm-up and whether they are within the limits
    (``problems`` says which are not)."""
    post = [s for s in sorted(samples, key=lambda s: s.t) if s.t >= warmup_s]
    row: dict[str, Any] = {"name": name, "samples": len(post)}
    if len(post) < 2:
        row.update(ok=False, problems=[f"{name}: fewer than 2 samples after the warm-up"])
        return row
    k = _edge(len(post))
    rss_start = statistics.median(s.rss_kb for s in post[:k]) / 1024
    rss_end = statistics.median(s.rss_kb for s in post[-k:]) / 1024
    growth = (rss_end - rss_start) / rss_start * 100 if rss_start > 0 else 0.0
    row.update(
        rss_start_mb=round(rss_start, 1),
        rss_end_mb=round(rss_end, 1),
        rss_max_mb=round(max(s.rss_kb for s in post) / 1024, 1),
        rss_growth_pct=round(growth, 2),
        fds_start=post[0].fds,
        fds_max=max(s.fds for s in post),
        fds_end=post[-1].fds,
        threads_start=post[0].threads,
        threads_max=max(s.threads for s in post),
        threads_end=post[-1].threads,
    )
    problems: list[str] = []
    if growth >= rss_limit_pct:
        problems.append(f"{name}: RSS grew {growth:.1f}% (limit {rss_limit_pct:g}%)")
    if row["fds_max"] - row["fds_start"] > fd_tolerance:
        problems.append(
            f"{name}: open files {row['fds_start']} -> up to {row['fds_max']} "
            f"(tolerance +{fd_tolerance})"
        )
    if row["threads_max"] - row["threads_start"] > thread_tolerance:
        problems.append(
            f"{name}: threads {row['threads_start']} -> up to {row['threads_max']} "
            f"(tolerance +{thread_tolerance})"
        )
    row.update(ok=not problems, problems=problems)
    return row


def compare_window(duration_s: float, warmup_s: float) -> float:
    """Seconds of requests each p99 of the comparison takes (see the module docstring)."""
    return max(1.0, min(max(30.0, 0.1 * duration_s), (duration_s - warmup_s) / 2))


def judge(
    processes: Mapping[str, Sequence[Sample]],
    latencies: Sequence[tuple[float, float]],
    *,
    duration_s: float,
    warmup_s: float,
    errors: int,
    restarts: dict[str, int] | None = None,
    rss_limit_pct: float = RSS_GROWTH_LIMIT_PCT,
    fd_tolerance: int = FD_TOLERANCE,
    thread_tolerance: int = THREAD_TOLERANCE,
    p99_ratio_limit: float = P99_RATIO_LIMIT,
) -> dict[str, Any]:
    """The soak's verdict from its samples: ``processes`` maps a name to its samples,
    ``latencies`` are ``(t ended, ms)`` of the successful requests, ``restarts`` the camera
    workers' restarts seen. ``pass`` is true when no limit is broken; ``problems`` lists
    each one that is."""
    rows = [
        judge_process(
            name,
            samples,
            warmup_s,
            rss_limit_pct=rss_limit_pct,
            fd_tolerance=fd_tolerance,
            thread_tolerance=thread_tolerance,
        )
        for name, samples in processes.items()
    ]
    problems = [p for r in rows for p in r["problems"]]
    for name, n in sorted((restarts or {}).items()):
        for r in rows:
            if r["name"] == name:
                r["restarts"] = n
        if n:
            problems.append(f"{name}: restarted {n} time(s)")
    w = compare_window(duration_s, warmup_s)
    first = [ms for t, ms in latencies if warmup_s <= t < warmup_s + w]
    last = [ms for t, ms in latencies if duration_s - w <= t <= duration_s]
    p99_first, p99_last = percentile(first, 99), percentile(last, 99)
    if p99_first is None or p99_last is None:
        problems.append("no requests ended in the first or last comparison window")
    elif p99_last > p99_ratio_limit * p99_first:
        problems.append(
            f"p99 went from {p99_first:.0f} ms to {p99_last:.0f} ms "
            f"(limit {p99_ratio_limit:g}x the first)"
        )
    if errors:
        problems.append(f"{errors} request(s) failed")
    return {
        "processes": rows,
        "compare_window_s": round(w, 1),
        "p99_ms_first": None if p99_first is None else round(p99_first, 1),
        "p99_ms_last": None if p99_last is None else round(p99_last, 1),
        "requests_first": len(first),
        "requests_last": len(last),
        "problems": problems,
        "pass": not problems,
        "limits": {
            "rss_growth_pct": rss_limit_pct,
            "fd_tolerance": fd_tolerance,
            "thread_tolerance": thread_tolerance,
            "p99_ratio": p99_ratio_limit,
            "errors": 0,
        },
    }


# --------------------------------------------------------------------------------------------
# Measuring a process (Linux /proc)


def proc_sample(pid: int, t: float) -> Sample | None:
    """``pid``'s RSS, threads and open descriptors now; ``None`` when it is gone."""
    try:
        rss = threads = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        return None
    return Sample(t, rss, fds, threads)


# --------------------------------------------------------------------------------------------
# The run


def _astronaut() -> np.ndarray:
    from skimage import data

    return np.asarray(data.astronaut(), dtype=np.uint8)


def png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def new_photo(base: np.ndarray, n: int) -> bytes:
    """``base`` with its corner pixel set from ``n``: a photo never enrolled before."""
    img = base.copy()
    img[0, 0] = (n & 255, (n >> 8) & 255, (n >> 16) & 255)
    img[0, 1] = ((n >> 24) & 255, 17, 91)
    return png(img)


def make_clips(folder: Path) -> dict[str, Path]:
    """The two cameras' clips (4 s at 10 fps): a face walking across a 320x240 frame."""
    from airside.synthetic.clips import Sprite, make_video

    clips = {}
    for cam, face, path in (
        ("gate-a", "astronaut", [(40, 120), (280, 120)]),
        ("gate-b", "hopper", [(280, 130), (40, 110)]),
    ):
        clip = folder / f"{cam}.mp4"
        make_video(clip, 40, (320, 240), 10, [Sprite("p", face, (80, 96), path)])  # type: ignore[arg-type]
        clips[cam] = clip
    return clips


def admin_key(data_dir: Path) -> str:
    """Register an administrator ``soak-admin`` in ``data_dir`` and issue its key."""
    from airside.config import Settings
    from airside.services import principal_admin
    from airside.services.app import Airside

    app = Airside(Settings(data_dir=data_dir))
    try:
        admin = principal_admin.ensure_local_admin(app)
        principal_admin.add_principal(app, admin, "soak-admin", "admin", [])
        return principal_admin.issue_key(app, admin, "soak-admin").secret
    finally:
        app.close()


def child_env() -> dict[str, str]:
    """The server's environment: this one, without a data directory or store named."""
    drop = {"AIRSIDE_DATA_DIR", "AIRSIDE_DATABASE_URL"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "OMP_NUM_THREADS": "1"}


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        """SIGTERM (uvicorn stops, the supervisor stops its workers), then SIGKILL to the
        whole process group (the server and anything it started)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: start_new_session
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def start_server(data_dir: Path, cameras: Path, log: Path, timeout_s: float = 120) -> Server:
    from airside.server.local_broker import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "airside.cli", "--data-dir", str(data_dir), "serve",
         "--host", "127.0.0.1", "--port", str(port), "--cameras", str(cameras)],
        env=child_env(), stdout=subprocess.DEVNULL, stderr=log.open("ab"),
        start_new_session=True,  # Ctrl-C reaches the soak, which stops it in order
    )  # fmt: skip
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"airside serve exited ({proc.returncode}):\n{_tail(log)}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"airside serve was not ready after {timeout_s:.0f} s:\n{_tail(log)}")


def _tail(log: Path, n: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _check(res: httpx.Response, what: str) -> dict[str, Any]:
    if res.status_code // 100 != 2:
        raise RuntimeError(f"{what}: {res.status_code} {res.text[:500]}")
    body: dict[str, Any] = res.json()
    return body


def wait_cameras_running(c: httpx.Client, timeout_s: float = 120) -> dict[str, int]:
    """Each camera's worker pid, once every camera runs and has processed frames."""
    deadline = time.monotonic() + timeout_s
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = _check(c.get("/api/v1/cameras"), "list cameras")["items"]
        running = {i["name"]: i for i in items if i["state"] == "running" and i.get("pid")}
        if set(running) >= set(CAMERAS) and all(
            running[n].get("frames_processed", 0) > 0 for n in CAMERAS
        ):
            return {n: int(running[n]["pid"]) for n in CAMERAS}
        failed = [i for i in items if i["state"] == "failed"]
        if failed:
            raise RuntimeError(f"a camera failed: {failed}")
        time.sleep(0.5)
    raise RuntimeError(f"the cameras did not start: {items}")


@dataclass
class Load:
    """The client threads' shared state and tallies."""

    url: str
    key: str
    rate: float
    threads: int
    started: float
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: list[tuple[float, float]] = field(default_factory=list)
    by_op: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    late: int = 0
    enrolled: deque[str] = field(default_factory=deque)
    next_subject: int = 0

    @property
    def requests(self) -> int:
        return sum(self.by_op.values())

    @property
    def errors(self) -> int:
        return len(self.failures)

    def now(self) -> float:
        return time.monotonic() - self.started

    def record(self, op: str, t0: float, res: httpx.Response | Exception) -> None:
        t1 = time.monotonic()
        with self.lock:
            self.by_op[op] = self.by_op.get(op, 0) + 1
            if isinstance(res, Exception):
                self.failures.append(f"{op}: {type(res).__name__}: {res}"[:300])
            elif res.status_code // 100 == 2:
                self.latencies.append((t1 - self.started, (t1 - t0) * 1000))
            elif res.status_code in EXPECTED_REFUSALS:
                key = f"{op} {res.status_code}"
                self.refused[key] = self.refused.get(key, 0) + 1
            else:
                self.failures.append(f"{op}: {res.status_code} {res.text[:200]}")


def _request(load: Load, op: str, fn: Callable[[], httpx.Response]) -> bool:
    t0 = time.monotonic()
    try:
        res = fn()
    except httpx.HTTPError as e:
        load.record(op, t0, e)
        return False
    load.record(op, t0, res)
    return res.status_code // 100 == 2


def _one_op(load: Load, c: httpx.Client, op: str, base: np.ndarray, probe: bytes) -> None:
    """One request of the ``MIX`` (an enrolment may add an erasure)."""
    g = f"/api/v1/galleries/{GALLERY}"
    face = {"image": ("p.png", probe, "image/png")}
    if op == "enrol":
        with load.lock:
            n = load.next_subject
            load.next_subject += 1
        subject = f"SOAK-{n:07d}"
        photo = {"image": ("p.png", new_photo(base, n), "image/png")}
        url = f"{g}/subjects/{subject}/enrolments"
        if not _request(load, op, lambda: c.post(url, files=photo, data={"basis": "consent"})):
            return
        with load.lock:
            load.enrolled.append(subject)
            old = load.enrolled.popleft() if len(load.enrolled) > KEEP_SUBJECTS else None
        if old is not None:
            params = {"reason": "soak"}
            _request(load, "erase", lambda: c.delete(f"/api/v1/subjects/{old}", params=params))
    elif op == "verify":
        with load.lock:
            who = load.enrolled[-1] if load.enrolled else None
        if who is not None:
            data = {"subject": who, "gallery": GALLERY}
            _request(load, op, lambda: c.post("/api/v1/verify", files=face, data=data))
    elif op == "identify":
        _request(load, op, lambda: c.post(f"{g}/identify", files=face))
    elif op == "subjects":
        _request(load, op, lambda: c.get(f"{g}/subjects", params={"limit": 50}))
    elif op == "events":
        _request(load, op, lambda: c.get("/api/v1/events", params={"limit": 50}))
    elif op == "metrics":
        _request(load, op, lambda: c.get("/metrics"))
    else:
        raise ValueError(f"unknown operation {op!r}")


def client_thread(load: Load, index: int, base: np.ndarray, probe: bytes) -> None:
    """One client: the ``MIX`` in a loop, one request every ``threads / rate`` seconds."""
    period = load.threads / load.rate
    auth = {"Authorization": f"Bearer {load.key}"}
    with httpx.Client(base_url=load.url, headers=auth, timeout=60) as c:
        next_at = time.monotonic() + period * index / load.threads  # spread the threads
        step = index
        while not load.stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                if load.stop.wait(delay):
                    break
            elif delay < -period:
                with load.lock:
                    load.late += 1
                next_at = time.monotonic()  # behind: no backlog, start at once
            next_at += period
            _one_op(load, c, MIX[step % len(MIX)], base, probe)
            step += 1


@dataclass
class Timeline:
    """What the sampler saw."""

    processes: dict[str, list[Sample]] = field(default_factory=dict)
    pids: dict[str, list[int]] = field(default_factory=dict)
    windows: list[dict[str, Any]] = field(default_factory=list)
    cameras: dict[str, dict[str, Any]] = field(default_factory=dict)


def sample_once(
    timeline: Timeline, load: Load, c: httpx.Client, server_pid: int, last_t: float
) -> float:
    t = load.now()
    pids = {"server": server_pid}
    try:
        items = c.get("/api/v1/cameras").json()["items"]
    except (httpx.HTTPError, ValueError, KeyError):
        items = []
    for cam in items:
        timeline.cameras[cam["name"]] = {
            k: cam.get(k) for k in ("state", "pid", "fps", "frames_processed", "restarts")
        }
        if cam.get("pid"):
            pids[f"camera {cam['name']}"] = int(cam["pid"])
    for name, pid in pids.items():
        seen = timeline.pids.setdefault(name, [])
        if pid not in seen:
            seen.append(pid)
        s = proc_sample(pid, t)
        if s is not None:
            timeline.processes.setdefault(name, []).append(s)
    with load.lock:
        window = [ms for tt, ms in load.latencies if last_t <= tt < t]
        requests = load.requests
    timeline.windows.append(
        {
            "t": round(t, 1),
            "requests_ok": len(window),
            "p50_ms": None if not window else round(percentile(window, 50) or 0, 1),
            "p99_ms": None if not window else round(percentile(window, 99) or 0, 1),
            "requests_total": requests,
            # The machine's 1-minute load average: a p99 jump with it is another tenant's.
            "load1": round(os.getloadavg()[0], 2),
            **{
                f"{name}_rss_mb": round(timeline.processes[name][-1].rss_kb / 1024, 1)
                for name in pids
                if timeline.processes.get(name)
            },
        }
    )
    return t


def run(
    minutes: float,
    warmup_s: float | None = None,
    rate: float = 2.0,
    threads: int = 3,
    sample_s: float | None = None,
    workdir: Path | None = None,
    p99_ratio_limit: float = P99_RATIO_LIMIT,
    rss_limit_pct: float = RSS_GROWTH_LIMIT_PCT,
) -> dict[str, Any]:
    duration = minutes * 60
    warmup = warmup_s if warmup_s is not None else max(30.0, 0.2 * duration)
    if warmup >= duration:
        raise ValueError(f"the warm-up ({warmup:.0f} s) must be shorter than the run")
    interval = sample_s if sample_s is not None else max(2.0, min(10.0, duration / 60))
    tmp = Path(tempfile.mkdtemp(prefix="airside-soak-", dir=workdir))
    server: Server | None = None
    load: Load | None = None
    workers: list[threading.Thread] = []
    try:
        data_dir = tmp / "data"
        console.print(f"soak: {minutes:g} min, warm-up {warmup:.0f} s, {rate:g} req/s, in {tmp}")
        clips = make_clips(tmp)
        cameras = tmp / "cameras.toml"
        cameras.write_text("# the soak's cameras (added over the API)\n")
        key = admin_key(data_dir)
        server = start_server(data_dir, cameras, tmp / "server.log")
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as c:
            _check(c.post("/api/v1/galleries", json={"name": GALLERY, "purpose": PURPOSE}),
                   "create the gallery")  # fmt: skip
            for cam in CAMERAS:
                body = {"name": cam, "source": str(clips[cam]), "galleries": [GALLERY],
                        "loop": True, "detect_every": 2}  # fmt: skip
                _check(c.post("/api/v1/cameras", json=body), f"add camera {cam}")
            pids = wait_cameras_running(c)
            console.print(f"server pid {server.proc.pid}, camera workers {pids}")
            base = _astronaut()
            probe = png(base)
            # The gallery starts at its steady size: the warm-up is not spent filling it.
            for n in range(KEEP_SUBJECTS):
                _check(c.post(f"/api/v1/galleries/{GALLERY}/subjects/SOAK-{n:07d}/enrolments",
                              files=[("image", ("p.png", new_photo(base, n), "image/png"))],
                              data={"basis": "consent"}), "enrol the first subjects")  # fmt: skip
            load = Load(server.url, key, rate, threads, time.monotonic())
            load.enrolled.extend(f"SOAK-{n:07d}" for n in range(KEEP_SUBJECTS))
            load.next_subject = KEEP_SUBJECTS
            timeline = Timeline()
            workers = [
                threading.Thread(
                    target=client_thread,
                    args=(load, i, base, probe),
                    name=f"soak-client-{i}",
                    daemon=True,
                )
                for i in range(threads)
            ]
            for w in workers:
                w.start()
            last = sample_once(timeline, load, c, server.proc.pid, 0.0)
            next_sample = interval
            report_at = 60.0
            while (now := load.now()) < duration:
                if server.proc.poll() is not None:
                    raise RuntimeError(f"the server exited:\n{_tail(server.log)}")
                time.sleep(max(0.0, min(next_sample, duration) - now))
                if load.now() >= next_sample or load.now() >= duration:
                    last = sample_once(timeline, load, c, server.proc.pid, last)
                    next_sample += interval
                if load.now() >= report_at:
                    report_at += 60
                    win = timeline.windows[-1]
                    console.print(
                        f"  {load.now() / 60:5.1f} min: {load.requests} requests, "
                        f"{load.errors} errors, server RSS {win.get('server_rss_mb')} MB, "
                        f"window p99 {win.get('p99_ms')} ms"
                    )
            load.stop.set()
            for w in workers:
                w.join(timeout=70)
            final_cams = {i["name"]: i for i in c.get("/api/v1/cameras").json()["items"]}
        restarts: dict[str, int] = {}
        for cam in CAMERAS:
            name = f"camera {cam}"
            restarts[name] = max(0, len(timeline.pids.get(name, [])) - 1) + int(
                final_cams.get(cam, {}).get("restarts") or 0
            )
        verdict = judge(
            timeline.processes,
            load.latencies,
            duration_s=duration,
            warmup_s=warmup,
            errors=load.errors,
            restarts=restarts,
            p99_ratio_limit=p99_ratio_limit,
            rss_limit_pct=rss_limit_pct,
        )
        not_running = [cam for cam in CAMERAS if final_cams.get(cam, {}).get("state") != "running"]
        if not_running:
            verdict["problems"].append(f"camera(s) not running at the end: {not_running}")
            verdict["pass"] = False
        return {
            "minutes": minutes,
            "warmup_s": warmup,
            "sample_s": interval,
            "rate_per_s": rate,
            "client_threads": threads,
            "requests": load.requests,
            "requests_by_op": dict(sorted(load.by_op.items())),
            "errors": load.errors,
            "error_examples": load.failures[:10],
            "refused": load.refused,
            "late_starts": load.late,
            "subjects_enrolled": load.next_subject,
            "cameras": {cam: final_cams.get(cam) for cam in CAMERAS},
            **verdict,
            # The server's log goes with the temporary directory: keep its end on a failure.
            "server_log_tail": [] if verdict["pass"] else _tail(server.log, 60).splitlines(),
            "timeline": timeline.windows,
        }
    finally:
        if load is not None:
            load.stop.set()
            for w in workers:
                w.join(timeout=70)
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def print_result(result: dict[str, Any]) -> None:
    table = Table(title=f"soak: {result['minutes']:g} min, {result['requests']} requests")
    for col in ("process", "RSS start MB", "RSS end MB", "growth %", "fds", "threads", "ok"):
        table.add_column(col, justify="right")
    for p in result["processes"]:
        if "rss_start_mb" not in p:
            table.add_row(p["name"], "-", "-", "-", "-", "-", "no")
            continue
        table.add_row(
            p["name"],
            f"{p['rss_start_mb']:.1f}",
            f"{p['rss_end_mb']:.1f}",
            f"{p['rss_growth_pct']:+.2f}",
            f"{p['fds_start']} -> max {p['fds_max']}",
            f"{p['threads_start']} -> max {p['threads_max']}",
            "yes" if p["ok"] else "[red]no[/]",
        )
    console.print(table)
    console.print(
        f"p99 first {result['p99_ms_first']} ms, last {result['p99_ms_last']} ms "
        f"({result['compare_window_s']} s windows); errors {result['errors']}; "
        f"refused {result['refused'] or 0}; by op {result['requests_by_op']}"
    )
    for p in result["problems"]:
        console.print(f"[red]FAIL[/] {p}")
    for e in result.get("error_examples", []):
        console.print(f"  error: {e}")
    console.print("[green]PASS[/]" if result["pass"] else "[red]FAIL[/]")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m airside.soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup-s", type=float, default=None,
                    help="default: 20%% of the run, at least 30 s")  # fmt: skip
    ap.add_argument("--rate", type=float, default=2.0, help="requests per second, in all")
    ap.add_argument("--threads", type=int, default=3, help="client threads")
    ap.add_argument("--sample-s", type=float, default=None,
                    help="seconds between samples (default: run/60, 2 to 10 s)")  # fmt: skip
    ap.add_argument("--p99-ratio", type=float, default=P99_RATIO_LIMIT,
                    help="largest last/first p99 that passes")  # fmt: skip
    ap.add_argument("--rss-limit", type=float, default=RSS_GROWTH_LIMIT_PCT,
                    help="largest RSS growth after warm-up that passes, in %%")  # fmt: skip
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        with _sigterm_as_interrupt():
            result = run(args.minutes, args.warmup_s, args.rate, args.threads, args.sample_s,
                         p99_ratio_limit=args.p99_ratio, rss_limit_pct=args.rss_limit)  # fmt: skip
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: every process the soak started was stopped[/]")
        return 130
    except (RuntimeError, ValueError) as e:
        console.print(f"[red]the soak could not run:[/] {e}")
        return 2
    print_result(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        console.print(f"wrote {args.json}")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
