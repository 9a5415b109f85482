"""What the HTTP server adds to identification (``make bench``'s server section).

The same installation is searched two ways, side by side in one run: in this process
(``services.matching.identify``, as the CLI calls it) and over HTTP on loopback from an
``airside serve`` in its own process (the deployment's shape: the load generator does not
share the server's interpreter). Both use the same settings, models, gallery, probe photo
and operator principal.

* **Added latency**: one client, calls alternating between the two ways (so that drift of
  this shared machine hits both alike): p50 and p99 of each, and their difference.
* **Throughput**: 1, 4 and 16 concurrent clients, in process (threads, at most one call
  per core at once, as the server's pool runs them) and over HTTP (one keep-alive
  connection each): requests/s, p99, errors (any answer but 200), and HTTP's requests/s as
  a share of the best in-process figure.
* **Event latency out** (issue 14): the server started with MQTT on a broker (Mosquitto at
  127.0.0.1:1883 when one answers, else amqtt started here on a free port), one SSE client
  on ``GET /api/v1/events/stream`` and one MQTT subscriber on ``<prefix>/events``; identity
  events are recorded through the service layer as a camera worker does (a ``camera``
  principal scoped to the gallery, in this process, into the server's store), spaced
  ~50 ms; each event's latency runs from the moment its recording returned (committed) to
  its arrival at each client: p50, p99 and any that never arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from airside.config import DetectorSettings, Settings
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.server.cameras.supervisor import worker_env
from airside.server.local_broker import amqtt_broker, answers, free_port
from airside.services import enrolment, events, galleries, matching, principal_admin
from airside.services.app import Airside

GALLERY = "bench"
CLIENTS = (1, 4, 16)
EVENTS = 50
EVENTS_QUICK = 20
EVENT_SPACING_S = 0.05
EVENT_WAIT_S = 10.0  # after the last event, how long the clients may take to get them all


def _photos() -> tuple[bytes, bytes]:
    """(enrolment photo, probe): scikit-image's astronaut as PNG, and as a JPEG at q70."""
    from PIL import Image
    from skimage import data

    img = Image.fromarray(np.asarray(data.astronaut()))  # type: ignore[no-untyped-call]
    enrol, probe = io.BytesIO(), io.BytesIO()
    img.save(enrol, format="PNG")
    img.save(probe, format="JPEG", quality=70)
    return enrol.getvalue(), probe.getvalue()


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) * 1000 if values else float("nan")


