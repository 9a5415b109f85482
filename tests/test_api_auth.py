"""Every route of the API decides who is calling before anything else: the test walks the
app's own route table (so a new route is checked the day it is added) and asks, for each
route and method, against a real server on loopback:

- no key: 401 problem; a forged key (well-formed, unknown): 401; a revoked key: 401;
- a principal whose role lacks the right: 403 ``forbidden``;

and that refusals with a key are audited. Bodies are minimal (or absent): authentication
and authorisation come before body validation matters."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.params import File, Form
from fastapi.routing import APIRoute
from tests.server_harness import Server, running

from airside.governance.access import PERMISSIONS
from airside.server.app import create_app
from airside.services import principal_admin
from airside.services.app import Airside

PROBLEM = "application/problem+json"
API = "/api/v1"
NO_KEY_NEEDED = ("/healthz", "/readyz", "/metrics", f"{API}/openapi.json", "/")
# The console's sign-in takes the key in its body (tests/test_api_session.py); who-am-I and
# sign-out need a key or session but no right: every role may ask who it is and leave.
SIGN_IN = ("POST", "/session")
ANY_ROLE = {("GET", "/session"), ("DELETE", "/session")}

# (method, path) -> (a role that must be refused, the action the service checks). The
# action is checked against governance/access.py's PERMISSIONS below, so the table cannot
# name a role that is in fact allowed. A new route must be added here: the test fails
# until it is.
REFUSED: dict[tuple[str, str], tuple[str, str]] = {
    ("POST", "/galleries"): ("operator", "gallery.create"),
    ("GET", "/galleries"): ("camera", "gallery.list"),
    ("GET", "/galleries/{name}/subjects"): ("operator", "subject.list"),
    ("POST", "/galleries/{name}/subjects/{subject}/enrolments"): ("operator", "enrol"),
    ("POST", "/galleries/{name}/quality"): ("reviewer", "enrol"),
    ("POST", "/verify"): ("camera", "verify"),
    ("POST", "/galleries/{name}/identify"): ("auditor", "identify"),
    ("GET", "/subjects/{subject}"): ("camera", "subject.list"),
    ("DELETE", "/subjects/{subject}"): ("enrolment_officer", "subject.erase"),
    ("POST", "/subjects/{subject}/consent/withdraw"): ("operator", "consent.withdraw"),
    ("GET", "/review"): ("operator", "review.list"),
    ("GET", "/review/{case_id}"): ("operator", "review.list"),
    ("POST", "/review/{case_id}/confirm"): ("auditor", "review.vote"),
    ("POST", "/review/{case_id}/reject"): ("auditor", "review.vote"),
    ("GET", "/cameras"): ("reviewer", "camera.list"),
    ("GET", "/cameras/{name}"): ("camera", "camera.list"),
    ("POST", "/cameras"): ("operator", "camera.add"),
    ("DELETE", "/cameras/{name}"): ("auditor", "camera.remove"),
    ("POST", "/cameras/{name}/restart"): ("operator", "camera.restart"),
    ("PUT", "/cameras/{name}"): ("operator", "camera.edit"),
    ("GET", "/cameras/{name}/snapshot"): ("operator", "camera.snapshot"),
    ("GET", "/cameras/{name}/scene"): ("auditor", "camera.scene"),
    ("PUT", "/cameras/{name}/scene"): ("operator", "camera.scene"),
    # A remote camera's own worker (tests/test_camera_workers.py: only its own principal).
    ("GET", "/cameras/{name}/worker"): ("auditor", "event.record"),
    ("POST", "/cameras/{name}/identify"): ("auditor", "identify"),
    ("POST", "/cameras/{name}/events"): ("auditor", "event.record"),
    ("GET", "/audit/verify"): ("operator", "audit.verify"),
    ("GET", "/audit/export"): ("operator", "audit.export"),
    ("POST", "/audit/checkpoint"): ("reviewer", "audit.checkpoint"),
    ("GET", "/reports/governance"): ("operator", "report.governance"),
    ("GET", "/reports"): ("reviewer", "report.governance"),
    ("GET", "/reports/files/{name}"): ("camera", "report.governance"),
    ("GET", "/principals"): ("operator", "principal.list"),
    ("POST", "/principals"): ("auditor", "principal.add"),
    ("POST", "/principals/{name}/grants"): ("auditor", "principal.grant"),
    ("DELETE", "/principals/{name}/grants"): ("auditor", "principal.revoke"),
    ("POST", "/principals/{name}/disable"): ("auditor", "principal.disable"),
    ("POST", "/principals/{name}/keys"): ("auditor", "apikey.issue"),
    ("DELETE", "/keys/{key_id}"): ("auditor", "apikey.revoke"),
    ("POST", "/purge"): ("auditor", "purge"),
    ("GET", "/models"): ("auditor", "model.list"),
    ("POST", "/models"): ("auditor", "model.add"),
    ("DELETE", "/models/{name}"): ("auditor", "model.remove"),
    ("GET", "/calibration"): ("auditor", "calibration.show"),
    ("DELETE", "/calibration"): ("auditor", "calibration.remove"),
    ("POST", "/calibration/gallery/{name}"): ("auditor", "calibration.build"),
    ("GET", "/galleries/{name}/calibration"): ("auditor", "calibration.show"),
    ("POST", "/galleries/{name}/calibration"): ("auditor", "calibration.fit_gallery"),
    ("DELETE", "/galleries/{name}/calibration"): ("operator", "calibration.remove_gallery"),
    ("GET", "/galleries/{name}/fair-calibration"): ("auditor", "calibration.show"),
    ("POST", "/galleries/{name}/fair-calibration"): ("auditor", "calibration.build"),
    ("DELETE", "/galleries/{name}/fair-calibration"): ("operator", "calibration.remove"),
    ("GET", "/events"): ("camera", "event.list"),
    ("GET", "/events/stream"): ("camera", "event.list"),
    ("GET", "/events/{event_id}/evidence"): ("auditor", "event.crop"),
    ("GET", "/webhooks"): ("auditor", "webhook.list"),
    ("POST", "/webhooks"): ("auditor", "webhook.add"),
    ("GET", "/webhooks/deliveries"): ("auditor", "webhook.deliveries"),
    ("DELETE", "/webhooks/{name}"): ("auditor", "webhook.remove"),
}

# Routes that authorise inside the handler, after the body is validated: a minimal valid
# body, so that the refusal is the role's. (A route that takes a body is better declared
# with ``server.auth.allowed(action)``: then ``{}`` is refused 403 as well.)
VALID_BODY: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/cameras"): {
        "name": "gate-12",
        "source": "rtsp://127.0.0.1:8554/gate-12",
        "galleries": ["board-1"],
    },
    ("PUT", "/cameras/{name}"): {
        "name": "board-1",
        "source": "rtsp://127.0.0.1:8554/gate-12",
        "galleries": ["board-1"],
    },
}

# Plausible values for path parameters (the refusal must not depend on them).
PATH_VALUES = {"name": "board-1", "subject": "PNR-1", "case_id": "1", "key_id": "0123456789ab",
               "camera": "gate-12", "event_id": "1", "id": "1"}  # fmt: skip


def forged_key() -> str:
    """Well-formed (``as1_<12 hex>_<43 URL-safe base64>``) but never issued."""
    return f"as1_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def all_routes(app: FastAPI) -> list[tuple[str, set[str], APIRoute]]:
    """(full path, methods, route) of each APIRoute. FastAPI >= 0.140 keeps included
    routers as they are in ``app.routes`` and resolves their routes' paths lazily."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # an older FastAPI: routes are copied into the app, full paths
        return [(r.path, set(r.methods or ()), r) for r in app.routes if isinstance(r, APIRoute)]
    return [
        (str(c.path), set(c.methods or ()), c.original_route)
        for c in iter_route_contexts(app.routes)
        if isinstance(c.original_route, APIRoute)
    ]


