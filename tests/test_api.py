"""The HTTP API over real HTTP on loopback: the contract of docs/api.md, use-case by
use-case, with the same governance as the CLI."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from tests.conftest import jpeg_bytes, png_bytes
from tests.server_harness import Server, running

from airside.services.app import Airside

PROBLEM = "application/problem+json"


@pytest.fixture
def server(app: Airside) -> Iterator[Server]:
    with running(app) as s:
        yield s


@pytest.fixture
def admin(server: Server) -> Iterator[object]:
    with server.client(server.admin_key) as c:
        yield c


def photo(arr: np.ndarray, name: str = "a.png") -> tuple[str, bytes, str]:
    return (name, png_bytes(arr), "image/png")


def test_health_needs_no_key(server: Server) -> None:
    with server.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/metrics").status_code == 200


def test_readiness_reports_the_store_and_the_models(server: Server) -> None:
    with server.client() as c:
        server.airside.analyzer  # noqa: B018 (loaded)
        body = c.get("/readyz").json()
    assert body == {"ready": True, "checks": {"store": "ok", "models": "ok", "server": "ok"}}


def test_the_openapi_document_is_served(server: Server) -> None:
    with server.client() as c:
        doc = c.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert "/api/v1/galleries/{name}/identify" in doc["paths"]


def test_a_gallery_is_created_on_the_index_the_body_names(admin: object) -> None:
    c = admin
    body = {"name": "national", "purpose": "seamless-travel", "index": "hnsw"}
    res = c.post("/api/v1/galleries", json=body)
    assert res.status_code == 201, res.text
    assert res.json()["index"] == "hnsw"
    bad = c.post("/api/v1/galleries", json={**body, "name": "n2", "index": "lsh"})
    assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM


def test_a_gallery_is_created_enrolled_into_and_searched(
    admin: object, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    c = admin
    res = c.post("/api/v1/galleries", json={"name": "board-1", "purpose": "boarding:KE1"})
    assert res.status_code == 201, res.text
    assert res.json()["name"] == "board-1"
    res = c.post(
        "/api/v1/galleries/board-1/subjects/PNR-1/enrolments",
        files=[("image", photo(astronaut))], data={"basis": "consent"},
    )  # fmt: skip
    assert res.status_code == 201, res.text
    assert res.json()["subject"] == "PNR-1" and res.json()["refused"] == []
    probe = ("p.jpg", jpeg_bytes(astronaut, 70), "image/jpeg")
    hit = c.post("/api/v1/galleries/board-1/identify", files={"image": probe}).json()
    assert hit["match"] and hit["candidates"][0]["subject"] == "PNR-1"
    other = ("q.png", png_bytes(hopper), "image/png")
    miss = c.post("/api/v1/galleries/board-1/identify", files={"image": other}).json()
    assert not miss["match"]
    listed = c.get("/api/v1/galleries/board-1/subjects").json()
    assert [s["subject"] for s in listed["items"]] == ["PNR-1"]


def test_two_photos_are_verified(admin: object, astronaut: np.ndarray, hopper: np.ndarray) -> None:
    c = admin
    same = c.post("/api/v1/verify", files={"image_a": photo(astronaut),
                                           "image_b": ("b.jpg", jpeg_bytes(astronaut, 60),
                                                       "image/jpeg")})  # fmt: skip
    assert same.status_code == 200, same.text
    body = same.json()
    assert body["match"] and body["score"] >= body["threshold"]
    assert body["fmr_target"] == pytest.approx(1e-3)
    diff = c.post("/api/v1/verify", files={"image_a": photo(astronaut), "image_b": photo(hopper)})
    assert not diff.json()["match"]


def test_an_undecodable_upload_is_415_and_no_face_is_422(admin: object) -> None:
    c = admin
    files = {"image_a": ("a.png", b"not an image", "image/png"),
             "image_b": ("b.png", b"\x89PNG", "image/png")}  # fmt: skip
    junk = c.post("/api/v1/verify", files=files)
    assert junk.status_code == 415, junk.text
    assert junk.headers["content-type"] == PROBLEM
    blank = png_bytes(np.full((200, 200, 3), 128, np.uint8))
    none = c.post("/api/v1/verify", files={"image_a": ("a.png", blank, "image/png"),
                                           "image_b": ("b.png", blank, "image/png")})  # fmt: skip
    assert none.status_code == 422, none.text
    assert "Traceback" not in none.text


def test_a_body_over_the_limit_is_413(admin: object, server: Server) -> None:
    limit = int(server.airside.settings.server_max_upload_mb * 1024 * 1024)
    big = b"\0" * (limit + 1)
    res = admin.post("/api/v1/verify", files={"image_a": ("a.png", big, "image/png")})
    assert res.status_code == 413
    assert res.json()["code"] == "payload_too_large"
