"""Scenes drawn from the console, over real HTTP: the snapshot to draw on has every face
blurred and is audited; a drawing the pipeline could not read is refused with the reason
and leaves the file as it was; a camera without a scene file says so."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.server_harness import running

from airside.services.app import Airside
from airside.synthetic.clips import Sprite, make_video

API = "/api/v1"


@pytest.fixture
def cameras(tmp_path: Path) -> Path:
    make_video(tmp_path / "clip.mp4", frames=20, size=(320, 240), fps=10,
               sprites=[Sprite("a", "astronaut", (110, 130), [(160, 120)])])  # fmt: skip
    (tmp_path / "hall.toml").write_text("[zones.hall]\npoints = [[0, 0], [1, 0], [1, 1]]\n")
    path = tmp_path / "cameras.toml"
    path.write_text(
        '[[camera]]\nname = "hall"\nsource = "clip.mp4"\nscene = "hall.toml"\nloop = true\n\n'
        '[[camera]]\nname = "gate"\nsource = "clip.mp4"\ngalleries = ["g"]\nenabled = false\n'
    )
    return path


def test_the_snapshot_blurs_every_face_and_is_audited(app: Airside, cameras: Path) -> None:
    import av

    with av.open(str(cameras.parent / "clip.mp4")) as c:
        original = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(float)
    with running(app, cameras_file=cameras) as server, server.client(server.admin_key) as c:
        res = c.get(f"{API}/cameras/hall/snapshot", timeout=120)
        assert res.status_code == 200 and res.headers["content-type"] == "image/jpeg"
        snap = np.asarray(Image.open(io.BytesIO(res.content)).convert("RGB"), dtype=float)
        records = [json.loads(x) for x in c.get(f"{API}/audit/export").text.splitlines()]
    face = (slice(80, 180), slice(110, 210))  # the sprite's face, 110x130 around (160, 120)
    detail = lambda img: float(np.abs(np.diff(img[face], axis=1)).mean())  # noqa: E731
    assert detail(snap) < 0.5 * detail(original)  # blurred: fine detail gone
    assert np.abs(snap[:40] - original[:40]).mean() < 12  # the rest is the same picture
    assert any(r.get("action") == "camera.snapshot" and r["decision"] == "done" for r in records)


def test_a_drawing_the_pipeline_cannot_read_is_refused_and_the_file_kept(
    app: Airside, cameras: Path
) -> None:
    scene = cameras.parent / "hall.toml"
    before = scene.read_text()
    bad = {"zones": {"hall": [[0, 0], [1, 0], [1, 1]]},
           "lines": {"door": {"points": [[0.5, 0.5], [0.5, 0.5]], "in": "down"}}}  # fmt: skip
    with running(app, cameras_file=cameras) as server, server.client(server.admin_key) as c:
        res = c.put(f"{API}/cameras/hall/scene", json=bad)
        none = c.put(f"{API}/cameras/gate/scene", json={"zones": {}, "lines": {}})
    assert res.status_code == 422 and res.json()["code"] == "bad_scene"
    assert "door" in res.json()["detail"] and scene.read_text() == before
    assert none.status_code == 409 and none.json()["code"] == "no_scene_file"
