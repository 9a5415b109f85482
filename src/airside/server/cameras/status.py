"""What a camera worker reports, and what the supervisor makes of it.

A worker writes one JSON object per line on its status channel (its stdout), at least
every ``REPORT_EVERY_S``: its state and its counters since it started. The supervisor adds
what only it knows (restarts, the worker's exit, totals across workers) and keeps one
:class:`CameraStatus` per camera.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

#: How often a worker reports, whether frames flow or not (a heartbeat).
REPORT_EVERY_S: Final = 0.5
#: A worker exits with this when retrying cannot help (a missing file, a refused principal,
#: a bad scene): the camera is "failed" and not restarted until asked to.
EXIT_FAILED: Final = 3

# starting: the worker is loading; running: frames flow; reconnecting: the stream dropped and
# the worker is reconnecting; restarting: the worker died and waits its back-off; failed:
# stopped on an error retrying cannot fix (``last_error``); ended: a file source ended;
# stopped: the server stopped it; disabled: ``enabled = false``; remote: run by a camera
# worker on another machine (``remote = true``), its principal provisioned here.
STATES: Final = (
    "starting", "running", "reconnecting", "restarting", "failed", "ended", "stopped",
    "disabled", "remote",
)  # fmt: skip
#: The counters a worker reports (cumulative for that worker).
COUNTERS: Final = (
    "frames_read", "frames_processed", "frames_dropped", "events", "safety_events",
    "embedding_calls", "outages",
)  # fmt: skip


@dataclass
class CameraStatus:
    name: str
    state: str = "starting"
    pid: int | None = None
    restarts: int = 0
    last_error: str | None = None
    since: float = field(default_factory=time.time)  # when ``state`` was entered
    fps: float = 0.0  # frames processed per second, recently
    lag_s: float = 0.0
    tracks: int = 0
    people: int = 0  # people in view at the last safety detection frame
    zones: dict[str, int] = field(default_factory=dict)  # of them, per zone
    # Totals over every worker this camera had (a restart does not reset them).
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    # The current worker's own counters (folded into ``totals`` when it ends).
    current: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))

    def enter(self, state: str, error: str | None = None) -> None:
        if state != self.state:
            self.state, self.since = state, time.time()
        if error is not None:
            self.last_error = error

    def counter(self, name: str) -> int:
        return self.totals[name] + self.current[name]

    def worker_report(self, report: dict[str, Any]) -> None:
        """Take in one line a worker wrote."""
        for k in COUNTERS:
            v = report.get(k)
            if isinstance(v, int) and v >= self.current[k]:
                self.current[k] = v
        for k in ("fps", "lag_s"):
            v = report.get(k)
            if isinstance(v, int | float):
                setattr(self, k, float(v))
        if isinstance(report.get("tracks"), int):
            self.tracks = report["tracks"]
        if isinstance(report.get("people"), int):
            self.people = report["people"]
        zones = report.get("zones")
        if isinstance(zones, dict):
            self.zones = {str(k): v for k, v in zones.items() if isinstance(v, int)}
        state = report.get("state")
        if state in STATES:
            error = report.get("error")
            self.enter(state, error if isinstance(error, str) else None)

    def worker_ended(self) -> None:
        for k in COUNTERS:
            self.totals[k] += self.current[k]
            self.current[k] = 0
        self.pid, self.fps, self.lag_s, self.tracks = None, 0.0, 0.0, 0
        self.people, self.zones = 0, {}

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)),
            "pid": self.pid,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "fps": round(self.fps, 2),
            "lag_s": round(self.lag_s, 3),
            "tracks": self.tracks,
            "people": self.people,
            "zones": dict(self.zones),
            **{k: self.counter(k) for k in COUNTERS},
        }


def encode_report(report: dict[str, Any]) -> str:
    return json.dumps(report, separators=(",", ":")) + "\n"


def decode_report(line: str) -> dict[str, Any] | None:
    """One status line, or None for anything else a worker printed."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and obj.get("type") == "status" else None
