"""Events out over real components: a real server on loopback, a real SSE client (httpx
streaming), a real webhook receiver (http.server, failing on purpose), a real MQTT broker
(Mosquitto at 127.0.0.1:1883 when one answers, else amqtt started here) and a second
process recording into the same data directory."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select
from tests.conftest import jpeg_bytes, png_bytes
from tests.server_harness import Server, running

from airside.config import Settings
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.server.local_broker import amqtt_broker, answers
from airside.services import enrolment, events, galleries, principal_admin
from airside.services.app import Airside
from airside.store.tables import AuditRecord, EventCursor, WebhookOutbox
from airside.vision.analyzer import FaceAnalyzer

ROOT = Path(__file__).resolve().parents[1]
FAST = {
    "events_poll_s": 0.1,
    "webhook_retry_base_s": 0.3,
    "webhook_retry_max_s": 2.0,
    "webhook_timeout_s": 3.0,
    # The webhook receivers here listen on this machine, which is refused by default
    # (governance/outbound.py; tests/test_hardening.py attacks that).
    "outbound_allow": "127.0.0.1/32",
}


# -- a real server, restartable on one data directory ---------------------------------------


class Node(Server):
    """One Airside server process-alike: its own service context on a data directory; its
    clients hold the admin key unless given another."""

    def client(self, key: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.Client(base_url=self.url, headers=headers, **{"timeout": 30, **kw})


def open_airside(data_dir: Path, analyzer: FaceAnalyzer, **settings: Any) -> Airside:
    return Airside(
        Settings(data_dir=data_dir, **{**FAST, **settings}), analyzer_factory=lambda _s: analyzer
    )


@contextmanager
def serving(airside: Airside) -> Iterator[Node]:
    """``airside`` served by uvicorn on a loopback port (in a thread) until the block ends;
    an ``api-admin`` principal holds an admin key (made on first use of the data directory)."""
    with running(airside) as s:
        yield Node(s.url, s.airside, s.admin, s.admin_key)


@pytest.fixture
def airside(tmp_path: Path, analyzer: FaceAnalyzer) -> Iterator[Airside]:
    a = open_airside(tmp_path / "data", analyzer)
    yield a
    a.close()


@pytest.fixture
def node(airside: Airside) -> Iterator[Node]:
    with serving(airside) as n:
        yield n


def system_event(app: Airside, who: Principal, camera: str = "gate-1", n: int = 0) -> int:
    return events.record_system_event(app, who, camera=camera, type_="stream_lost",
                                      at=float(n), detail=f"lost {n}")  # fmt: skip


def safety_event(
    app: Airside, who: Principal, camera: str = "apron-3", snapshot: bytes | None = None
) -> int:
    return events.record_safety_event(
        app, who, camera=camera, type_="intrusion", severity="warning", at=5.0,
        first_seen=4.0, zone="stand-12", tracks=[3], detail={"rule": "apron"},
        snapshot_jpeg=snapshot,
    )  # fmt: skip


def wait_for(check: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.05)


def audit_of(app: Airside, action: str) -> list[AuditRecord]:
    with app.session(readonly=True) as s:
        q = select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.seq)
        return list(s.scalars(q))


# -- an SSE client ----------------------------------------------------------------------------


@dataclass
class Sse:
    id: str | None
    event: str | None
    data: str

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.data)
        return out


class SseStream:
    """Reads Server-Sent Events from an open httpx streaming response."""

    def __init__(self, res: httpx.Response) -> None:
        self.res = res
        self.lines = res.iter_lines()
        self.comments: list[str] = []
        self.retry: int | None = None

    def next(self) -> Sse:
        ev_id = ev_type = None
        data: list[str] = []
        for line in self.lines:
            if line == "":
                if data:
                    return Sse(ev_id, ev_type, "\n".join(data))
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                self.comments.append(value)
            elif name == "id":
                ev_id = value
            elif name == "event":
                ev_type = value
            elif name == "data":
                data.append(value)
            elif name == "retry":
                self.retry = int(value)
                return Sse(None, "retry", value)
        raise AssertionError("the stream ended")

    def events(self, n: int) -> list[Sse]:
        out: list[Sse] = []
        while len(out) < n:
            ev = self.next()
            if ev.event != "retry":
                out.append(ev)
        return out


@contextmanager
def sse(node: Node, key: str | None = None, **params: Any) -> Iterator[SseStream]:
    """An open event stream; returns once the server has opened it (its first line)."""
    headers = {k: v for k, v in params.pop("headers", {}).items()}
    timeout = httpx.Timeout(30, read=15)
    with (
        node.client(key, timeout=timeout) as c,
        c.stream("GET", "/api/v1/events/stream", params=params, headers=headers) as res,
    ):
        assert res.status_code == 200, res.read()
        assert res.headers["content-type"].startswith("text/event-stream")
        stream = SseStream(res)
        assert stream.next().event == "retry"  # the server has decided where it starts
        yield stream


# -- SSE ---------------------------------------------------------------------------------------


def test_a_stream_receives_events_recorded_after_it_connected(node: Node) -> None:
    app, admin = node.airside, node.admin
    before = system_event(app, admin, n=0)  # already there: not sent
    with sse(node) as stream:
        first = system_event(app, admin, n=1)
        second = safety_event(app, admin)
        got = stream.events(2)
    assert [int(e.id or 0) for e in got] == [first, second]
    assert before < first
    body = got[1].json()
    assert body["id"] == second and body["type"] == "intrusion" and body["camera"] == "apron-3"
    assert "crop_jpeg_base64" not in body and body["evidence"] is None
    opened = audit_of(app, "event.stream")
    assert [r.decision for r in opened][:1] == ["opened"]
    assert any(r.decision == "sent" for r in opened)


def test_a_stream_resumes_from_last_event_id_without_repeats_or_gaps(node: Node) -> None:
    app, admin = node.airside, node.admin
    with sse(node) as stream:
        ids = [system_event(app, admin, n=i) for i in range(3)]
        got = stream.events(2)
    assert [int(e.id or 0) for e in got] == ids[:2]
    # Disconnected: more events are recorded; the client comes back with the last id it had.
    ids += [system_event(app, admin, n=i) for i in range(3, 5)]
    with sse(node, headers={"Last-Event-ID": got[-1].id}) as stream:
        resumed = stream.events(3)
        marker = system_event(app, admin, n=99)
        after = stream.events(1)
    assert [int(e.id or 0) for e in resumed] == ids[2:]
    assert [int(e.id or 0) for e in after] == [marker]  # nothing repeated in between
    # The EventSource form (?after=) resumes the same way.
    with sse(node, after=ids[3]) as stream:
        assert [int(e.id or 0) for e in stream.events(2)] == [ids[4], marker]


def test_a_stream_filters_by_camera_and_type(node: Node) -> None:
    app, admin = node.airside, node.admin
    with sse(node, camera="apron-3", type="intrusion") as stream:
        system_event(app, admin, camera="apron-3")  # other type
        safety_event(app, admin, camera="apron-9")  # other camera
        wanted = safety_event(app, admin, camera="apron-3")
        assert [int(e.id or 0) for e in stream.events(1)] == [wanted]


def test_an_event_recorded_by_another_process_arrives(node: Node) -> None:
    data_dir = node.airside.settings.data_dir
    script = (
        "import sys\n"
        "from airside.config import Settings\n"
        "from airside.services import events, principal_admin\n"
        "from airside.services.app import Airside\n"
        "app = Airside(Settings(data_dir=sys.argv[1]))\n"
        "who = principal_admin.ensure_local_admin(app)\n"
        "print(events.record_safety_event(app, who, camera='cctv-77', type_='fall',\n"
        "      severity='critical', at=2.0, first_seen=1.0, zone=None, tracks=[1],\n"
        "      detail={}))\n"
        "app.close()\n"
    )
    with sse(node, camera="cctv-77") as stream:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        done = subprocess.run([sys.executable, "-c", script, str(data_dir)], env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        recorded = int(done.stdout.strip().splitlines()[-1])
        got = stream.events(1)[0]
    assert int(got.id or 0) == recorded
    assert got.json()["type"] == "fall" and got.json()["camera"] == "cctv-77"


def test_a_stream_is_authorised_and_scoped(node: Node, astronaut: np.ndarray) -> None:
    app, admin = node.airside, node.admin
    galleries.create_gallery(app, admin, "g", "seamless-travel")
    galleries.create_gallery(app, admin, "h", "seamless-travel")
    for g in ("g", "h"):
        enrolment.enrol(app, admin, g, f"PNR-{g}", [png_bytes(astronaut)], BasisInput("consent"))
    camera_key = node.key_for("cam-1", "camera", [("g", "*")])
    op_key = node.key_for("op-g", "operator", [("g", "*")])
    with node.client(camera_key) as c:  # cameras record, they do not read
        res = c.get("/api/v1/events/stream")
        assert res.status_code == 403 and res.json()["code"] == "forbidden"
    with httpx.Client(base_url=node.url) as c:
        assert c.get("/api/v1/events/stream").status_code == 401
    with sse(node, op_key) as stream:
        hidden = events.record_identity_event(
            app, admin, camera="c", track=1, subject="PNR-h", gallery="h", score=0.9,
            first_seen=0, last_seen=1, crop_jpeg=None,
        )  # fmt: skip
        seen = events.record_identity_event(
            app, admin, camera="c", track=2, subject="PNR-g", gallery="g", score=0.9,
            first_seen=0, last_seen=1, crop_jpeg=None,
        )  # fmt: skip
        got = stream.events(1)
    assert hidden < seen and [int(e.id or 0) for e in got] == [seen]
    assert got[0].json()["subject"] == "PNR-g"


# -- the list and the evidence -----------------------------------------------------------------


def test_events_are_listed_with_filters(node: Node) -> None:
    app, admin = node.airside, node.admin
    a = system_event(app, admin, camera="gate-1")
    b = safety_event(app, admin, camera="apron-3")
    with node.client() as c:
        every = c.get("/api/v1/events").json()["items"]
        assert sorted(e["id"] for e in every) == [a, b]  # newest (by start) first
        only = c.get("/api/v1/events", params={"camera": "apron-3", "type": "intrusion"})
        assert [e["id"] for e in only.json()["items"]] == [b]
        since = c.get("/api/v1/events", params={"since": "2999-01-01T00:00:00Z"})
        assert since.json()["items"] == []
        bad = c.get("/api/v1/events", params={"limit": 0})
        assert bad.status_code == 422


def test_the_evidence_is_authorised_and_audited(node: Node, astronaut: np.ndarray) -> None:
    app, admin = node.airside, node.admin
    galleries.create_gallery(app, admin, "g", "seamless-travel")
    enrolment.enrol(app, admin, "g", "PNR-1", [png_bytes(astronaut)], BasisInput("consent"))
    crop = jpeg_bytes(np.ascontiguousarray(astronaut[20:220, 140:330]), 90)
    ev = events.record_identity_event(
        app, admin, camera="gate-12", track=7, subject="PNR-1", gallery="g", score=0.83,
        first_seen=10.0, last_seen=12.5, crop_jpeg=crop,
    )  # fmt: skip
    bare = system_event(app, admin)
    op = node.key_for("op-g", "operator", [("g", "*")])
    stranger = node.key_for("op-x", "operator", [("x", "*")])
    auditor = node.key_for("aud", "auditor")
    with node.client(op) as c:
        listed = c.get("/api/v1/events").json()["items"]
        assert listed[-1]["id"] == ev and listed[-1]["evidence"] == f"/api/v1/events/{ev}/evidence"
        assert "crop_jpeg_base64" not in json.dumps(listed)
        res = c.get(listed[-1]["evidence"])
        assert res.status_code == 200 and res.headers["content-type"] == "image/jpeg"
        assert res.content == crop
        assert c.get(f"/api/v1/events/{bare}/evidence").status_code == 404
    with node.client(stranger) as c:
        res = c.get(f"/api/v1/events/{ev}/evidence")
        assert res.status_code == 403 and res.json()["code"] == "out_of_scope"
    with node.client(auditor) as c:
        assert c.get(f"/api/v1/events/{ev}/evidence").status_code == 403
    with httpx.Client(base_url=node.url) as c:
        assert c.get(f"/api/v1/events/{ev}/evidence").status_code == 401
    records = audit_of(app, "event.crop")
    assert [(r.actor, r.decision) for r in records] == [
        ("op-g", "shown"), ("op-g", "no_crop"), ("op-x", "refused:out_of_scope"),
        ("aud", "refused:forbidden"),
    ]  # fmt: skip


# -- webhooks ----------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A webhook receiver on loopback that answers 500 to the first ``fail`` requests."""

    url: str
    fail: int = 0
    got: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.got)