def api_routes(app: Airside) -> list[tuple[str, str, APIRoute]]:
    """(method, path, route) for every route of the app that needs a key."""
    found = []
    for path, methods, route in all_routes(create_app(app)):
        if path in NO_KEY_NEEDED or path.startswith("/api/docs"):
            continue
        for method in sorted(methods):
            if (method, path.removeprefix(API)) != SIGN_IN:
                found.append((method, path, route))
    return found


def minimal_request(method: str, path: str, route: APIRoute) -> dict[str, Any]:
    """The URL and a minimal body of the right kind (multipart parts, or an empty JSON
    object), for a request that should be refused before it is read."""
    url = re.sub(r"{(\w+)(:\w+)?}", lambda m: PATH_VALUES.get(m.group(1), "x1"), path)
    kw: dict[str, Any] = {"method": method, "url": url}
    params = route.dependant.body_params
    # The required parts (a File is a kind of Form), so that the parts themselves are valid.
    files = [p.alias for p in params if isinstance(p.field_info, File)]
    forms = [p.alias for p in params if isinstance(p.field_info, Form)
             and not isinstance(p.field_info, File) and p.field_info.is_required()]  # fmt: skip
    if files or forms:
        kw["files"] = {f: ("a.png", b"\x89PNG not really", "image/png") for f in files}
        kw["data"] = dict.fromkeys(forms, "x")
    elif params:
        kw["json"] = VALID_BODY.get((method, path.removeprefix(API)), {})
    return kw


