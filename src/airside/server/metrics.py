"""Prometheus metrics of one server process (prometheus-client), in their own registry so
that several apps in one test process do not collide.

Requests are observed by ``middleware.RequestMetrics`` (latency by route template, method
and status); decisions and embeddings by the matching routes; the work queue and the
cameras are read when /metrics is scraped (the cameras from their supervisor, whose
workers report to it: counters there are totals over every worker a camera had)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from airside.server.cameras.status import STATES
from airside.server.work import WorkPool

REGISTRY = CollectorRegistry()

# Buckets from 1 ms (health, metrics) to a minute (a photo with no face on a busy server).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0)  # fmt: skip

REQUEST_SECONDS = Histogram(
    "airside_http_request_seconds", "HTTP request latency", ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
DECISIONS = Counter(
    "airside_decisions_total", "verify and identify outcomes", ["kind", "outcome"],
    registry=REGISTRY,
)  # fmt: skip
EMBEDDINGS = Counter(
    "airside_embedding_calls_total", "faces embedded for API requests", ["kind"],
    registry=REGISTRY,
)  # fmt: skip
WORK_QUEUE = Gauge("airside_work_in_hand", "CPU-bound requests running or waiting",
                   registry=REGISTRY)  # fmt: skip
OVERLOADED = Counter("airside_overloaded_total", "requests refused with 503 (busy)",
                     registry=REGISTRY)  # fmt: skip
AUDIT_APPEND_SECONDS = Histogram(
    "airside_audit_append_seconds",
    "one audit record appended (chain head locked, record hashed and signed, flushed)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)  # fmt: skip


def observe_pool(pool: WorkPool) -> None:
    WORK_QUEUE.set(pool.depth)


class CameraSource(Protocol):
    """What the camera metrics read: one status dict per camera (the supervisor's)."""

    def statuses(self) -> list[dict[str, Any]]: ...


_CAMERA_COUNTERS = (
    ("frames_read", "frames decoded"),
    ("frames_processed", "frames processed"),
    ("frames_dropped", "frames dropped because processing fell behind"),
    ("events", "identity events (tracks ended with a decided identity)"),
    ("safety_events", "safety events"),
    ("embedding_calls", "faces embedded"),
    ("outages", "stream outages (stream_lost)"),
    ("restarts", "worker restarts"),
)


class CameraCollector(Collector):
    """Per-camera counters, fps and stream state, read from the supervisors registered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: list[CameraSource] = []

    def add(self, source: CameraSource) -> None:
        with self._lock:
            self._sources.append(source)

    def discard(self, source: CameraSource) -> None:
        with self._lock:
            if source in self._sources:
                self._sources.remove(source)

    def _statuses(self) -> Iterable[dict[str, Any]]:
        with self._lock:
            sources = list(self._sources)
        for s in sources:
            yield from s.statuses()

    def collect(self) -> Iterator[Metric]:
        cams = list(self._statuses())
        for key, text in _CAMERA_COUNTERS:
            c = CounterMetricFamily(f"airside_camera_{key}", f"camera {text}", labels=["camera"])
            for st in cams:
                c.add_metric([st["name"]], float(st[key]))
            yield c
        fps = GaugeMetricFamily("airside_camera_fps", "camera frames processed per second",
                                labels=["camera"])  # fmt: skip
        lag = GaugeMetricFamily("airside_camera_lag_seconds", "camera processing lag",
                                labels=["camera"])  # fmt: skip
        state = GaugeMetricFamily("airside_camera_state",
                                  "1 for the camera's current state (worker and stream)",
                                  labels=["camera", "state"])  # fmt: skip
        people = GaugeMetricFamily("airside_camera_people",
                                   "people in view at the camera's last detection frame",
                                   labels=["camera"])  # fmt: skip
        zone = GaugeMetricFamily("airside_camera_zone_people",
                                 "people in a scene zone at the camera's last detection frame",
                                 labels=["camera", "zone"])  # fmt: skip
        for st in cams:
            people.add_metric([st["name"]], float(st.get("people", 0)))
            for z, n in sorted(st.get("zones", {}).items()):
                zone.add_metric([st["name"], z], float(n))
        yield people
        yield zone
        for st in cams:
            fps.add_metric([st["name"]], float(st["fps"]))
            lag.add_metric([st["name"]], float(st["lag_s"]))
            for s in STATES:
                state.add_metric([st["name"], s], 1.0 if st["state"] == s else 0.0)
        yield fps
        yield lag
        yield state


CAMERAS = CameraCollector()
REGISTRY.register(CAMERAS)
