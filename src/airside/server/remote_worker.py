"""A camera worker on another machine: one ``remote`` camera's pipeline, run where its feed
is, with no store and no key but the camera's own (docs/cameras.md).

It asks the server for the camera's settings (``GET /cameras/{name}/worker``), opens the
feed, and runs the same :class:`~airside.video.pipeline.Pipeline` as a supervised camera
with two stand-ins for the services:

* :class:`RemoteIdentifier` embeds the crops here and sends the server only the vectors,
  with each crop's quality, SHA-256 and track (``POST /cameras/{name}/identify``); never a
  frame or a crop. While the server is out of reach nothing is searched: those faces
  stay unidentified (counted, and reported when the server is back).
* :class:`RemoteSink` names each event (a UUID) and appends it to the on-disk buffer
  (``worker_buffer.py``); a sender thread posts the buffer's head in order
  (``POST /cameras/{name}/events``) and removes what the server acknowledged. The server
  records an event named twice once, so sending again after a lost answer is safe.

Both share a :class:`Link`: when one finds the server gone, both back off, and the outage
is recorded as system events (``server_lost``, then ``server_restored`` with the number of
faces not identified meanwhile).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import math
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from airside.analytics.rules import SafetyEvent
from airside.analytics.scene import parse_scene
from airside.config import Settings
from airside.errors import AirsideError, ContractMismatchError
from airside.server.cameras.feed import CameraFeed
from airside.server.worker_buffer import EventBuffer
from airside.services.watch import WatchRequest, safety_analytics, watch_config
from airside.video.pipeline import IdentityEvent, Match, Pipeline, WatchStats
from airside.video.sources import SystemEvent
from airside.vision.contract import EmbeddingContract
from airside.vision.protocols import FaceCrop, FrameFaceEngine

log = logging.getLogger("airside.worker")

#: Events per request, and bytes per request (a safety snapshot is some tens of kB).
BATCH_EVENTS = 50
BATCH_BYTES = 4 * 1024 * 1024


class Unreachable(Exception):
    """The server did not answer (refused, timed out, cut off) or said it cannot now (5xx,
    429): retrying later may help."""


class Refused(AirsideError):
    """The server answered no (4xx): retrying cannot help. ``code`` is the server's."""


@dataclass(frozen=True)
class WorkerOptions:
    server: str
    camera: str
    key: str
    data_dir: Path
    ca_file: Path | None = None
    buffer_events: int = 10_000
    buffer_bytes: int = 64 * 1024 * 1024
    drain_s: float = 10.0
    timeout_s: float = 15.0


