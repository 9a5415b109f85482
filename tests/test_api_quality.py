"""The quality check before enrolment: the verdict a photo would meet in a gallery, with its
reasons, and nothing saved but the audit record (which names the photo by keyed digest)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from tests.conftest import png_bytes
from tests.server_harness import running

from airside.services import galleries, subjects
from airside.services.app import Airside

API = "/api/v1"


def test_a_photo_is_checked_against_the_gallerys_bar_and_nothing_is_saved(
    app: Airside, astronaut: np.ndarray
) -> None:
    small = np.asarray(Image.fromarray(astronaut).resize((64, 64)))  # a face a few px wide
    with running(app) as server, server.client(server.admin_key) as c:
        galleries.create_gallery(app, server.admin, "board-1", "boarding:KE1")
        good = c.post(f"{API}/galleries/board-1/quality",
                      files={"image": ("a.png", png_bytes(astronaut), "image/png")})  # fmt: skip
        poor = c.post(f"{API}/galleries/board-1/quality",
                      files={"image": ("s.png", png_bytes(small), "image/png")})  # fmt: skip
        records = [json.loads(x) for x in c.get(f"{API}/audit/export").text.splitlines()]
    assert good.status_code == 200, good.text
    g = good.json()
    assert g["ok"] and g["quality"] >= g["quality_bar"]
    p = poor.json()
    assert poor.status_code == 200 and not p["ok"] and p["message"]
    checks = [r for r in records if r.get("action") == "enrol.check"]
    assert [r["decision"] for r in checks] == ["passed", "would_refuse"]
    assert subjects.list_subjects(app, server.admin, "board-1") == []
