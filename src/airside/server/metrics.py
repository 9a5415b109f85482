"""Prometheus metrics of one server process (prometheus-client), in their own registry so
that several apps in one test process do not collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from airside.server.work import WorkPool

REGISTRY = CollectorRegistry()

REQUEST_SECONDS = Histogram(
    "airside_http_request_seconds", "HTTP request latency", ["route", "method", "status"],
    registry=REGISTRY,
)  # fmt: skip
DECISIONS = Counter(
    "airside_decisions_total", "verify and identify outcomes", ["kind", "outcome"],
    registry=REGISTRY,
)  # fmt: skip
WORK_QUEUE = Gauge("airside_work_in_hand", "CPU-bound requests running or waiting",
                   registry=REGISTRY)  # fmt: skip
OVERLOADED = Counter("airside_overloaded_total", "requests refused with 503 (busy)",
                     registry=REGISTRY)  # fmt: skip


def observe_pool(pool: WorkPool) -> None:
    WORK_QUEUE.set(pool.depth)