@pytest.fixture
def server(app: Airside) -> Iterator[Server]:
    # Every route is tried with forged and revoked keys from one address: more failures
    # than the lockout allows (tests/test_hardening.py attacks the lockout itself).
    app.settings.auth_fail_limit = 1_000_000
    with running(app) as s:
        yield s


def assert_problem(res: httpx.Response, status: int, code: str | None = None) -> None:
    where = f"{res.request.method} {res.request.url.path}"
    assert res.status_code == status, f"{where}: {res.status_code} {res.text}"
    assert res.headers["content-type"] == PROBLEM, where
    body = res.json()
    assert body["status"] == status and "Traceback" not in res.text, where
    if code is not None:
        assert body["code"] == code, f"{where}: {body}"


def test_every_route_is_in_the_table_and_the_table_is_true(app: Airside) -> None:
    routes = {(m, p.removeprefix(API)) for m, p, _ in api_routes(app)} - ANY_ROLE
    missing = sorted(routes - set(REFUSED))
    assert not missing, f"routes without a refused role in REFUSED: {missing}"
    assert not sorted(set(REFUSED) - routes), "REFUSED names routes the app no longer has"
    for (method, path), (role, action) in REFUSED.items():
        assert role != "admin" and action not in PERMISSIONS[role], (method, path, role)


def test_every_route_refuses_no_key_a_forged_key_and_a_revoked_key(server: Server) -> None:
    # The revoked key belonged to an administrator: only the revocation refuses it.
    revoked = server.key_for("retired-admin", "admin", [])
    key_id = revoked.split("_")[1]
    principal_admin.revoke_key(server.airside, server.admin, key_id)
    routes = api_routes(server.airside)
    assert len(routes) >= len(REFUSED)
    with server.client() as c:
        for method, path, route in routes:
            req = minimal_request(method, path, route)
            assert_problem(c.request(**req), 401, "missing_key")
            forged = {"Authorization": f"Bearer {forged_key()}"}
            assert_problem(c.request(**req, headers=forged), 401, "bad_key")
            gone = {"Authorization": f"Bearer {revoked}"}
            assert_problem(c.request(**req, headers=gone), 401, "key_revoked")
        # CompreFace's header is read the same way, and a scheme other than Bearer is refused.
        req = minimal_request(*routes[0][:2], routes[0][2])
        assert_problem(c.request(**req, headers={"X-API-Key": forged_key()}), 401, "bad_key")
        basic = {"Authorization": "Basic YWRtaW46YWRtaW4="}
        assert_problem(c.request(**req, headers=basic), 401, "bad_key")


def test_every_route_refuses_a_role_without_the_right(server: Server) -> None:
    keys = {role: server.key_for(f"no-{role}", role) for role in PERMISSIONS}
    with server.client() as c:
        for method, path, route in api_routes(server.airside):
            if (method, path.removeprefix(API)) in ANY_ROLE:
                continue
            role, _ = REFUSED[(method, path.removeprefix(API))]
            req = minimal_request(method, path, route)
            res = c.request(**req, headers={"Authorization": f"Bearer {keys[role]}"})
            assert_problem(res, 403, "forbidden")


def test_refusals_with_a_key_are_audited(server: Server) -> None:
    operator = server.key_for("gate-agent", "operator")
    forged = forged_key()
    with server.client(operator) as c:
        assert_problem(c.post(f"{API}/purge"), 403, "forbidden")
    with server.client(forged) as c:
        assert_problem(c.get(f"{API}/review"), 401, "bad_key")
    with server.client(server.admin_key) as c:
        res = c.get(f"{API}/audit/export")
    assert res.status_code == 200, res.text
    records = [json.loads(line) for line in res.text.splitlines()]
    refused = [r for r in records if r["type"] == "record" and r["decision"].startswith("refused")]
    assert any(r["actor"] == "gate-agent" and r["action"] == "purge"
               and r["decision"] == "refused:forbidden" for r in refused)  # fmt: skip
    forged_id = forged.split("_")[1]
    assert any(r["actor"] == "anonymous" and r["action"] == "auth"
               and r["decision"] == "refused:bad_key"
               and json.loads(r["result"]).get("key_id") == forged_id
               for r in refused)  # fmt: skip