class _ServerProcess:
    """``airside serve`` on a loopback port, in its own process, on ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        code = "from airside.cli.main import app; app()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "--data-dir", str(settings.data_dir), "serve",
             "--port", str(self.port)],
            env=worker_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=self.url, timeout=5) as c:
            while True:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"the bench server exited: {err[-2000:]}")
                try:
                    if c.get("/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the bench server did not become ready")
                time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _in_process(
    call: Callable[[], object], clients: int, requests: int, workers: int
) -> tuple[float, list[float], int]:
    """(requests/s, latencies, errors) of ``requests`` calls from ``clients`` threads, run
    by a pool of ``workers`` threads in arrival order (the server's bounded pool, in
    process); a latency includes the wait for a worker, as over HTTP."""
    latencies: list[float] = []
    errors = 0
    left = requests
    lock = threading.Lock()

    def client(pool: ThreadPoolExecutor) -> None:
        nonlocal errors, left
        while True:
            with lock:
                if left <= 0:
                    return
                left -= 1
            t = time.perf_counter()
            try:
                pool.submit(call).result()
            except Exception:
                errors += 1
            latencies.append(time.perf_counter() - t)

    with ThreadPoolExecutor(workers) as pool:
        threads = [threading.Thread(target=client, args=(pool,)) for _ in range(clients)]
        started = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return requests / (time.perf_counter() - started), latencies, errors


async def _over_http(
    url: str, key: str, probe: bytes, clients: int, requests: int
) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    left = requests
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal left, errors
        while left > 0:
            left -= 1
            t = time.perf_counter()
            r = await c.post(f"/api/v1/galleries/{GALLERY}/identify",
                             files={"image": ("p.jpg", probe, "image/jpeg")})  # fmt: skip
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                errors += 1

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=120, limits=limits) as c:  # fmt: skip
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        return requests / (time.perf_counter() - started), latencies, errors


def _setup(settings: Settings, photo: bytes) -> tuple[Airside, Principal, str]:
    from airside.vision.factory import default_analyzer

    analyzer = default_analyzer(settings)
    app = Airside(settings, analyzer_factory=lambda _s: analyzer)
    admin = principal_admin.ensure_local_admin(app)
    galleries.create_gallery(app, admin, GALLERY, "bench")
    enrolment.enrol(app, admin, GALLERY, "astronaut", [photo], BasisInput("consent"))
    op = principal_admin.add_principal(app, admin, "bench-operator", "operator",
                                       [(GALLERY, "*")])  # fmt: skip
    key = principal_admin.issue_key(app, admin, "bench-operator").secret
    return app, op, key


@contextlib.contextmanager
def _broker() -> Iterator[tuple[int, str]]:
    """(port, description): the broker at 127.0.0.1:1883 when one answers (Mosquitto),
    else amqtt started here."""
    if answers("127.0.0.1", 1883):
        yield 1883, "127.0.0.1:1883 (Mosquitto)"
        return
    with amqtt_broker() as port:
        yield port, f"amqtt on 127.0.0.1:{port}, in this process"


class _MqttListener:
    """One subscriber on ``<prefix>/events`` (and ``<prefix>/available``): the arrival time
    of each event id, the first copy (QoS 1 is at least once)."""

    def __init__(self, port: int, prefix: str) -> None:
        self.got: dict[int, float] = {}
        self.online = threading.Event()
        self.events_topic = f"{prefix}/events"
        self.available_topic = f"{prefix}/available"
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"airside-bench-{uuid.uuid4().hex[:8]}")  # fmt: skip

        def on_connect(c: mqtt.Client, *_a: object) -> None:
            c.subscribe([(self.events_topic, 1), (self.available_topic, 1)])

        def on_subscribe(*_a: object) -> None:
            subscribed.set()

        def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
            now = time.monotonic()
            if m.topic == self.events_topic:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self.got.setdefault(int(json.loads(m.payload)["id"]), now)
            elif m.topic == self.available_topic and m.payload == b"online":
                self.online.set()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not subscribed.wait(10):
            self.close()
            raise RuntimeError("the MQTT broker did not acknowledge the subscription")

    def close(self) -> None:
        # The server leaves "offline" retained on its topic: clear it (a shared broker).
        info = self.client.publish(self.available_topic, b"", qos=1, retain=True)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()


class _SseListener:
    """One SSE client on ``/api/v1/events/stream`` (httpx, on its own event loop in a
    thread): the arrival time of each event id."""

    def __init__(self, url: str, key: str) -> None:
        self.got: dict[int, float] = {}
        self._url, self._key = url, key
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="bench-sse", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            self.close()
            raise RuntimeError(f"the event stream did not open: {self._error!r}")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self._read())
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except Exception as e:
            self._error = e
            self._ready.set()
        finally:
            self._loop.close()

    async def _read(self) -> None:
        headers = {"Authorization": f"Bearer {self._key}"}
        timeout = httpx.Timeout(10, read=None)
        async with (
            httpx.AsyncClient(base_url=self._url, headers=headers, timeout=timeout) as c,
            c.stream("GET", "/api/v1/events/stream") as res,
        ):
            res.raise_for_status()
            self._ready.set()
            async for line in res.aiter_lines():
                if line.startswith("id:"):
                    self.got.setdefault(int(line[3:].strip()), time.monotonic())

    def close(self) -> None:
        if self._task is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=10)


def _face_crop(photo: bytes) -> bytes:
    """A face-sized JPEG crop, as a camera keeps with an identity event."""
    from PIL import Image

    out = io.BytesIO()
    face = Image.open(io.BytesIO(photo)).convert("RGB").crop((160, 40, 320, 200))
    face.resize((112, 112)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _summary(recorded: dict[int, float], got: dict[int, float]) -> dict[str, Any]:
    lat = [got[e] - t for e, t in recorded.items() if e in got]
    return {
        "p50_ms": round(_pct(lat, 50), 1),
        "p99_ms": round(_pct(lat, 99), 1),
        "max_ms": round(max(lat) * 1000, 1) if lat else float("nan"),
        "received": len(lat),
        "missing": len(recorded) - len(lat),
    }


def _event_latency(app: Airside, settings: Settings, key: str, photo: bytes,
                   n: int) -> dict[str, Any]:  # fmt: skip
    """Recorded (committed) -> SSE client, and -> MQTT subscriber, for ``n`` identity
    events recorded ``EVENT_SPACING_S`` apart by a camera principal in this process."""
    admin = principal_admin.ensure_local_admin(app)
    cam = principal_admin.add_principal(app, admin, "bench-camera", "camera", [(GALLERY, "*")])
    crop = _face_crop(photo)

    def record(track: int) -> int:
        return events.record_identity_event(
            app, cam, camera="bench-gate", track=track, subject="astronaut", gallery=GALLERY,
            score=0.9, first_seen=float(track), last_seen=float(track), crop_jpeg=crop,
        )  # fmt: skip

    prefix = f"airside-bench-{uuid.uuid4().hex[:10]}"
    recorded: dict[int, float] = {}
    with _broker() as (port, broker):
        mq = _MqttListener(port, prefix)
        try:
            update = {"mqtt_url": f"mqtt://127.0.0.1:{port}", "mqtt_topic_prefix": prefix}
            server = _ServerProcess(settings.model_copy(update=update))
            try:
                if not mq.online.wait(30):
                    raise RuntimeError("the bench server did not connect to the MQTT broker")
                sse = _SseListener(server.url, key)
                try:
                    # Warm-up events until one reaches both: the stream is open and the
                    # publisher has its place in the store (it starts at the newest event).
                    for _ in range(15):
                        first = record(0)
                        deadline = time.monotonic() + 2
                        while time.monotonic() < deadline and not (
                            first in sse.got and first in mq.got
                        ):
                            time.sleep(0.02)
                        if first in sse.got and first in mq.got:
                            break
                    else:
                        raise RuntimeError("no warm-up event reached both SSE and MQTT")
                    start = time.monotonic()
                    for i in range(1, n + 1):
                        pause = start + i * EVENT_SPACING_S - time.monotonic()
                        if pause > 0:
                            time.sleep(pause)
                        ev = record(i)
                        recorded[ev] = time.monotonic()
                    deadline = time.monotonic() + EVENT_WAIT_S
                    while time.monotonic() < deadline and not all(
                        e in sse.got and e in mq.got for e in recorded
                    ):
                        time.sleep(0.02)
                    sse_got, mq_got = dict(sse.got), dict(mq.got)
                finally:
                    sse.close()
            finally:
                server.close()
        finally:
            mq.close()
    return {
        "events": n,
        "spacing_ms": EVENT_SPACING_S * 1000,
        "events_poll_s": settings.events_poll_s,
        "broker": broker,
        "sse": _summary(recorded, sse_got),
        "mqtt": _summary(recorded, mq_got),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure; returns the figures (printed by ``airside.bench``)."""
    photo, probe = _photos()
    n_latency = 12 if quick else 40
    n_requests = 32 if quick else 96
    workers = os.cpu_count() or 1  # the server's pool (server_workers 0: one per core)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        settings = Settings(
            data_dir=Path(tmp) / "data", embed_threads=1,
            detector=DetectorSettings(fallback="none", threads=1),
        )  # fmt: skip
        app, op, key = _setup(settings, photo)
        stack.callback(app.close)

        def identify() -> object:
            return matching.identify(app, op, GALLERY, probe, k=5)

        server = _ServerProcess(settings)
        try:
            with httpx.Client(base_url=server.url, timeout=120,
                              headers={"Authorization": f"Bearer {key}"}) as c:  # fmt: skip

                def over_http() -> None:
                    r = c.post(f"/api/v1/galleries/{GALLERY}/identify",
                               files={"image": ("p.jpg", probe, "image/jpeg")})  # fmt: skip
                    r.raise_for_status()

                for _ in range(3):  # warm up both
                    identify()
                    over_http()
                local: list[float] = []
                remote: list[float] = []
                for _ in range(n_latency):
                    t = time.perf_counter()
                    identify()
                    local.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    over_http()
                    remote.append(time.perf_counter() - t)
                health: list[float] = []
                for _ in range(50):
                    t = time.perf_counter()
                    c.get("/healthz")
                    health.append(time.perf_counter() - t)
            rows = []
            for clients in CLIENTS:
                # Two rounds each, alternating, so that the machine's load drifting between
                # them weighs on both ways alike.
                half = n_requests // 2
                local_t = http_t = 0.0
                lat_in: list[float] = []
                lat_http: list[float] = []
                err_in = err_http = 0
                for _ in range(2):
                    rps, lat, err = _in_process(identify, clients, half, workers)
                    local_t, err_in = local_t + half / rps, err_in + err
                    lat_in += lat
                    rps, lat, err = asyncio.run(_over_http(server.url, key, probe, clients, half))
                    http_t, err_http = http_t + half / rps, err_http + err
                    lat_http += lat
                rows.append({
                    "clients": clients, "requests": n_requests,
                    "in_process_rps": round(n_requests / local_t, 2),
                    "in_process_p99_ms": round(_pct(lat_in, 99), 1),
                    "in_process_errors": err_in,
                    "http_rps": round(n_requests / http_t, 2),
                    "http_p99_ms": round(_pct(lat_http, 99), 1),
                    "http_errors": err_http,
                })  # fmt: skip
        finally:
            server.close()
        event_latency = _event_latency(app, settings, key, photo,
                                       EVENTS_QUICK if quick else EVENTS)  # fmt: skip
    best = max(r["in_process_rps"] for r in rows)
    for r in rows:
        r["ratio_to_in_process_max"] = round(r["http_rps"] / best, 3)
    return {
        "cores": os.cpu_count(),
        "latency": {
            "calls": n_latency,
            "in_process_p50_ms": round(_pct(local, 50), 1),
            "in_process_p99_ms": round(_pct(local, 99), 1),
            "http_p50_ms": round(_pct(remote, 50), 1),
            "http_p99_ms": round(_pct(remote, 99), 1),
            "added_p50_ms": round(_pct(remote, 50) - _pct(local, 50), 1),
            "added_p99_ms": round(_pct(remote, 99) - _pct(local, 99), 1),
            "healthz_p50_ms": round(_pct(health, 50), 2),
            "healthz_p99_ms": round(_pct(health, 99), 2),
        },
        "throughput": rows,
        "in_process_max_rps": best,
        "event_latency": event_latency,
    }