def check_server_url(url: str) -> str:
    """``url`` without a trailing slash, when it is https, or http to this machine only:
    the key and the embeddings (biometric data) never cross a network in the clear."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AirsideError(f"the server's URL {url!r} must be https://host[:port]",
                           code="bad_config", details={"field": "server"})  # fmt: skip
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise AirsideError(
            f"the server {parts.hostname!r} is another machine: use https (a camera's "
            "embeddings and key never cross a network in the clear)",
            code="bad_config",
            details={"field": "server"},
        )
    return url.rstrip("/")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Link:
    """The server, as the identifier and the sink both see it: up, or out of reach until a
    back-off passes (doubling from ``backoff_s`` to ``max_backoff_s``)."""

    def __init__(
        self,
        options: WorkerOptions,
        *,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
    ) -> None:
        self.base = check_server_url(options.server)
        self.camera = options.camera
        self._headers = {"Authorization": f"Bearer {options.key}"}
        self._verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(options.ca_file)) if options.ca_file else True
        )
        self._timeout = httpx.Timeout(options.timeout_s, connect=min(3.0, options.timeout_s))
        self._lock = threading.Lock()
        self.up = True
        self.down_since = 0.0
        self._retry_at = 0.0
        self._backoff0, self._max_backoff = backoff_s, max_backoff_s
        self._backoff = backoff_s
        self.position = 0.0  # the latest stream time seen (for the link's own events)
        self.skipped = 0  # faces not identified while the server was out of reach
        self._skipped_at_loss = 0
        self.on_lost: Callable[[str], None] | None = None
        self.on_restored: Callable[[str], None] | None = None

    def client(self) -> httpx.Client:
        """A client of its own for each thread that talks to the server."""
        return httpx.Client(base_url=self.base, headers=self._headers, timeout=self._timeout,
                            verify=self._verify)  # fmt: skip

    def path(self, what: str) -> str:
        return f"/api/v1/cameras/{quote(self.camera, safe='')}/{what}"

    def call(self, client: httpx.Client, method: str, what: str, body: Any = None) -> Any:
        """The server's JSON answer; :class:`Unreachable` or :class:`Refused` otherwise."""
        try:
            res = client.request(method, self.path(what), json=body)
        except httpx.TransportError as e:
            raise Unreachable(f"{type(e).__name__}: {e}") from None
        if res.status_code >= 500 or res.status_code == 429:
            raise Unreachable(f"the server answered {res.status_code}")
        if res.status_code >= 400:
            try:
                problem = res.json()
            except ValueError:
                problem = {}
            raise Refused(
                f"the server refused ({res.status_code}): {problem.get('detail', res.text[:200])}",
                code=str(problem.get("code", "refused")),
            )
        self.restored()
        return res.json()

    def may_try(self) -> bool:
        with self._lock:
            return self.up or time.monotonic() >= self._retry_at

    def wait_s(self) -> float:
        with self._lock:
            return 0.0 if self.up else max(0.0, self._retry_at - time.monotonic())

    def lost(self, reason: str) -> None:
        with self._lock:
            was_up = self.up
            if was_up:
                self.up, self.down_since, self._backoff = False, time.time(), self._backoff0
                self._skipped_at_loss = self.skipped
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self._max_backoff)
        if was_up:
            log.warning("server out of reach (%s): events are buffered, faces not identified",
                        reason)  # fmt: skip
            if self.on_lost is not None:
                self.on_lost(f"the server could not be reached: {reason}"[:2000])

    def restored(self) -> None:
        with self._lock:
            if self.up:
                return
            self.up = True
            away = time.time() - self.down_since
            missed = self.skipped - self._skipped_at_loss
        message = (f"the server was out of reach for {away:.1f} s; {missed} face(s) were not "
                   "identified meanwhile")  # fmt: skip
        log.warning("server back: %s", message)
        if self.on_restored is not None:
            self.on_restored(message)


class RemoteIdentifier:
    """Embeds the frame's crops here; the server searches the camera's galleries."""

    def __init__(self, link: Link, engine: FrameFaceEngine) -> None:
        self.link, self.engine = link, engine
        self._client = link.client()
        self.sent = 0

    def identify_many(
        self, crops: Sequence[tuple[FaceCrop, int]], t: float
    ) -> Sequence[Match | None]:
        self.link.position = max(self.link.position, t)
        if not crops:
            return []
        if not self.link.may_try():
            self.link.skipped += len(crops)
            return [None] * len(crops)
        vecs = self.engine.embed_many([crop for crop, _ in crops])
        contract = self.engine.contract
        body = {
            "contract": {"model_id": contract.model_id, "version": contract.version,
                         "weights_sha256": contract.weights_sha256, "dim": contract.dim,
                         "preprocessing": contract.preprocessing},
            "t": t,
            "faces": [
                {"embedding": [float(x) for x in vec], "quality": float(crop.quality),
                 "crop_sha256": crop.sha256, "track": track}
                for (crop, track), vec in zip(crops, vecs, strict=True)
            ],
        }  # fmt: skip
        try:
            answer = self.link.call(self._client, "POST", "identify", body)
        except Unreachable as e:
            self.link.lost(str(e))
            self.link.skipped += len(crops)
            return [None] * len(crops)
        self.sent += len(crops)
        return [
            Match(m["subject"], float(m["score"]), m["gallery"], m["review_case"])
            for m in answer["matches"]
        ]

    def close(self) -> None:
        self._client.close()


