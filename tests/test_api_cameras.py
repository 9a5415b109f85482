"""Supervised cameras over real HTTP: cameras.toml, worker processes that run the watch
pipeline, restarts after SIGKILL, a failed camera beside a running one, /metrics, and the
admin-only routes."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.conftest import png_bytes
from tests.server_harness import running

from airside.governance.consent import BasisInput
from airside.server.cameras.config import CameraConfigError, parse_cameras
from airside.services import enrolment, galleries
from airside.services.app import Airside
from airside.synthetic.clips import Sprite, make_video


def wait_for(
    c: httpx.Client, name: str, ok: Callable[[dict[str, Any]], bool], timeout: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        st = c.get(f"/api/v1/cameras/{name}").json()
        if ok(st):
            return st
        time.sleep(0.25)
    raise AssertionError(f"camera {name} never got there: {st}")


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)\{(.*)\} (\S+)$", line)
        if m and m.group(1) == name and ",".join(sorted(m.group(2).split(","))) == want:
            return float(m.group(3))
    raise AssertionError(f"no {name}{{{want}}} in /metrics")


def test_a_bad_cameras_file_names_the_line_camera_and_field() -> None:
    text = (
        '[[camera]]\nname = "a"\nsource = "a.mp4"\ngalleries = ["g"]\n\n'
        '[[camera]]\nname = "b"\nsource = "b.mp4"\ngalleries = ["g"]\ndetect_every = 0\n'
    )
    with pytest.raises(CameraConfigError) as e:
        parse_cameras(text, source="cameras.toml")
    assert str(e.value).startswith("cameras.toml line 10: camera 'b', detect_every:")
    assert e.value.details == {"line": 10, "camera": "b", "field": "detect_every"}
    with pytest.raises(CameraConfigError, match="line 3: camera 'a', sorce: unknown field"):
        parse_cameras('[[camera]]\nname = "a"\nsorce = "x"\ngalleries = ["g"]\n')
    with pytest.raises(CameraConfigError, match=r"line 2: camera 'a', detect_every: .*integer"):
        parse_cameras('[[camera]]\ndetect_every = "3"\nname = "a"\nsource = "x"\n'
                      'galleries = ["g"]\n')  # fmt: skip
    with pytest.raises(CameraConfigError, match="line 6: camera 'a', name: another camera"):
        parse_cameras('[[camera]]\nname = "a"\nsource = "x"\ngalleries = ["g"]\n[[camera]]\n'
                      'name = "a"\nsource = "y"\ngalleries = ["g"]\n')  # fmt: skip
    with pytest.raises(CameraConfigError, match="line 1: not valid TOML"):
        parse_cameras("[[camera]\n")


def write_cameras(folder: Path) -> Path:
    """A clip played in a loop (one still face, 2 s at 10 fps), and a missing file."""
    make_video(folder / "clip.mp4", frames=20, size=(320, 240), fps=10,
               sprites=[Sprite("a", "astronaut", (110, 130), [(160, 120)])])  # fmt: skip
    path = folder / "cameras.toml"
    path.write_text(
        "# two cameras: one plays a clip in a loop, one's file is missing\n"
        '[[camera]]\nname = "gate"\nsource = "clip.mp4"\ngalleries = ["gate"]\nloop = true\n\n'
        '[[camera]]\nname = "ghost"\nsource = "missing.mp4"\ngalleries = ["gate"]\n'
    )
    return path


def test_camera_workers_run_come_back_after_sigkill_and_fail_alone(
    app: Airside, tmp_path: Path, astronaut: np.ndarray
) -> None:
    from airside.services.principal_admin import ensure_local_admin

    admin = ensure_local_admin(app)
    galleries.create_gallery(app, admin, "gate", "boarding:KE1")
    enrolment.enrol(app, admin, "gate", "PNR-1", [png_bytes(astronaut)], BasisInput("consent"))
    with running(app, cameras_file=write_cameras(tmp_path)) as server, \
            server.client(server.admin_key) as c:  # fmt: skip
        gate = wait_for(c, "gate", lambda s: s["state"] == "running" and s["fps"] > 0)
        assert gate["principal"] == "camera:gate" and gate["frames_processed"] > 0
        # The worker reports "failed", then exits: its pid is cleared when it has ended.
        ghost = wait_for(c, "ghost", lambda s: s["state"] == "failed" and s["pid"] is None)
        assert "video file not found" in ghost["last_error"]
        listed = c.get("/api/v1/cameras").json()
        assert [x["name"] for x in listed["items"]] == ["gate", "ghost"]

        text = c.get("/metrics").text
        assert metric(text, "airside_camera_fps", camera="gate") > 0
        assert metric(text, "airside_camera_frames_processed_total", camera="gate") > 0
        assert metric(text, "airside_camera_state", camera="gate", state="running") == 1
        assert metric(text, "airside_camera_state", camera="ghost", state="failed") == 1

        before = gate["frames_processed"]
        os.kill(gate["pid"], signal.SIGKILL)
        back = wait_for(c, "gate", lambda s: s["restarts"] >= 1 and s["state"] == "running"
                        and s["pid"] not in (None, gate["pid"]) and s["fps"] > 0)  # fmt: skip
        assert back["frames_processed"] >= before  # totals survive the restart
        assert "SIGKILL" in (back["last_error"] or "")
        assert c.get("/api/v1/cameras/ghost").json()["state"] == "failed"  # untouched
        text = c.get("/metrics").text
        assert metric(text, "airside_camera_restarts_total", camera="gate") >= 1
    # The camera acted as its own principal, with a key for each worker's life.
    from airside.services.principal_admin import list_principals

    cam = next(p for p in list_principals(app, admin) if p.name == "camera:gate")
    assert cam.role == "camera" and cam.scopes == [{"gallery": "gate", "purpose": "*"}]
    assert len(cam.keys) >= 2 and all(k["revoked"] for k in cam.keys)


def test_camera_changes_are_for_administrators(app: Airside, tmp_path: Path) -> None:
    cameras = tmp_path / "cameras.toml"
    cameras.write_text("# cameras added over the API land here\n")
    with running(app, cameras_file=cameras) as server:
        op = server.key_for("op", "operator")
        body = {"name": "spare", "source": "rtsp://user:secret@cam.local/s",
                "galleries": ["gate"], "enabled": False}  # fmt: skip
        with server.client(op) as c:
            assert c.get("/api/v1/cameras").status_code == 200
            assert c.post("/api/v1/cameras", json=body).status_code == 403
            assert c.delete("/api/v1/cameras/spare").status_code == 403
            assert c.post("/api/v1/cameras/spare/restart").status_code == 403
        with server.client(server.admin_key) as c:
            res = c.post("/api/v1/cameras", json=body)
            assert res.status_code == 201, res.text
            assert res.json()["state"] == "disabled" and res.json()["persisted"]
            assert "secret" not in res.json()["source"]
            assert [x.name for x in parse_cameras(cameras.read_text())] == ["spare"]
            assert c.post("/api/v1/cameras", json=body).status_code == 409
            bad = c.post("/api/v1/cameras", json={**body, "name": "x", "detect_every": 0})
            assert bad.status_code == 422 and bad.json()["code"] == "validation"
            assert c.get("/api/v1/cameras/spare").json()["state"] == "disabled"
            assert c.post("/api/v1/cameras/spare/restart").status_code == 409
            assert c.delete("/api/v1/cameras/spare").json()["removed"]
            assert c.get("/api/v1/cameras/spare").status_code == 404
            assert parse_cameras(cameras.read_text()) == []
            assert cameras.read_text().startswith("# cameras added over the API land here")
            text = c.get("/metrics").text
        # Latency by route template, never by the path itself.
        assert metric(text, "airside_http_request_seconds_count", method="GET",
                      route="/api/v1/cameras/{name}", status="404") >= 1  # fmt: skip
        assert metric(text, "airside_http_request_seconds_count", method="POST",
                      route="/api/v1/cameras", status="403") >= 1  # fmt: skip
        assert 'route="/api/v1/cameras/spare"' not in text
        # Each change was audited, and the appends timed.
        assert re.search(r"^airside_audit_append_seconds_count [1-9]", text, re.M)
