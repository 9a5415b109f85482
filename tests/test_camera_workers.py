"""Camera workers on other machines (``airside worker``): one remote camera's pipeline run
away from the store, searching and recording through the server as the camera's principal.

Real components throughout: ``airside serve`` and ``airside worker`` as processes on
loopback (the worker's store URL points nowhere, so any use of it would fail), a real
recording proxy between them that can lose an answer, real clips with real faces, the
worker's real buffer file; the routes' own rules against a real server in a thread."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from tests.conftest import png_bytes
from tests.server_harness import Server, running
from tests.test_api_events import audit_of
from tests.test_api_events import wait_for as wait_until
from tests.test_watch import INTRUSION_SCENE
from tests.tiny_onnx import linear_embedder
from typer.testing import CliRunner

from airside.config import Settings
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.server.local_broker import free_port
from airside.server.remote_worker import Link, RemoteIdentifier, RemoteSink, WorkerOptions
from airside.server.worker_buffer import EventBuffer
from airside.services import cameras as camera_admin
from airside.services import enrolment, galleries, principal_admin
from airside.services.app import Airside
from airside.store.tables import Event, ReviewCase
from airside.synthetic.clips import Sprite, make_video
from airside.vision.analyzer import FaceAnalyzer
from airside.vision.frame_faces import video_engine

API = "/api/v1"
ROOT = Path(__file__).resolve().parents[1]
# Any use of a store by the worker would fail at once: nothing listens there.
NO_STORE = "postgresql+psycopg://nobody@127.0.0.1:9/nowhere"


def events_of(app: Airside, camera: str) -> list[Event]:
    with app.session(readonly=True) as s:
        return list(s.scalars(select(Event).where(Event.camera == camera).order_by(Event.id)))


def cameras_toml(folder: Path, *tables: str) -> Path:
    path = folder / "cameras.toml"
    path.write_text("\n".join(tables))
    return path


def remote(name: str, source: str, galleries: list[str], extra: str = "") -> str:
    return (f'[[camera]]\nname = "{name}"\nsource = "{source}"\n'
            f"galleries = {json.dumps(galleries)}\nremote = true\n{extra}\n")  # fmt: skip


def face_vector(analyzer: FaceAnalyzer, image: np.ndarray) -> dict[str, Any]:
    """The face in ``image`` as a worker sends it: embedded by the video engine."""
    engine = video_engine(analyzer)
    [det] = engine.detect(image)
    crop = engine.crop(image, det)
    assert crop is not None
    [vec] = engine.embed_many([crop])
    return {"embedding": [float(x) for x in vec], "quality": float(crop.quality),
            "crop_sha256": crop.sha256, "track": 7}  # fmt: skip


def contract_of(analyzer: FaceAnalyzer) -> dict[str, Any]:
    c = analyzer.contract
    return {"model_id": c.model_id, "version": c.version, "weights_sha256": c.weights_sha256,
            "dim": c.dim, "preprocessing": c.preprocessing}  # fmt: skip


def identity(key: str, subject: str = "PNR-1", gallery: str = "gate", **kw: Any) -> dict[str, Any]:
    return {"kind": "identity", "key": key, "track": 7, "subject": subject, "gallery": gallery,
            "score": 0.93, "first_seen": 1.0, "last_seen": 2.0, "review_case": None,
            "started_at": time.time() - 1, **kw}  # fmt: skip


def system(key: str, at: float) -> dict[str, Any]:
    return {"kind": "system", "key": key, "type": "stream_lost", "at": at, "detail": f"n{at}",
            "started_at": time.time()}  # fmt: skip


# -- the routes' rules, against a real server in a thread -------------------------------------


@dataclass
class Site:
    server: Server
    app: Airside
    admin: Principal
    keys: dict[str, str]  # principal -> key

    def client(self, who: str) -> httpx.Client:
        return self.server.client(self.keys[who])


@pytest.fixture
def site(app: Airside, tmp_path: Path, astronaut: np.ndarray, hopper: np.ndarray) -> Iterator[Site]:
    """Gallery ``gate`` (the astronaut, PNR-1), watchlist ``wl`` (Grace Hopper, W-1); remote
    cameras ``gate`` (both galleries) and ``apron``, and ``hall``, which the server runs
    itself (disabled); a key each for the remote cameras, an operator and ``hall``."""
    admin = principal_admin.ensure_local_admin(app)
    galleries.create_gallery(app, admin, "gate", "boarding:KE1")
    enrolment.enrol(app, admin, "gate", "PNR-1", [png_bytes(astronaut)], BasisInput("consent"))
    galleries.create_gallery(app, admin, "wl", "watchlist:order-1")
    enrolment.enrol(app, admin, "wl", "W-1", [png_bytes(hopper)],
                    BasisInput("legal_obligation", "order 1"))  # fmt: skip
    path = cameras_toml(
        tmp_path,
        remote("gate", "rtsp://user:secret@cam-gate.local/s", ["gate", "wl"]),
        remote("apron", "rtsp://cam-apron.local/s", ["gate"]),
        '[[camera]]\nname = "hall"\nsource = "hall.mp4"\ngalleries = ["gate"]\nenabled = false\n',
    )
    with running(app, cameras_file=path) as server:
        with server.client(server.admin_key) as c:
            for name in ("gate", "apron"):
                wait_until(lambda n=name: c.get(f"{API}/cameras/{n}").json()["state"] == "remote",
                           30, f"camera {name} provisioned")  # fmt: skip
        camera_admin.provision_principal(app, admin, "camera:hall", ["gate"])
        principal_admin.add_principal(app, admin, "op", "operator", [("*", "*")])
        keys = {p: principal_admin.issue_key(app, admin, p).secret
                for p in ("camera:gate", "camera:apron", "camera:hall", "op")}  # fmt: skip
        yield Site(server, app, admin, keys)


def test_a_remote_camera_is_provisioned_but_not_run_by_the_server(site: Site) -> None:
    with site.server.client(site.server.admin_key) as c:
        gate = c.get(f"{API}/cameras/gate").json()
    assert gate["state"] == "remote" and gate["pid"] is None and gate["remote"] is True
    assert "secret" not in gate["source"]  # masked in the status, as for any camera


def test_the_server_takes_no_snapshot_of_a_remote_cameras_source(site: Site) -> None:
    """Its source is on the worker's machine (and may name that machine's own devices)."""
    with site.server.client(site.server.admin_key) as c:
        res = c.get(f"{API}/cameras/gate/snapshot")
    assert (res.status_code, res.json()["code"]) == (409, "remote_camera")
    [rec] = audit_of(site.app, "camera.snapshot")
    assert rec.decision == "refused:remote_camera"


def test_the_camera_gets_its_settings_with_its_galleries_contracts(
    site: Site, analyzer: FaceAnalyzer
) -> None:
    with site.client("camera:gate") as c:
        res = c.get(f"{API}/cameras/gate/worker")
    assert res.status_code == 200, res.text
    cam = res.json()
    assert cam["source"] == "rtsp://user:secret@cam-gate.local/s"  # the worker opens it
    assert [g["name"] for g in cam["galleries"]] == ["gate", "wl"]
    assert all(g["contract"] == contract_of(analyzer) for g in cam["galleries"])
    [done] = audit_of(site.app, "camera.worker")
    assert (done.actor, done.decision) == ("camera:gate", "configured")


@pytest.mark.parametrize("who", ["camera:apron", "op", "api-admin"])
def test_only_the_cameras_own_principal_may_act_for_it_and_a_refusal_is_audited(
    site: Site, who: str, analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    key = site.server.admin_key if who == "api-admin" else site.keys[who]
    search = {"contract": contract_of(analyzer), "t": 1.0,
              "faces": [face_vector(analyzer, astronaut)]}  # fmt: skip
    with site.server.client(key) as c:
        answers = [
            c.get(f"{API}/cameras/gate/worker"),
            c.post(f"{API}/cameras/gate/identify", json=search),
            c.post(f"{API}/cameras/gate/events", json={"events": [identity("k-1")]}),
        ]
    assert [(r.status_code, r.json()["code"]) for r in answers] == [(403, "forbidden")] * 3
    refused = [r for r in audit_of(site.app, "camera.worker") if r.actor == who]
    assert [r.decision for r in refused] == ["refused:forbidden"] * 3
    assert events_of(site.app, "gate") == [] and audit_of(site.app, "identify") == []


def test_a_camera_the_server_runs_itself_takes_no_worker(site: Site) -> None:
    with site.client("camera:hall") as c:
        res = c.get(f"{API}/cameras/hall/worker")
    assert (res.status_code, res.json()["code"]) == (409, "conflict")
    [rec] = audit_of(site.app, "camera.worker")
    assert (rec.actor, rec.decision) == ("camera:hall", "refused:conflict")


def test_a_search_takes_vectors_only(
    site: Site, analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    face = face_vector(analyzer, astronaut)
    body = {"contract": contract_of(analyzer), "t": 1.5, "faces": [face]}
    with site.client("camera:gate") as c:
        crop = {**face, "crop": "/9j/4AAQSkZJRg=="}
        with_crop = c.post(f"{API}/cameras/gate/identify", json={**body, "faces": [crop]})
        with_frame = c.post(f"{API}/cameras/gate/identify", json={**body, "frame": "iVBORw0="})
        as_text = c.post(f"{API}/cameras/gate/identify",
                         json={**body, "faces": [{**face, "embedding": "/9j/4AAQ"}]})  # fmt: skip
        res = c.post(f"{API}/cameras/gate/identify", json=body)
    assert [r.status_code for r in (with_crop, with_frame, as_text)] == [422, 422, 422]
    assert res.status_code == 200, res.text
    [match] = res.json()["matches"]
    assert (match["subject"], match["gallery"], match["review_case"]) == ("PNR-1", "gate", None)
    searches = audit_of(site.app, "identify")  # one record per gallery searched, as locally
    assert {(r.actor, r.gallery) for r in searches} == {("camera:gate", "gate"),
                                                        ("camera:gate", "wl")}  # fmt: skip
    assert all(json.loads(r.result)["camera"] == "gate" and json.loads(r.result)["track"] == 7
               for r in searches)  # fmt: skip


def test_a_search_under_another_models_contract_is_refused_clearly(
    site: Site, analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    other = {**contract_of(analyzer), "model_id": "arcface-r100", "dim": 512}
    face = {**face_vector(analyzer, astronaut), "embedding": [0.04] * 512}
    with site.client("camera:gate") as c:
        res = c.post(f"{API}/cameras/gate/identify",
                     json={"contract": other, "t": 1.0, "faces": [face]})  # fmt: skip
    problem = res.json()
    assert (res.status_code, problem["code"]) == (409, "contract_mismatch")
    assert "arcface-r100" in problem["detail"] and "sface:sface" in problem["detail"]
    [refused] = audit_of(site.app, "identify")
    assert (refused.actor, refused.decision) == ("camera:gate", "refused:contract_mismatch")


def test_a_watchlist_hit_from_a_remote_camera_opens_a_review_case_as_a_local_one_does(
    site: Site, analyzer: FaceAnalyzer, hopper: np.ndarray
) -> None:
    body = {"contract": contract_of(analyzer), "t": 3.0, "faces": [face_vector(analyzer, hopper)]}
    with site.client("camera:gate") as c:
        [match] = c.post(f"{API}/cameras/gate/identify", json=body).json()["matches"]
        assert (match["subject"], match["gallery"]) == ("W-1", "wl")
        assert match["review_case"] is not None
        hit = identity("hit-1", "W-1", "wl", review_case=match["review_case"])
        [done] = c.post(f"{API}/cameras/gate/events", json={"events": [hit]}).json()["results"]
    with site.app.session(readonly=True) as s:
        case = s.get(ReviewCase, match["review_case"])
        assert case is not None and (case.subject, case.gallery) == ("W-1", "wl")
    [ev] = events_of(site.app, "gate")
    assert (ev.id, ev.type, ev.review_case) == (done["event"], "watchlist_hit", case.id)
    assert ev.evidence is None  # no crop ever left the camera's machine


def test_an_event_sent_again_is_recorded_once_and_corrections_name_it_by_key(
    site: Site,
) -> None:
    first = [identity("id-1"), {"kind": "ended", "key": "end-1", "ref": "id-1", "last_seen": 4.5}]
    retract = {"kind": "retracted", "key": "re-1", "ref": "id-1", "reason": "unknown",
               "replaced_by": None}  # fmt: skip
    with site.client("camera:gate") as c:
        a = c.post(f"{API}/cameras/gate/events", json={"events": first}).json()["results"]
        b = c.post(f"{API}/cameras/gate/events", json={"events": first}).json()["results"]
        r1 = c.post(f"{API}/cameras/gate/events", json={"events": [retract]}).json()["results"]
        r2 = c.post(f"{API}/cameras/gate/events", json={"events": [retract]}).json()["results"]
    assert a == b and [x["error"] for x in a + r1 + r2] == [None] * 4
    [ev] = events_of(site.app, "gate")
    assert (ev.id, ev.client_key, ev.last_seen) == (a[0]["event"], "id-1", 4.5)
    assert ev.type == "identity_retracted"
    assert len(audit_of(site.app, "event.record")) == 1
    assert len(audit_of(site.app, "event.retract")) == 1


def test_an_event_refused_for_good_is_answered_and_the_batch_goes_on(site: Site) -> None:
    batch = [
        identity("x-1", gallery="elsewhere"),  # a gallery the camera does not search
        {"kind": "ended", "key": "x-2", "ref": "never-sent", "last_seen": 3.0},
        system("x-3", 3.0),
    ]
    with site.client("camera:gate") as c:
        results = c.post(f"{API}/cameras/gate/events", json={"events": batch}).json()["results"]
    assert [(r["key"], r["error"] and r["error"]["code"]) for r in results] == [
        ("x-1", "out_of_scope"), ("x-2", "not_found"), ("x-3", None)]  # fmt: skip
    assert [e.client_key for e in events_of(site.app, "gate")] == ["x-3"]


# -- the worker's buffer ----------------------------------------------------------------------


def waiting(buffer: EventBuffer) -> list[str]:
    """The keys of what waits, in order; a drop report as its message."""
    got = [b["detail"] if b.get("type") == "events_dropped" else b["key"]
           for _, b in buffer.head(1000, 1 << 30)]  # fmt: skip
    buffer.release()
    return got


def test_the_buffer_is_a_private_file_that_keeps_its_order_across_runs(tmp_path: Path) -> None:
    path = tmp_path / "w" / "gate.events.db"
    buffer = EventBuffer(path, max_events=100, max_bytes=1 << 20)
    for i in range(5):
        buffer.append(system(f"s{i}", float(i)))
    buffer.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = EventBuffer(path, max_events=100, max_bytes=1 << 20)
    got = again.head(3, 1 << 20)
    assert [b["key"] for _, b in got] == ["s0", "s1", "s2"]
    again.acknowledge(got[-1][0])
    assert waiting(again) == ["s3", "s4"]


def test_a_full_buffer_drops_the_oldest_events_but_safety_and_reports_the_drop(
    tmp_path: Path,
) -> None:
    buffer = EventBuffer(tmp_path / "b.db", max_events=4, max_bytes=1 << 20)
    buffer.append(system("s0", 0.0))
    buffer.append({**system("f0", 1.0), "kind": "safety"}, safety=True)
    for i in (1, 2, 3, 4):
        buffer.append(system(f"s{i}", float(i)))
    got = waiting(buffer)
    assert [got[0], got[1], got[3], got[4]] == ["f0", "s2", "s3", "s4"]
    # One report where the first drop happened, counting every drop while it waits.
    assert got[2].startswith("2 event(s) dropped: the worker's buffer was full")
    # Nothing but safety events left to drop: the oldest of them goes.
    small = EventBuffer(tmp_path / "c.db", max_events=2, max_bytes=1 << 20)
    for i in range(3):
        small.append({**system(f"f{i}", float(i)), "kind": "safety"}, safety=True)
    got = waiting(small)
    assert [got[0], got[2]] == ["f1", "f2"] and got[1].startswith("1 event(s) dropped")
    # The bound in bytes holds as the bound in events does.
    tight = EventBuffer(tmp_path / "d.db", max_events=1000, max_bytes=600)
    for i in range(20):
        tight.append(system(f"t{i}", float(i)))
    kept = [b for _, b in tight.head(1000, 1 << 30) if b["type"] != "events_dropped"]
    assert sum(len(json.dumps(b, separators=(",", ":"))) for b in kept) <= 600
    assert kept[-1]["key"] == "t19" and len(kept) < 20


def test_what_waited_in_the_buffer_reaches_the_server_in_order_with_the_drop_report(
    site: Site, tmp_path: Path
) -> None:
    data = tmp_path / "worker"
    options = WorkerOptions(site.server.url, "gate", site.keys["camera:gate"], data)
    buffer = EventBuffer(data / "gate.events.db", max_events=3, max_bytes=1 << 20)
    for i in range(6):
        buffer.append(system(f"w{i}", float(i)))
    sink = RemoteSink(Link(options), buffer).start()
    assert sink.close(drain_s=20) == 0
    rows = events_of(site.app, "gate")
    assert [r.client_key for r in rows if (r.client_key or "").startswith("w")] == [
        "w3", "w4", "w5"]  # fmt: skip
    [report] = [r for r in rows if json.loads(r.detail or "{}")["kind"] == "events_dropped"]
    assert json.loads(report.detail or "{}")["message"].startswith("3 event(s) dropped")
    assert report.id < min(r.id for r in rows if r.client_key in ("w3", "w4", "w5"))


# -- the command -----------------------------------------------------------------------------


def worker_cli(data: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    from airside.cli.main import app as cli

    return CliRunner().invoke(cli, ["--data-dir", str(data), "worker", *args, "--json"],
                              env={"AIRSIDE_DATABASE_URL": NO_STORE, **(env or {})})  # fmt: skip


def test_the_key_comes_from_the_environment_or_a_private_file_never_the_command_line(
    tmp_path: Path,
) -> None:
    key = tmp_path / "camera.key"
    key.write_text("as1_0123456789ab_x\n")
    key.chmod(0o644)
    loose = worker_cli(tmp_path, "--server", "https://h:1", "--camera", "c",
                       "--key-file", str(key))  # fmt: skip
    assert loose.exit_code != 0 and json.loads(loose.stdout)["error"] == "bad_key_file"
    assert "chmod 600" in json.loads(loose.stdout)["message"]
    none = worker_cli(tmp_path, "--server", "https://h:1", "--camera", "c",
                      env={"AIRSIDE_API_KEY": ""})  # fmt: skip
    assert json.loads(none.stdout)["error"] == "missing_key"
    on_line = worker_cli(tmp_path, "--server", "https://h:1", "--camera", "c", "--key", "as1_x")
    assert on_line.exit_code == 2 and "No such option" in on_line.output


def test_the_worker_talks_plain_http_to_this_machine_only(tmp_path: Path) -> None:
    res = worker_cli(tmp_path, "--server", "http://server.example:8080", "--camera", "c",
                     env={"AIRSIDE_API_KEY": "as1_0123456789ab_x"})  # fmt: skip
    assert res.exit_code != 0 and json.loads(res.stdout)["error"] == "bad_config"
    assert "use https" in json.loads(res.stdout)["message"]


def test_a_worker_whose_face_model_differs_from_the_galleries_refuses_to_run(
    site: Site, tmp_path: Path
) -> None:
    from airside.services.model_admin import register_model

    data = tmp_path / "elsewhere"
    other = Airside(Settings(data_dir=data))  # the worker's machine, another model on it
    try:
        admin = principal_admin.ensure_local_admin(other)
        src = linear_embedder(tmp_path / "in" / "tiny.onnx")
        register_model(other, admin, src, "generic", licence="MIT", name="tiny", mean=127.5,
                       std=127.5)  # fmt: skip
    finally:
        other.close()
    res = worker_cli(data, "--server", site.server.url, "--camera", "apron",
                     env={"AIRSIDE_API_KEY": site.keys["camera:apron"],
                          "AIRSIDE_EMBEDDER_MODEL": "tiny"})  # fmt: skip
    assert res.exit_code != 0, res.output
    problem = json.loads(res.stdout)
    assert problem["error"] == "contract_mismatch"
    assert "gallery 'gate' was enrolled with face model sface:sface" in problem["message"]
    assert audit_of(site.app, "identify") == []  # refused before any face was sent


# -- real processes: airside serve, airside worker, a proxy between them ------------------------


class Proxy:
    """A real HTTP proxy on loopback that records every request, and loses the server's
    answer to the first request whose path ends with ``lose`` (the server did the work; the
    worker never hears of it)."""

    def __init__(self, upstream: str, lose: str | None = None) -> None:
        self.seen: list[tuple[str, str, bytes]] = []
        self.lose, self.lost = lose, False
        self.down = False  # drop every connection, as a server that is gone would
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.down:
                    self.close_connection = True
                    return
                proxy.seen.append((self.command, self.path, body))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("authorization", "content-type")}  # fmt: skip
                try:
                    res = httpx.request(self.command, upstream + self.path, content=body,
                                        headers=headers, timeout=30)  # fmt: skip
                except httpx.TransportError:
                    self.close_connection = True
                    return  # the server is down: the worker sees the connection drop
                if proxy.lose and self.path.endswith(proxy.lose) and not proxy.lost:
                    proxy.lost = True
                    self.close_connection = True
                    return
                self.send_response(res.status_code)
                self.send_header("Content-Type", res.headers.get("content-type", ""))
                self.send_header("Content-Length", str(len(res.content)))
                self.end_headers()
                self.wfile.write(res.content)

            do_GET = do_POST = _forward  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve(data_dir: Path, port: int, cameras: Path, log: Path) -> subprocess.Popen[bytes]:
    """``airside serve`` on ``port``, once it answers /readyz."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "airside.cli", "--data-dir", str(data_dir), "serve",
         "--port", str(port), "--cameras", str(cameras)],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL, stderr=log.open("ab"),
    )  # fmt: skip

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, 60, "the server to be ready")
    return proc


