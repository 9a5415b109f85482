"""One camera's worker process: ``python -m airside.server.cameras.worker``.

The supervisor starts it with the installation's settings in its environment and writes
one JSON line on its stdin: ``{"camera": {...}, "key": "as1_..."}`` (the camera's
configuration and an API key of the camera's principal, kept out of the command line and
the environment). The worker authenticates with that key, as ``airside watch`` does with
``AIRSIDE_API_KEY``, and runs the same pipeline (``services.watch``) on the camera's feed
until the feed ends or it is told to stop: its stdin closes (the supervisor asks, or died)
or it gets SIGTERM. Open tracks are then closed and their events kept.

Its stdout is the status channel (``status.py``): a JSON line at least every
``REPORT_EVERY_S``. Anything else the process prints goes to stderr. It exits 0 when the
feed ended or it was stopped, ``EXIT_FAILED`` when retrying cannot help (the error is in
its last report), and anything else on an unexpected error (the supervisor restarts it).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from airside.config import Settings
from airside.errors import AirsideError
from airside.server.cameras.config import CameraConfig
from airside.server.cameras.feed import CameraFeed
from airside.server.cameras.status import EXIT_FAILED, REPORT_EVERY_S, encode_report
from airside.video.pipeline import WatchStats
from airside.video.sources import SystemEvent

log = logging.getLogger("airside.camera")


class Reporter:
    """Writes the worker's status line on a timer and on every change of state."""

    def __init__(self, channel: TextIO) -> None:
        self._channel = channel
        self._lock = threading.Lock()
        self.state = "starting"
        self.error: str | None = None
        self.stats: WatchStats | None = None
        self.feed: CameraFeed | None = None
        self._recent: deque[tuple[float, int]] = deque(maxlen=8)  # (time, frames processed)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="camera-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def set_state(self, state: str, error: str | None = None) -> None:
        self.state = state
        if error is not None:
            self.error = error
        self.report()

    def on_stats(self, stats: WatchStats) -> None:
        self.stats = stats
        if self.state == "starting" and stats.frames_processed:
            self.set_state("running")

    def on_event(self, event: SystemEvent) -> None:
        if event.type == "stream_lost":
            self.set_state("reconnecting", f"stream lost: {event.detail}")
        elif event.type == "stream_restored" and self.state == "reconnecting":
            self.set_state("running")

    def _fps(self, processed: int) -> float:
        now = time.monotonic()
        self._recent.append((now, processed))
        (t0, n0), (t1, n1) = self._recent[0], self._recent[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def report(self) -> None:
        s = self.stats
        processed = s.frames_processed if s is not None else 0
        line: dict[str, Any] = {
            "type": "status",
            "state": self.state,
            "error": self.error,
            "pid": os.getpid(),
            "frames_read": s.frames_read if s else 0,
            "frames_processed": processed,
            "frames_dropped": s.frames_skipped if s else 0,
            "events": s.events if s else 0,
            "safety_events": s.safety_events if s else 0,
            "embedding_calls": s.embedding_calls if s else 0,
            "tracks": s.active_tracks if s else 0,
            "people": s.people if s else 0,
            "zones": dict(s.zones_now) if s else {},
            "lag_s": round(s.lag_s, 3) if s else 0.0,
            "outages": self.feed.outages if self.feed is not None else 0,
        }
        with self._lock:
            line["fps"] = round(self._fps(processed), 2) if self.state == "running" else 0.0
            try:
                self._channel.write(encode_report(line))
                self._channel.flush()
            except (OSError, ValueError):  # the supervisor is gone: the stdin watch stops us
                pass

    def _loop(self) -> None:
        while not self._done.wait(REPORT_EVERY_S):
            self.report()

    def close(self) -> None:
        self._done.set()


def _status_channel() -> TextIO:
    """The real stdout, kept for status lines; fd 1 and ``sys.stdout`` then go to stderr, so
    that nothing a library prints can be taken for a status line."""
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def _watch_stdin(stop: threading.Event, on_stop: list[Any]) -> None:
    """Stop when stdin closes: the supervisor asked, or died (so no worker outlives it)."""
    try:
        while sys.stdin.readline():
            pass
    except (OSError, ValueError):
        pass
    stop.set()
    for fn in on_stop:
        fn()


def _describe(e: BaseException) -> str:
    return str(e) if isinstance(e, AirsideError) else f"{type(e).__name__}: {e}"[:500]


def run(job: dict[str, Any], reporter: Reporter, stop: threading.Event,
        on_stop: list[Any]) -> int:  # fmt: skip
    from airside.services import principal_admin
    from airside.services.app import Airside
    from airside.services.watch import WatchRequest, watch

    cam = CameraConfig.model_validate(job["camera"])
    app = Airside(Settings())
    try:
        principal = principal_admin.authenticate(app, str(job["key"]))
        feed = CameraFeed(cam.source, loop=cam.loop, fps=cam.fps, on_event=reporter.on_event)
    except AirsideError as e:
        reporter.set_state("failed", _describe(e))
        app.close()
        return EXIT_FAILED
    reporter.feed = feed
    on_stop.append(feed.stop)
    if stop.is_set():
        feed.stop()
    out = None
    if cam.record is not None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = Path(cam.record) / f"{cam.name}-{stamp}.mp4"
        out.parent.mkdir(parents=True, exist_ok=True)
    request = WatchRequest(
        galleries=list(cam.galleries),
        camera=cam.name,
        purpose=cam.purpose,
        scene=Path(cam.scene) if cam.scene else None,
        detect_every=cam.detect_every,
        redact=cam.redact,
        out=out,
    )
    try:
        watch(app, principal, feed, request, on_status=reporter.on_stats)
    except AirsideError as e:
        reporter.set_state("failed", _describe(e))
        return EXIT_FAILED
    finally:
        app.close()
    reporter.set_state("stopped" if stop.is_set() else "ended")
    return 0


def main() -> int:
    channel = _status_channel()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    reporter = Reporter(channel)
    job = json.loads(sys.stdin.readline() or "{}")
    stop = threading.Event()
    on_stop: list[Any] = []
    threading.Thread(target=_watch_stdin, args=(stop, on_stop), name="camera-stdin",
                     daemon=True).start()  # fmt: skip

    def terminate(*_: object) -> None:
        stop.set()
        for fn in on_stop:
            fn()

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    reporter.start()
    try:
        return run(job, reporter, stop, on_stop)
    except Exception as e:  # reported, then the supervisor restarts the worker
        log.exception("camera worker failed")
        reporter.set_state("failed" if isinstance(e, AirsideError) else reporter.state,
                           _describe(e))  # fmt: skip
        return EXIT_FAILED if isinstance(e, AirsideError) else 1
    finally:
        reporter.close()
        reporter.report()


if __name__ == "__main__":
    raise SystemExit(main())