class RemoteSink:
    """The pipeline's events, named and buffered on disk, sent in order by a thread."""

    def __init__(self, link: Link, buffer: EventBuffer) -> None:
        self.link, self.buffer = link, buffer
        self.sent = 0
        self.refused = 0
        self.failed: Refused | None = None
        self.on_failed: Callable[[], None] | None = None
        self._wake = threading.Condition()
        self._closing = False
        self._abandon = False
        self._client = link.client()
        self._thread = threading.Thread(target=self._send_loop, name="worker-events", daemon=True)
        link.on_lost = lambda why: self._system("server_lost", why)
        link.on_restored = lambda why: self._system("server_restored", why)

    def start(self) -> RemoteSink:
        self._thread.start()  # what an earlier run left in the buffer goes first
        return self

    # -- the pipeline's EventSink

    def decided(self, event: IdentityEvent) -> None:
        event.client_key = str(uuid.uuid4())
        self._put({"kind": "identity", "track": event.track, "subject": event.subject,
                   "gallery": event.gallery, "score": float(event.score),
                   "first_seen": event.first_seen, "last_seen": event.last_seen,
                   "review_case": event.review_case,
                   "started_at": time.time() - (event.last_seen - event.first_seen)},
                  key=event.client_key, t=event.last_seen)  # fmt: skip

    def ended(self, event: IdentityEvent) -> None:
        if event.client_key is not None:
            self._put({"kind": "ended", "ref": event.client_key, "last_seen": event.last_seen},
                      t=event.last_seen)  # fmt: skip

    def retracted(self, event: IdentityEvent, replaced_by: IdentityEvent | None) -> None:
        if event.client_key is not None:
            self._put({"kind": "retracted", "ref": event.client_key,
                       "reason": "unknown" if replaced_by is None else "another_subject",
                       "replaced_by": None if replaced_by is None else replaced_by.client_key},
                      t=event.last_seen)  # fmt: skip

    def safety(self, event: SafetyEvent, snapshot_jpeg: bytes | None) -> None:
        self._put({"kind": "safety", "type": event.type, "severity": event.severity,
                   "at": event.at, "first_seen": event.started_at, "zone": event.zone,
                   "tracks": list(event.tracks),
                   "detail": {**event.detail, "rule": event.rule, "line": event.line},
                   "snapshot": base64.b64encode(snapshot_jpeg).decode() if snapshot_jpeg
                   else None,
                   "started_at": time.time() - (event.at - event.started_at)},
                  t=event.at, safety=True)  # fmt: skip

    def system(self, event: SystemEvent) -> None:
        self._put({"kind": "system", "type": event.type, "detail": event.detail[:2000],
                   "at": event.at, "started_at": event.wall}, t=event.at)  # fmt: skip

    def _system(self, type_: str, detail: str) -> None:
        t = self.link.position
        self._put({"kind": "system", "type": type_, "detail": detail, "at": t,
                   "started_at": time.time()}, t=t)  # fmt: skip

    def _put(
        self, body: dict[str, Any], *, t: float, key: str | None = None, safety: bool = False
    ) -> None:
        if math.isfinite(t):
            self.link.position = max(self.link.position, t)
        self.buffer.append({"key": key or str(uuid.uuid4()), **body}, safety=safety)
        with self._wake:
            self._wake.notify_all()

    # -- the sender

    def _send_loop(self) -> None:
        with self._client:
            self._send_all()

    def _send_all(self) -> None:
        while not self._abandon:
            batch = self.buffer.head(BATCH_EVENTS, BATCH_BYTES) if self.link.may_try() else []
            if not batch:
                self.buffer.release()
                with self._wake:
                    if self._closing and len(self.buffer) == 0:
                        return
                    self._wake.wait(max(0.05, min(0.5, self.link.wait_s() or 0.5)))
                continue
            try:
                answer = self.link.call(self._client, "POST", "events",
                                        {"events": [body for _, body in batch]})  # fmt: skip
            except Unreachable as e:
                self.buffer.release()
                self.link.lost(str(e))
                continue
            except Refused as e:  # a revoked key, a camera removed: nothing more will go
                self.buffer.release()
                log.error("the server refused the camera's events: %s", e)
                self.failed = e
                if self.on_failed is not None:
                    self.on_failed()
                return
            for result in answer["results"]:
                if result.get("error"):
                    self.refused += 1
                    log.warning("event %s refused by the server (%s): %s", result["key"],
                                result["error"]["code"], result["error"]["detail"])  # fmt: skip
            self.buffer.acknowledge(batch[-1][0])
            self.sent += len(batch)

    def close(self, drain_s: float) -> int:
        """Stop sending once the buffer is empty, or after ``drain_s`` (the server still out
        of reach): what is left stays on disk for the next run. Returns how many are left."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        self._thread.join(drain_s)
        self._abandon = True  # a request in hand finishes; nothing new is sent
        with self._wake:
            self._wake.notify_all()
        left = len(self.buffer)
        if left:
            log.warning("%d event(s) wait in %s for the next run", left, self.buffer.path)
        return left

    @property
    def sending(self) -> bool:
        return self._thread.is_alive()


@dataclass
class WorkerSummary:
    camera: str
    stats: WatchStats | None = None
    identifications_sent: int = 0
    identifications_skipped: int = 0
    events_sent: int = 0
    events_refused: int = 0
    events_dropped: int = 0
    events_waiting: int = 0
    failed: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "camera": self.camera,
            "frames_read": s.frames_read if s else 0,
            "frames_processed": s.frames_processed if s else 0,
            "tracks": s.tracks if s else 0,
            "identity_events": s.events if s else 0,
            "safety_events": s.safety_events if s else 0,
            "identifications_sent": self.identifications_sent,
            "identifications_skipped": self.identifications_skipped,
            "events_sent": self.events_sent,
            "events_refused": self.events_refused,
            "events_dropped": self.events_dropped,
            "events_waiting": self.events_waiting,
            "failed": self.failed,
        }


def fetch_settings(link: Link, stop: threading.Event) -> dict[str, Any]:
    """The camera's settings from the server, waiting (with back-off) while it is out of
    reach; a refusal (a wrong key, another camera's, a camera the server runs) is final."""
    with link.client() as client:
        while True:
            try:
                answer: dict[str, Any] = link.call(client, "GET", "worker")
                return answer
            except Unreachable as e:
                link.lost(str(e))
                if stop.wait(link.wait_s()):
                    raise AirsideError("stopped before the server answered",
                                       code="stopped") from None  # fmt: skip


def check_contracts(galleries: list[dict[str, Any]], mine: EmbeddingContract) -> None:
    """Refuse to run when a gallery's templates come from another face model than this
    machine's: its embeddings could never be compared with them."""
    for g in galleries:
        theirs = EmbeddingContract(**g["contract"])
        if theirs.fingerprint != mine.fingerprint:
            raise ContractMismatchError(
                f"gallery {g['name']!r} was enrolled with face model {theirs.fingerprint}; this "
                f"machine's is {mine.fingerprint}: install the gallery's model here",
                details={"field": "model"},
            )


def run(
    settings: Settings,
    options: WorkerOptions,
    stop: threading.Event,
    on_status: Callable[[WatchStats], None] | None = None,
) -> WorkerSummary:
    """Run the camera until its feed ends or ``stop`` is set; the summary says what went
    where. A refusal by the server (or a contract this machine cannot meet) raises."""
    from airside.vision.factory import default_analyzer
    from airside.vision.frame_faces import video_engine

    link = Link(options)
    cam = fetch_settings(link, stop)
    galleries: list[dict[str, Any]] = cam["galleries"]
    engine: FrameFaceEngine | None = None
    if galleries:
        analyzer = default_analyzer(settings)
        check_contracts(galleries, analyzer.contract)
        engine = video_engine(analyzer, settings.detector.video_detect_side)
    request = WatchRequest(camera=cam["name"], detect_every=cam["detect_every"])
    safety = None
    if cam["scene"] is not None:
        scene = parse_scene(cam["scene"], source=f"camera {cam['name']!r}'s scene")
        safety = safety_analytics(settings, scene, request)
    feed = CameraFeed(cam["source"], loop=cam["loop"], fps=cam["fps"])
    buffer = EventBuffer(
        options.data_dir / "camera-workers" / f"{options.camera}.events.db",
        max_events=options.buffer_events,
        max_bytes=options.buffer_bytes,
    )
    sink = RemoteSink(link, buffer)
    identifier = RemoteIdentifier(link, engine) if engine is not None else None
    sink.on_failed = feed.stop
    finished = threading.Event()

    def watch_stop() -> None:
        while not finished.is_set():
            if stop.wait(0.2):
                feed.stop()
                return

    threading.Thread(target=watch_stop, name="worker-stop", daemon=True).start()
    summary = WorkerSummary(options.camera)
    sink.start()
    try:
        pipe = Pipeline(
            engine,
            identifier,
            sink,
            watch_config(request, [float(g["quality_bar"]) for g in galleries]),
            safety=safety,
            on_status=on_status,
        )
        summary.stats = pipe.run(feed).stats
    finally:
        finished.set()
        summary.events_waiting = sink.close(options.drain_s)
        if identifier is not None:
            identifier.close()
            summary.identifications_sent = identifier.sent
        summary.identifications_skipped = link.skipped
        summary.events_sent, summary.events_refused = sink.sent, sink.refused
        summary.events_dropped = buffer.dropped
        if not sink.sending:  # else a request is in hand: the process's exit closes it
            buffer.close()
    if sink.failed is not None:
        summary.failed = str(sink.failed)
        raise sink.failed
    return summary