def worker(data_dir: Path, server: str, camera: str, key: str, log: Path,
           *extra: str) -> subprocess.Popen[bytes]:  # fmt: skip
    # Its people are found as test_watch.py finds them: motion blobs, the same on any machine.
    env = {**os.environ, "AIRSIDE_API_KEY": key, "AIRSIDE_DATABASE_URL": NO_STORE,
           "OMP_NUM_THREADS": "1", "AIRSIDE_PERSON_DETECTOR": "motion"}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "airside.cli", "--data-dir", str(data_dir), "worker",
         "--server", server, "--camera", camera, "--json", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log.open("ab"),
    )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def camera_key(app: Airside, camera: str, galleries: list[str]) -> str:
    admin = principal_admin.ensure_local_admin(app)
    camera_admin.provision_principal(app, admin, f"camera:{camera}", galleries)
    return principal_admin.issue_key(app, admin, f"camera:{camera}").secret


IMAGE_BYTES = (b"\xff\xd8\xff", b"/9j/", b"\x89PNG", b"iVBOR")  # JPEG, PNG, raw or base64


@pytest.mark.slow  # ~20-25 s: a server, a worker and a clip played in real time
def test_a_worker_elsewhere_identifies_through_the_server_and_sends_no_image(
    app: Airside, tmp_path: Path, astronaut: np.ndarray
) -> None:
    admin = principal_admin.ensure_local_admin(app)
    galleries.create_gallery(app, admin, "gate", "boarding:KE1")
    enrolment.enrol(app, admin, "gate", "PNR-1", [png_bytes(astronaut)], BasisInput("consent"))
    clip = tmp_path / "gate.mp4"  # 2.5 s: the astronaut walks slowly across
    make_video(clip, 25, (640, 480), 10, [Sprite("a", "astronaut", (150, 180),
                                                 [(260, 240), (380, 240)])])  # fmt: skip
    cameras = cameras_toml(tmp_path, remote("gate", str(clip), ["gate"]))
    key = camera_key(app, "gate", ["gate"])
    port, log = free_port(), tmp_path / "log.txt"
    server = serve(app.settings.data_dir, port, cameras, log)
    proxy = Proxy(f"http://127.0.0.1:{port}", lose="/events")
    here = tmp_path / "camera-machine"
    try:
        proc = worker(here, proxy.url, "gate", key, log)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, log.read_text()
    finally:
        proxy.close()
        stop(server)
    summary = json.loads(out)
    assert summary["identity_events"] == 1 and summary["events_waiting"] == 0
    assert summary["identifications_sent"] >= 1 and summary["events_refused"] == 0
    # The server recorded the identity once, though its first answer was lost and the
    # worker sent the event again; the lost answer shows as an outage, then a recovery.
    rows = events_of(app, "gate")
    [ev] = [r for r in rows if r.type == "identity"]
    assert (ev.subject_ref, ev.gallery, ev.evidence) == ("PNR-1", "gate", None)
    posted = [json.loads(body) for m, path, body in proxy.seen if path.endswith("/events")]
    sent = [e["key"] for b in posted for e in b["events"] if e["kind"] == "identity"]
    assert sent == [ev.client_key, ev.client_key]
    kinds = [json.loads(r.detail or "{}").get("kind") for r in rows if r.type == "system"]
    assert kinds.index("server_lost") < kinds.index("server_restored")
    assert kinds.count("server_lost") == 1 and "stream_ended" in kinds
    # Only vectors went to be searched, and no image went anywhere.
    searches = [json.loads(body) for m, path, body in proxy.seen if path.endswith("/identify")]
    assert len(searches) == summary["identifications_sent"] >= 1
    assert all(set(s) == {"contract", "t", "faces"} for s in searches)
    assert all(set(f) == {"embedding", "quality", "crop_sha256", "track"}
               for s in searches for f in s["faces"])  # fmt: skip
    assert not [m for _, _, body in proxy.seen for m in IMAGE_BYTES if m in body]
    searched = audit_of(app, "identify")
    assert len(searched) == summary["identifications_sent"]
    assert {(r.actor, json.loads(r.result)["camera"]) for r in searched} == {("camera:gate",
                                                                              "gate")}  # fmt: skip
    # The worker's machine holds its buffer (0600) and no store.
    assert sorted(p.name for p in here.rglob("*") if p.is_file() and "events.db" not in p.name
                  ) == []  # fmt: skip
    buffer = here / "camera-workers" / "gate.events.db"
    assert stat.S_IMODE(buffer.stat().st_mode) == 0o600