@contextmanager
def receiver(fail: int = 0) -> Iterator[Receiver]:
    rec = Receiver(url="", fail=fail)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with rec.lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                rec.got.append(Received(headers, body, time.monotonic()))
                failing = rec.fail > 0
                if failing:
                    rec.fail -= 1
            self.send_response(500 if failing else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        httpd.shutdown()
        httpd.server_close()


def signed(secret: str, got: Received) -> bool:
    mac = hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(got.headers["x-airside-signature"], f"sha256={mac}")


def deliveries(node: Node, **params: Any) -> list[dict[str, Any]]:
    with node.client() as c:
        res = c.get("/api/v1/webhooks/deliveries", params=params)
        assert res.status_code == 200, res.text
        items: list[dict[str, Any]] = res.json()["items"]
        return items


def test_webhooks_are_retried_with_back_off_signed_and_logged(node: Node) -> None:
    app, admin = node.airside, node.admin
    with receiver(fail=2) as rx, node.client() as c:
        res = c.post("/api/v1/webhooks", json={"name": "ops", "url": rx.url})
        assert res.status_code == 201, res.text
        secret = res.json()["secret"]
        assert secret.startswith("whsec_")
        listed = c.get("/api/v1/webhooks")
        assert secret not in listed.text and "secret" not in listed.json()["items"][0]
        assert c.post("/api/v1/webhooks", json={"name": "ops", "url": rx.url}).status_code == 409
        bad = c.post("/api/v1/webhooks", json={"name": "x", "url": "ftp://nowhere/"})
        assert bad.status_code == 422
        ev = safety_event(app, admin, snapshot=b"\xff\xd8\xff" + b"\0" * 64)
        wait_for(lambda: len(rx.received()) >= 3, what="three attempts")
        wait_for(lambda: len(deliveries(node, event=ev)) >= 3, what="three logged attempts")
        log = deliveries(node, event=ev)
    got = rx.received()
    assert [g.headers["x-airside-attempt"] for g in got] == ["1", "2", "3"]
    assert all(signed(secret, g) for g in got)
    assert not signed("whsec_" + "x" * 43, got[0])
    assert len({g.body for g in got}) == 1  # the same signed body every time
    body = json.loads(got[0].body)
    assert body["id"] == ev and body["type"] == "intrusion"
    assert body["evidence"] == f"/api/v1/events/{ev}/evidence"
    assert "crop_jpeg_base64" not in body  # crops only when an administrator asked for them
    # Exponential back-off: 0.3 s before the 2nd attempt, 0.6 s before the 3rd.
    assert got[1].at - got[0].at >= 0.25 and got[2].at - got[1].at >= 0.5
    assert [(d["attempt"], d["outcome"], d["status_code"]) for d in reversed(log)] == [
        (1, "failed", 500), (2, "failed", 500), (3, "delivered", 204),
    ]  # fmt: skip
    with app.session(readonly=True) as s:
        assert s.scalars(select(WebhookOutbox)).all() == []  # delivered: out of the outbox


def test_webhooks_are_for_administrators_and_crops_need_opting_in(node: Node) -> None:
    app, admin = node.airside, node.admin
    op = node.key_for("op", "operator")
    with node.client(op) as c:
        assert c.get("/api/v1/webhooks").status_code == 403
        assert c.get("/api/v1/webhooks/deliveries").status_code == 403
        assert c.post("/api/v1/webhooks", json={"name": "n", "url": "http://h/"}).status_code == 403
        assert c.delete("/api/v1/webhooks/n").status_code == 403
    snapshot = b"\xff\xd8\xff" + bytes(range(64))
    with receiver() as rx, node.client() as c:
        add = {"name": "evidence", "url": rx.url, "include_crops": True, "types": ["intrusion"]}
        assert c.post("/api/v1/webhooks", json=add).status_code == 201
        system_event(app, admin)  # filtered out (type)
        ev = safety_event(app, admin, snapshot=snapshot)
        got = wait_for(rx.received, what="a delivery")
        assert json.loads(got[0].body)["id"] == ev
        assert base64.b64decode(json.loads(got[0].body)["crop_jpeg_base64"]) == snapshot
        sent = audit_of(app, "webhook.crop")
        assert [(r.actor, json.loads(r.result)["event"]) for r in sent] == [("system", ev)]
        removed = c.delete("/api/v1/webhooks/evidence")
        assert removed.status_code == 200 and removed.json()["dropped"] == 0
        assert c.get("/api/v1/webhooks").json()["items"] == []
        assert c.delete("/api/v1/webhooks/evidence").status_code == 404
    assert [r.decision for r in audit_of(app, "webhook.add")] == ["refused:forbidden", "added"]
    removals = [r.decision for r in audit_of(app, "webhook.remove")]
    assert removals == ["refused:forbidden", "removed", "refused:not_found"]
    assert {r.decision for r in audit_of(app, "webhook.list")} == {"refused:forbidden"}


def test_a_webhook_delivery_survives_a_server_restart(
    tmp_path: Path, analyzer: FaceAnalyzer
) -> None:
    data_dir = tmp_path / "data"
    with receiver(fail=10_000) as rx:
        first = open_airside(data_dir, analyzer)
        with serving(first) as node, node.client() as c:
            added = c.post("/api/v1/webhooks", json={"name": "ops", "url": rx.url})
            secret = added.json()["secret"]
            ev1 = system_event(first, node.admin, n=1)
            wait_for(lambda: len(rx.received()) >= 1, what="a failed attempt")
        # The server is gone: nothing was acknowledged. Another event is recorded meanwhile.
        ev2 = system_event(first, node.admin, n=2)
        with first.session(readonly=True) as s:
            assert sorted(r.event_id for r in s.scalars(select(WebhookOutbox))) == [ev1, ev2]
        first.close()
        with rx.lock:
            rx.fail = 0
        second = open_airside(data_dir, analyzer)
        try:
            with serving(second):
                wait_for(lambda: _outbox_empty(second), what="the outbox emptied")
            log = [(d["event"], d["outcome"]) for d in reversed(deliveries_of(second))]
        finally:
            second.close()
    assert {json.loads(g.body)["id"] for g in rx.received()} == {ev1, ev2}
    assert all(signed(secret, g) for g in rx.received())
    assert log[0] == (ev1, "failed")
    assert sorted(log[-2:]) == [(ev1, "delivered"), (ev2, "delivered")]


def deliveries_of(app: Airside) -> list[dict[str, Any]]:
    from airside.services import webhooks

    admin = principal_admin.ensure_local_admin(app)
    return [d.as_dict() for d in webhooks.list_deliveries(app, admin)]


def _outbox_empty(app: Airside) -> bool:
    with app.session(readonly=True) as s:
        return not s.scalars(select(WebhookOutbox)).all()


def test_a_webhook_gives_up_after_its_attempts(tmp_path: Path, analyzer: FaceAnalyzer) -> None:
    app = open_airside(tmp_path / "data", analyzer, webhook_max_attempts=2,
                       webhook_retry_base_s=0.1)  # fmt: skip
    try:
        with receiver(fail=100) as rx, serving(app) as node, node.client() as c:
            c.post("/api/v1/webhooks", json={"name": "down", "url": rx.url})
            ev = system_event(app, node.admin)
            log = wait_for(lambda: [d for d in deliveries(node, event=ev)
                                    if d["outcome"] == "gave_up"], what="giving up")  # fmt: skip
            assert len(rx.received()) == 2 and log[0]["attempt"] == 2
            time.sleep(0.5)
            assert len(rx.received()) == 2  # not sent again
            assert c.get("/api/v1/webhooks").json()["items"][0]["given_up"] == 1
    finally:
        app.close()


def test_erasure_drops_undelivered_events_and_secrets_are_sealed(
    airside: Airside, astronaut: np.ndarray
) -> None:
    from airside.services import erasure, webhooks
    from airside.store.tables import Webhook

    app = airside
    admin = principal_admin.ensure_local_admin(app)
    added = webhooks.add_webhook(app, admin, "ops", "https://ops:pw@example.invalid/hook")
    assert added.webhook.url == "https://ops:***@example.invalid/hook"  # never the password
    galleries.create_gallery(app, admin, "g", "seamless-travel")
    enrolment.enrol(app, admin, "g", "PNR-1", [png_bytes(astronaut)], BasisInput("consent"))
    ev = events.record_identity_event(
        app, admin, camera="gate-12", track=7, subject="PNR-1", gallery="g", score=0.83,
        first_seen=10.0, last_seen=12.5, crop_jpeg=None,
    )  # fmt: skip
    other = system_event(app, admin)
    with app.session(readonly=True) as s:
        queued = sorted(r.event_id for r in s.scalars(select(WebhookOutbox)))
        hook = s.scalars(select(Webhook)).one()
    assert queued == [ev, other]  # queued with the events, in their transactions
    assert hook.secret_key_id is not None and added.secret.encode() not in hook.secret
    erasure.erase_subject(app, admin, "PNR-1")
    with app.session(readonly=True) as s:
        assert [r.event_id for r in s.scalars(select(WebhookOutbox))] == [other]
    app.db.compact_wal()
    stored = b"".join(p.read_bytes() for p in app.settings.data_dir.rglob("*.db*"))
    assert added.secret.encode() not in stored


# -- MQTT --------------------------------------------------------------------------------------


@pytest.fixture
def broker() -> Iterator[int]:
    if os.environ.get("AIRSIDE_TEST_AMQTT") != "1" and answers("127.0.0.1", 1883):
        yield 1883
    else:
        with amqtt_broker() as port:
            yield port


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@contextmanager
def subscriber(port: int, topic: str) -> Iterator[queue.Queue[Message]]:
    got: queue.Queue[Message] = queue.Queue()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")

    def on_connect(c: mqtt.Client, *_a: object) -> None:
        c.subscribe(topic, qos=1)

    def on_subscribe(*_a: object) -> None:
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        got.put(Message(m.topic, m.payload, m.qos, bool(m.retain)))

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    assert subscribed.wait(10), "the subscription was not acknowledged"
    try:
        yield got
    finally:
        client.disconnect()
        client.loop_stop()


def take(
    got: queue.Queue[Message], until: Callable[[Message], bool], timeout: float = 20
) -> Message:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "timed out waiting for an MQTT message"
        try:
            m = got.get(timeout=left)
        except queue.Empty:
            continue
        if until(m):
            return m


def clear_retained(port: int, topic: str) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def test_events_are_published_to_mqtt(tmp_path: Path, analyzer: FaceAnalyzer, broker: int) -> None:
    prefix = f"airside-test-{uuid.uuid4().hex[:10]}"
    available = f"{prefix}/available"
    settings = {"mqtt_url": f"mqtt://127.0.0.1:{broker}", "mqtt_topic_prefix": prefix}
    app = open_airside(tmp_path / "data", analyzer, **settings)
    try:
        with subscriber(broker, f"{prefix}/#") as got:
            with serving(app) as node:
                online = take(got, lambda m: m.topic == available)
                assert online.payload == b"online" and online.qos == 1
                with subscriber(broker, available) as late:  # retained for newcomers
                    m = take(late, lambda m: True)
                    assert (m.payload, m.retain) == (b"online", True)
                ev = safety_event(app, node.admin, camera="apron/3")
                on_events = take(got, lambda m: m.topic == f"{prefix}/events")
                per_kind = take(got, lambda m: m.topic == f"{prefix}/apron_3/intrusion")
                for m in (on_events, per_kind):
                    assert m.qos == 1 and not m.retain
                    body = json.loads(m.payload)
                    assert body["id"] == ev and body["camera"] == "apron/3"
                    assert "crop_jpeg_base64" not in body
            offline = take(got, lambda m: m.topic == available)
            assert offline.payload == b"offline"
            with app.session(readonly=True) as s:
                assert [c.last_id for c in s.scalars(select(EventCursor))] == [ev]
            # While no server runs, another event; the next server publishes it, and only it.
            ev2 = system_event(app, node.admin, camera="gate-1")
            with serving(app):
                take(got, lambda m: m.topic == available and m.payload == b"online")
                m = take(got, lambda m: m.topic == f"{prefix}/events")
                assert json.loads(m.payload)["id"] == ev2
                m = take(got, lambda m: m.topic.startswith(f"{prefix}/gate-1/"))
                assert m.topic == f"{prefix}/gate-1/system"
                time.sleep(0.5)
                rest = [json.loads(m.payload)["id"] for m in list(got.queue)
                        if m.topic == f"{prefix}/events"]  # fmt: skip
                assert ev not in rest
        with subscriber(broker, available) as late:
            m = take(late, lambda m: True)
            assert (m.payload, m.retain) == (b"offline", True)
    finally:
        clear_retained(broker, available)
        app.close()


def test_the_last_will_says_offline_when_the_server_vanishes(tmp_path: Path, broker: int) -> None:
    prefix = f"airside-test-{uuid.uuid4().hex[:10]}"
    available = f"{prefix}/available"
    script = (
        "import asyncio, sys\n"
        "from airside.config import Settings\n"
        "from airside.services.app import Airside\n"
        "from airside.server.mqtt import MqttPublisher\n"
        "app = Airside(Settings(data_dir=sys.argv[1], mqtt_url=sys.argv[2],\n"
        "              mqtt_topic_prefix=sys.argv[3]))\n"
        "async def main():\n"
        "    await MqttPublisher.from_settings(app, None).start()\n"
        "    await asyncio.sleep(120)\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = [str(tmp_path / "data"), f"mqtt://127.0.0.1:{broker}", prefix]
    try:
        with subscriber(broker, available) as got:
            proc = subprocess.Popen([sys.executable, "-c", script, *args], env=env)
            try:
                assert take(got, lambda m: True, timeout=60).payload == b"online"
            finally:
                proc.kill()  # SIGKILL: no clean disconnect, so the broker sends the will
                proc.wait(30)
            assert take(got, lambda m: True).payload == b"offline"
    finally:
        clear_retained(broker, available)
