"""Under load the server refuses instead of piling up, and stays reachable: CPU-bound calls
run on a bounded pool; beyond it a request gets 503 with Retry-After at once, while
/healthz and /metrics answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.conftest import png_bytes
from tests.server_harness import Server, running

from airside.config import Settings
from airside.services.app import Airside
from airside.vision.analyzer import FaceAnalyzer


class SlowAnalyzer:
    """The real analyzer, with every face search held up while ``hold`` is clear."""

    def __init__(self, real: FaceAnalyzer) -> None:
        self._real = real
        self.hold = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def observe(self, pixels: np.ndarray) -> object:
        self.entered.set()
        self.hold.wait(30)
        return self._real.observe(pixels)


@pytest.fixture
def busy_server(tmp_path: Path, analyzer: FaceAnalyzer) -> Iterator[tuple[Server, SlowAnalyzer]]:
    slow = SlowAnalyzer(analyzer)
    settings = Settings(data_dir=tmp_path / "d", server_workers=1, server_queue=0)
    app = Airside(settings, analyzer_factory=lambda _s: slow)  # type: ignore[arg-type,return-value]
    try:
        with running(app) as s:
            yield s, slow
    finally:
        slow.hold.set()
        app.close()


def test_a_request_beyond_the_pool_is_refused_at_once_with_retry_after(
    busy_server: tuple[Server, SlowAnalyzer], astronaut: np.ndarray
) -> None:
    server, slow = busy_server
    files = {"image_a": ("a.png", png_bytes(astronaut), "image/png"),
             "image_b": ("b.png", png_bytes(astronaut), "image/png")}  # fmt: skip
    first: list[httpx.Response] = []

    def occupy() -> None:
        with server.client(server.admin_key) as c:
            first.append(c.post("/api/v1/verify", files=files))

    t = threading.Thread(target=occupy)
    t.start()
    assert slow.entered.wait(30)  # the one worker is busy
    with server.client(server.admin_key) as c:
        started = time.monotonic()
        refused = c.post("/api/v1/verify", files=files)
        waited = time.monotonic() - started
        health = c.get("/healthz")
        metrics = c.get("/metrics")
    slow.hold.set()
    t.join(60)

    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["code"] == "overloaded"
    assert waited < 5  # refused, not queued behind the busy worker
    assert health.status_code == 200 and metrics.status_code == 200
    assert first[0].status_code == 200 and first[0].json()["match"]