def pending(buffer: Path) -> list[str]:
    """The keys waiting in a worker's buffer file, in order (read beside the worker)."""
    db = sqlite3.connect(buffer)
    try:
        return [
            json.loads(b)["key"] for (b,) in db.execute("SELECT body FROM pending ORDER BY seq")
        ]
    finally:
        db.close()


@pytest.mark.slow
def test_events_buffered_while_the_server_is_killed_arrive_after_it_returns_once_in_order(
    app: Airside, tmp_path: Path
) -> None:
    from airside.synthetic.clips import encode
    from airside.synthetic.figures import Figure, render_scene

    frames = render_scene(40, (320, 240), [Figure("p", path=((60.0, 200.0), (280.0, 200.0)))])
    clip = tmp_path / "walker.mp4"  # 4 s, played in a loop: someone walks into the zone
    encode(clip, frames.images, fps=10)
    (tmp_path / "apron.toml").write_text(INTRUSION_SCENE)
    cameras = cameras_toml(tmp_path, remote("apron", str(clip), [],
                                            'scene = "apron.toml"\nloop = true\n'))  # fmt: skip
    key = camera_key(app, "apron", [])
    port, log = free_port(), tmp_path / "log.txt"
    here = tmp_path / "camera-machine"
    buffer = here / "camera-workers" / "apron.events.db"
    server = serve(app.settings.data_dir, port, cameras, log)
    proc = worker(here, f"http://127.0.0.1:{port}", "apron", key, log,
                  "--drain", "30")  # fmt: skip
    try:
        intrusions = lambda: [e for e in events_of(app, "apron") if e.type == "intrusion"]  # noqa: E731
        wait_until(intrusions, 60, "an intrusion recorded")
        server.kill()  # SIGKILL: no goodbye
        server.wait(10)
        # Meanwhile the worker keeps watching: the outage and new intrusions wait on disk.
        waiting = wait_until(lambda: (k := pending(buffer)) and len(k) >= 3 and k, 60,
                             "events buffered during the outage")  # fmt: skip
        # (The first may have been recorded just before the kill, its answer never sent:
        # it waits all the same, and is recorded once when sent again.)
        server = serve(app.settings.data_dir, port, cameras, log)
        keys = lambda: [e.client_key for e in events_of(app, "apron")]  # noqa: E731
        wait_until(lambda: set(waiting) <= set(keys()), 60, "the buffered events recorded")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, log.read_text()
    finally:
        stop(proc)
        stop(server)
    summary = json.loads(out)
    rows = events_of(app, "apron")
    got = [e.client_key for e in rows]
    assert len(got) == len(set(got))  # nothing recorded twice
    assert [k for k in got if k in waiting] == waiting  # in the order they happened
    # Nothing lost: every intrusion the worker saw is on the server, the outage reported.
    assert len([e for e in rows if e.type == "intrusion"]) == summary["safety_events"] >= 2
    assert summary["events_waiting"] == 0 and summary["events_dropped"] == 0
    kinds = [json.loads(e.detail or "{}").get("kind") for e in rows if e.type == "system"]
    assert "server_lost" in kinds and "server_restored" in kinds
    restored = next(e for e in rows if json.loads(e.detail or "{}").get("kind")
                    == "server_restored")  # fmt: skip
    assert all(e.id < restored.id for e in rows if e.client_key in waiting)
    assert stat.S_IMODE(buffer.stat().st_mode) == 0o600


def test_a_face_seen_while_the_server_is_away_is_not_identified_only_counted(
    site: Site, analyzer: FaceAnalyzer, astronaut: np.ndarray, tmp_path: Path
) -> None:
    proxy = Proxy(site.server.url)
    options = WorkerOptions(proxy.url, "gate", site.keys["camera:gate"], tmp_path)
    link = Link(options, backoff_s=0.3, max_backoff_s=0.3)
    sink = RemoteSink(link, EventBuffer(tmp_path / "b.db", max_events=99, max_bytes=1 << 20))
    sink.start()
    engine = video_engine(analyzer)
    identifier = RemoteIdentifier(link, engine)
    crop = engine.crop(astronaut, engine.detect(astronaut)[0])
    assert crop is not None
    try:
        proxy.down = True
        assert identifier.identify_many([(crop, 1)], 1.0) == [None]  # tried: nobody answered
        assert identifier.identify_many([(crop, 1)], 1.1) == [None]  # backing off: not tried
        proxy.down = False
        time.sleep(0.4)
        [match] = identifier.identify_many([(crop, 1)], 2.0)
        assert sink.close(drain_s=20) == 0
    finally:
        identifier.close()
        proxy.close()
    assert match is not None and match.subject == "PNR-1"
    assert link.skipped == 2 and identifier.sent == 1
    assert len(audit_of(site.app, "identify")) == 2  # the one search, in each gallery
    told = [json.loads(e.detail or "{}") for e in events_of(site.app, "gate")]
    assert [t["kind"] for t in told] == ["server_lost", "server_restored"]
    assert told[1]["message"].endswith("2 face(s) were not identified meanwhile")


def test_a_worker_with_another_cameras_key_is_refused_and_runs_nothing(
    site: Site, tmp_path: Path
) -> None:
    res = worker_cli(tmp_path, "--server", site.server.url, "--camera", "gate",
                     env={"AIRSIDE_API_KEY": site.keys["camera:apron"]})  # fmt: skip
    assert res.exit_code != 0
    assert json.loads(res.stdout)["error"] == "forbidden"
    [refused] = audit_of(site.app, "camera.worker")
    assert (refused.actor, refused.decision) == ("camera:apron", "refused:forbidden")
    assert not (tmp_path / "camera-workers").exists()  # no feed opened, no buffer made
