"""Issue 18, hardening: each control attacked over real HTTP on loopback where it lives in
the server (docs/security.md lists every threat, its control and the test here).

- failed API-key attempts lock the client address out (429, even with a valid key), once
  audited per lockout, counted in /metrics; X-Forwarded-For counts only from a trusted proxy;
- security headers on every answer, errors included;
- CSRF: the session cookie alone changes nothing; a GET is not a change;
- outbound URLs (webhooks, camera streams) never point at this machine or cloud metadata,
  checked again at delivery (DNS rebinding);
- path traversal in every API route that takes a file name;
- HTTPS with ``airside serve --tls-cert/--tls-key``; a readable key file is refused;
- no key, session token, template key or template in any log line."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from tests.conftest import png_bytes
from tests.server_harness import Server, running

from airside.config import Settings
from airside.errors import AirsideError, NotFoundError
from airside.governance import outbound
from airside.server import auth_guard
from airside.server.auth_guard import AuthGuard
from airside.server.serving import uvicorn_options
from airside.services import events, published_reports, webhooks
from airside.services.app import Airside
from airside.store.tables import AuditRecord, Template
from airside.vision.analyzer import FaceAnalyzer

API = "/api/v1"
FORGED = "as1_0123456789ab_" + "A" * 43
PROBLEM = "application/problem+json"


def open_app(tmp_path: Path, analyzer: FaceAnalyzer, **settings: Any) -> Airside:
    return Airside(
        Settings(data_dir=tmp_path / "data", **settings), analyzer_factory=lambda _s: analyzer
    )


@pytest.fixture
def locking(tmp_path: Path, analyzer: FaceAnalyzer) -> Iterator[Airside]:
    """An installation that locks an address out after 3 failures in a minute."""
    a = open_app(tmp_path, analyzer, auth_fail_limit=3, auth_fail_window_s=60, auth_lockout_s=30)
    yield a
    a.close()


def lockouts(app: Airside) -> list[AuditRecord]:
    with app.session(readonly=True) as s:
        return list(s.scalars(select(AuditRecord).where(AuditRecord.action == "auth.lockout")))


def from_address(server: Server, address: str, **kw: Any) -> httpx.Client:
    """A client whose connections come from ``address`` (another loopback address)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.url, transport=transport, timeout=30, **kw)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- 1. failed attempts: lockout -----------------------------------------------------------


def test_guessing_keys_locks_the_address_out_even_for_a_valid_key(locking: Airside) -> None:
    with (
        running(locking, uvicorn_options=uvicorn_options(locking.settings)) as server,
        httpx.Client(base_url=server.url, timeout=30) as c,
    ):
        tries = [c.get(f"{API}/galleries", headers=bearer(FORGED)) for _ in range(3)]
        assert [r.status_code for r in tries] == [401, 401, 401]
        valid = c.get(f"{API}/galleries", headers=bearer(server.admin_key))
        no_key = c.get(f"{API}/galleries")
        sign_in = c.post(f"{API}/session", json={"key": server.admin_key})
        metrics = c.get("/metrics").text
    for res in (valid, no_key, sign_in):
        assert res.status_code == 429, res.text
        assert res.json()["code"] == "too_many_attempts"
        assert res.headers["content-type"] == PROBLEM
        assert 1 <= int(res.headers["retry-after"]) <= 30
    # One record for the lockout (each failure is audited by the key check itself).
    records = lockouts(locking)
    assert len(records) == 1 and records[0].decision == "refused:too_many_attempts"
    assert json.loads(records[0].result)["client"] == "127.0.0.1"
    assert re.search(r"^airside_auth_lockouts_total [1-9]", metrics, re.M)
    assert re.search(r"^airside_auth_failures_total [3-9]", metrics, re.M)


def test_a_guessed_session_cookie_counts_as_a_failed_attempt(locking: Airside) -> None:
    with (
        running(locking, uvicorn_options=uvicorn_options(locking.settings)) as server,
        httpx.Client(base_url=server.url, timeout=30) as c,
    ):
        for n in range(3):
            c.cookies.set("airside_session", f"guess-{n}-" + "x" * 30)
            assert c.get(f"{API}/session").status_code == 401
        c.cookies.clear()
        assert c.get(f"{API}/galleries", headers=bearer(server.admin_key)).status_code == 429


def test_another_address_is_not_locked_out_and_its_success_frees_no_one(
    locking: Airside,
) -> None:
    with (
        running(locking, uvicorn_options=uvicorn_options(locking.settings)) as server,
        httpx.Client(base_url=server.url, timeout=30) as one,
    ):
        for _ in range(3):
            one.get(f"{API}/galleries", headers=bearer(FORGED))
        with from_address(server, "127.0.0.2") as other:
            ok = other.get(f"{API}/galleries", headers=bearer(server.admin_key))
        still = one.get(f"{API}/galleries", headers=bearer(server.admin_key))
    assert ok.status_code == 200
    assert still.status_code == 429


def test_x_forwarded_for_does_not_escape_a_lockout_unless_the_proxy_is_trusted(
    locking: Airside,
) -> None:
    with (
        running(locking, uvicorn_options=uvicorn_options(locking.settings)) as server,
        httpx.Client(base_url=server.url, timeout=30) as c,
    ):
        for n in range(3):
            c.get(f"{API}/galleries", headers={**bearer(FORGED), "X-Forwarded-For": f"10.0.0.{n}"})
        spoofed = c.get(
            f"{API}/galleries", headers={**bearer(server.admin_key), "X-Forwarded-For": "10.9.9.9"}
        )
    assert spoofed.status_code == 429  # the peer (127.0.0.1) was counted, not the header


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_one_locked_out(
    tmp_path: Path, analyzer: FaceAnalyzer
) -> None:
    app = open_app(tmp_path, analyzer, auth_fail_limit=3, trusted_proxies="127.0.0.1")
    try:
        with (
            running(app, uvicorn_options=uvicorn_options(app.settings)) as server,
            httpx.Client(base_url=server.url, timeout=30) as c,
        ):
            guesser = {"X-Forwarded-For": "203.0.113.7"}
            for _ in range(3):
                c.get(f"{API}/galleries", headers={**bearer(FORGED), **guesser})
            locked = c.get(f"{API}/galleries", headers={**bearer(server.admin_key), **guesser})
            other = c.get(
                f"{API}/galleries",
                headers={**bearer(server.admin_key), "X-Forwarded-For": "203.0.113.8"},
            )
        assert locked.status_code == 429 and other.status_code == 200
        assert json.loads(lockouts(app)[0].result)["client"] == "203.0.113.7"
    finally:
        app.close()


def test_a_lockout_ends_and_old_failures_leave_the_window() -> None:
    now = [1000.0]
    guard = AuthGuard(limit=3, window_s=60, lockout_s=300, clock=lambda: now[0])
    assert guard.failed("a") == 0 and guard.failed("a") == 0
    now[0] += 61  # the first two have left the window
    assert guard.failed("a") == 0 and guard.locked_for("a") == 0
    assert guard.failed("a") == 0 and guard.failed("a") == 3  # three within the window
    assert guard.locked_for("a") == pytest.approx(300) and guard.locked_for("b") == 0
    now[0] += 301
    assert guard.locked_for("a") == 0
    assert {"bad_key", "key_revoked", "session_expired"} <= auth_guard.FAILURE_CODES


# -- 2. security headers ---------------------------------------------------------------------


def _script_sources(csp: str) -> str:
    directives = dict([*d.strip().split(" ", 1), ""][:2] for d in csp.split(";") if d.strip())
    return directives.get("script-src", directives.get("default-src", ""))


@pytest.fixture
def server(app: Airside) -> Iterator[Server]:
    with running(app) as s:
        yield s


@pytest.mark.parametrize(
    ("method", "path", "key", "body", "status"),
    [
        ("GET", "/", False, None, 200),
        ("GET", "/console/app.js", False, None, 200),
        ("GET", "/api/docs", False, None, 200),
        ("GET", "/healthz", False, None, 200),
        ("GET", "/metrics", False, None, 200),
        ("GET", f"{API}/galleries", True, None, 200),
        ("GET", f"{API}/no-such-route", True, None, 404),
        ("GET", f"{API}/galleries", False, None, 401),
        ("POST", f"{API}/galleries", True, {"name": 7}, 422),
        ("GET", f"{API}/subjects/nobody", True, None, 404),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_every_answer_carries_the_security_headers(
    server: Server, method: str, path: str, key: bool, body: Any, status: int
) -> None:
    with server.client(server.admin_key if key else None) as c:
        res = c.request(method, path, json=body)
    assert res.status_code == status, res.text
    h = res.headers
    assert h["x-content-type-options"] == "nosniff"
    assert h["referrer-policy"] == "no-referrer"
    csp = h["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in _script_sources(csp) and "*" not in _script_sources(csp)
    if path.startswith("/api/v1"):
        assert h["cache-control"] == "no-store"


def test_the_api_docs_page_allows_only_its_own_inline_script_by_hash(server: Server) -> None:
    res = httpx.get(server.url + "/api/docs")
    scripts = _script_sources(res.headers["content-security-policy"])
    assert "'sha256-" in scripts and "'unsafe-inline'" not in scripts


# -- 3. CSRF -----------------------------------------------------------------------------------


def test_the_session_cookie_alone_changes_nothing_and_a_get_is_not_a_change(
    server: Server,
) -> None:
    res = httpx.post(f"{server.url}{API}/session", json={"key": server.admin_key})
    cookie = res.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    csrf = res.json()["csrf_token"]
    with httpx.Client(base_url=server.url) as c:
        c.cookies.set("airside_session", res.cookies["airside_session"])
        assert c.get(f"{API}/galleries").status_code == 200  # reading needs no token
        # What a cross-site form can send: a simple POST, the cookie, no header.
        form = c.post(f"{API}/galleries", data={"name": "x", "purpose": "p"})
        other = c.post(
            f"{API}/galleries",
            json={"name": "x", "purpose": "p"},
            headers={"X-CSRF-Token": csrf[:-1] + ("A" if csrf[-1] != "A" else "B")},
        )
        erase = c.delete(f"{API}/subjects/PNR-1")
        listed = c.get(f"{API}/galleries").json()
    assert form.status_code == 403 and form.json()["code"] == "csrf_failed"
    assert other.status_code == 403 and erase.status_code == 403
    assert listed["items"] == []


# -- 4. outbound URLs ------------------------------------------------------------------------


BAD_URLS = [
    "http://127.0.0.1:8080/hook",
    "http://127.1.2.3/",
    "http://[::1]:9000/",
    "http://localhost/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1%25eth0]/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://224.0.0.1/",
    "rtsp://127.0.0.1:8554/s",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_an_outbound_url_at_this_machine_or_link_local_is_refused(url: str) -> None:
    with pytest.raises(AirsideError) as e:
        outbound.check_url(Settings(), url)
    assert e.value.code == "url_not_allowed" and "AIRSIDE_OUTBOUND_ALLOW" in str(e.value)


def test_every_address_a_name_resolves_to_is_checked() -> None:
    def resolver(host: str) -> list[str]:
        return ["93.184.216.34", "169.254.169.254"]

    with pytest.raises(AirsideError, match=r"169\.254\.169\.254"):
        outbound.check_url(Settings(), "https://hooks.example/x", resolver=resolver)
    outbound.check_url(Settings(), "https://hooks.example/x", resolver=lambda h: ["192.0.2.1"])
    outbound.check_url(Settings(), "https://unresolvable.invalid/x", resolver=lambda h: [])


@pytest.mark.parametrize(
    "settings",
    [
        {"allow_private_urls": True},
        {"outbound_allow": "10.1.1.1, 127.0.0.0/8"},
        {"outbound_allow": "localhost"},
    ],
    ids=["allow-private", "cidr", "host"],
)
def test_an_administrator_can_allow_a_local_receiver(settings: dict[str, Any]) -> None:
    outbound.check_url(
        Settings(**settings), "http://localhost:9000/hook", resolver=lambda h: ["127.0.0.1"]
    )
    outbound.check_url(Settings(**settings), "http://10.2.3.4/hook")  # private: allowed anyway


def test_a_webhook_or_camera_at_the_metadata_address_is_refused_over_http(
    app: Airside, tmp_path: Path
) -> None:
    cameras = tmp_path / "cameras.toml"
    cameras.write_text("")
    with running(app, cameras_file=cameras) as server, server.client(server.admin_key) as c:
        hook = c.post(
            f"{API}/webhooks", json={"name": "meta", "url": "http://169.254.169.254/latest/"}
        )
        cam = c.post(
            f"{API}/cameras",
            json={
                "name": "loop",
                "source": "rtsp://127.0.0.1:554/s",
                "galleries": ["g"],
                "enabled": False,
            },
        )
        listed = c.get(f"{API}/webhooks").json()["items"]
    for res in (hook, cam):
        assert res.status_code == 422 and res.json()["code"] == "url_not_allowed", res.text
    assert listed == [] and "loop" not in cameras.read_text()
    with app.session(readonly=True) as s:
        refused = s.scalars(
            select(AuditRecord.action).where(AuditRecord.decision == "refused:url_not_allowed")
        ).all()
    assert sorted(refused) == ["camera.add", "webhook.add"]


def test_a_webhook_name_re_pointed_at_this_machine_is_not_delivered_to(
    tmp_path: Path, analyzer: FaceAnalyzer, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = open_app(
        tmp_path, analyzer, events_poll_s=0.1, webhook_retry_base_s=0.3, webhook_timeout_s=3.0
    )
    try:
        with running(app) as server:
            monkeypatch.setattr(outbound, "resolve", lambda host: ["192.0.2.10"])
            webhooks.add_webhook(app, server.admin, "ops", "http://hooks.rebind.test/x")
            monkeypatch.setattr(outbound, "resolve", lambda host: ["127.0.0.1"])  # rebound
            events.record_system_event(
                app, server.admin, camera="gate-1", type_="stream_lost", at=0.0, detail="lost"
            )
            deadline = time.monotonic() + 20
            tried: list[webhooks.DeliveryInfo] = []
            while not tried and time.monotonic() < deadline:
                tried = webhooks.list_deliveries(app, server.admin, webhook="ops")
                time.sleep(0.1)
        assert tried and tried[-1].outcome != "delivered"
        assert (tried[-1].error or "").startswith("url_not_allowed")
    finally:
        app.close()


# -- 5. path traversal ---------------------------------------------------------------------


TRAVERSALS = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    "a\x00.html",
    "sub/../../x.html",
    "link.html",
]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_a_report_name_cannot_leave_the_reports_folder(server: Server, name: str) -> None:
    folder = published_reports.reports_dir(server.airside)
    folder.mkdir(parents=True, exist_ok=True)
    outside = folder.parent.parent / "secret.html"
    outside.write_text("<p>outside</p>")
    (folder / "link.html").unlink(missing_ok=True)
    (folder / "link.html").symlink_to(outside)  # a symlink escaping the folder
    with pytest.raises(NotFoundError):
        published_reports.read_report(server.airside, server.admin, name)
    quoted = httpx.URL(server.url).copy_with(
        raw_path=(
            f"{API}/reports/files/"
            + "".join(c if c.isalnum() or c in "._-" else f"%{ord(c):02X}" for c in name)
        ).encode()
    )
    res = httpx.get(quoted, headers=bearer(server.admin_key))
    # ("..": the client resolves the dot segment, and the listing of reports answers.)
    assert res.status_code == 404 or "text/html" not in res.headers["content-type"]
    assert "outside" not in res.text and "root:" not in res.text


@pytest.mark.parametrize(
    ("filename", "name"),
    [
        ("../../../escaped.onnx", None),
        ("/tmp/escaped.onnx", None),
        ("ok.onnx", "../escaped"),
        ("ok.onnx", "/tmp/escaped"),
        ("ok.onnx", "x\x00y"),
        ("..", None),
    ],
)
def test_an_uploaded_models_names_cannot_leave_the_registry(
    server: Server, tmp_path: Path, filename: str, name: str | None
) -> None:
    from tests.tiny_onnx import linear_embedder

    model = linear_embedder(tmp_path / "m.onnx").read_bytes()
    data = {"family": "generic", "licence": "MIT", "kind": "face-embedder"}
    if name is not None:
        data["name"] = name
    res = httpx.post(
        f"{server.url}{API}/models",
        headers=bearer(server.admin_key),
        files={"file": (filename, model, "application/octet-stream")},
        data=data,
        timeout=60,
    )
    assert res.status_code < 500, res.text
    registry = server.airside.settings.model_registry.resolve()
    found = [p for p in Path("/tmp").glob("escaped*")] + list(tmp_path.rglob("escaped*"))
    assert all(p.resolve().is_relative_to(registry) for p in found), found
    if res.status_code == 201:
        listed = httpx.get(f"{server.url}{API}/models", headers=bearer(server.admin_key)).json()
        for m in listed["items"]:
            assert "/" not in m["name"] and ".." not in m["name"]
    removed = httpx.delete(
        f"{server.url}{API}/models/..%2F..%2Fetc%2Fpasswd", headers=bearer(server.admin_key)
    )
    assert removed.status_code == 404
    assert Path("/etc/passwd").exists()


# -- 9. TLS ----------------------------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def test_the_server_speaks_https_with_the_certificate_it_is_given(
    app: Airside, tmp_path: Path
) -> None:
    tls = tmp_path / "tls"
    tls.mkdir(mode=0o700)
    cert, key = self_signed(tls)
    options = uvicorn_options(app.settings, tls_cert=cert, tls_key=key)
    with running(app, uvicorn_options=options) as server:
        assert server.url.startswith("https://")
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=server.url, verify=trust, timeout=30) as c:
            res = c.get(f"{API}/galleries", headers=bearer(server.admin_key))
            signed = c.post(f"{API}/session", json={"key": server.admin_key})
        with pytest.raises(httpx.ConnectError):  # a client that does not trust it
            httpx.get(server.url + "/healthz")
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the port
            httpx.get(server.url.replace("https://", "http://") + "/healthz", timeout=5)
    assert res.status_code == 200
    assert "secure" in signed.headers["set-cookie"].lower()  # the cookie never goes in clear


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604], ids="{:04o}".format)
def test_a_tls_key_others_can_read_is_refused_naming_it(tmp_path: Path, mode: int) -> None:
    tls = tmp_path / "tls"
    tls.mkdir(mode=0o700)
    cert, key = self_signed(tls)
    key.chmod(mode)
    with pytest.raises(AirsideError) as e:
        uvicorn_options(Settings(data_dir=tmp_path), tls_cert=cert, tls_key=key)
    assert e.value.code == "insecure_key_file"
    assert str(key) in str(e.value) and "0600" in str(e.value)
    with pytest.raises(AirsideError):
        uvicorn_options(Settings(data_dir=tmp_path), tls_cert=cert)  # a key is needed too


def test_serve_refuses_a_readable_tls_key_before_serving(tmp_path: Path) -> None:
    import subprocess
    import sys

    tls = tmp_path / "tls"
    tls.mkdir(mode=0o700)
    cert, key = self_signed(tls)
    key.chmod(0o644)
    env = {**os.environ, "AIRSIDE_DATA_DIR": str(tmp_path / "data")}
    res = subprocess.run(
        [
            str(Path(sys.executable).with_name("airside")),
            "serve",
            "--port",
            "1",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode != 0
    assert str(key) in res.stderr.replace("\n", "") or "insecure_key_file" in res.stderr


# -- 7. nothing secret in the logs ---------------------------------------------------------


FLOATS = re.compile(r"(?:-?\d+\.\d{3,}(?:e-?\d+)?[,\s]+){8,}")


def test_no_key_token_template_key_or_template_reaches_a_log_line(
    tmp_path: Path,
    analyzer: FaceAnalyzer,
    astronaut: np.ndarray,
    caplog: pytest.LogCaptureFixture,
) -> None:
    template_key = os.urandom(32)
    app = open_app(tmp_path, analyzer, template_key=template_key.hex())
    secrets: list[str] = [
        template_key.hex(),
        base64.b64encode(template_key).decode(),
        base64.urlsafe_b64encode(template_key).decode().rstrip("="),
    ]
    caplog.set_level(logging.DEBUG)
    try:
        with running(app) as server:
            officer = server.key_for("desk-1", "enrolment_officer")
            secrets += [server.admin_key, officer]
            with server.client(server.admin_key) as c:
                assert (
                    c.post(
                        f"{API}/galleries", json={"name": "board-1", "purpose": "boarding:KE1"}
                    ).status_code
                    == 201
                )
                img = ("a.png", png_bytes(astronaut), "image/png")
                res = c.post(
                    f"{API}/galleries/board-1/subjects/PNR-1/enrolments",
                    files=[("image", img)],
                    data={"basis": "consent"},
                )
                assert res.status_code == 201, res.text
                hit = c.post(f"{API}/galleries/board-1/identify", files={"image": img}).json()
                assert hit["match"]
                c.get(f"{API}/galleries", headers=bearer(FORGED))  # a refusal, logged or not
                signed = httpx.post(f"{server.url}{API}/session", json={"key": officer})
                secrets += [signed.cookies["airside_session"], signed.json()["csrf_token"]]
                with app.session(readonly=True) as s:
                    blobs = [bytes(b) for b in s.scalars(select(Template.vector)).all()]
                assert c.delete(f"{API}/subjects/PNR-1").status_code == 200
    finally:
        app.close()
    for b in blobs:
        if b:
            secrets += [b[:16].hex(), base64.b64encode(b[:12]).decode()]
    assert caplog.records, "nothing was logged: the test would prove nothing"
    # The test's own HTTP client (httpx, httpcore) logs what it sends and receives: not
    # Airside's lines (the server runs in this process, its loggers are all the others).
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert server_side, "nothing was logged by the server: the test would prove nothing"
    for record in server_side:
        text = record.getMessage() + " " + repr(record.args) + " " + str(record.exc_text or "")
        for secret in secrets:
            assert secret not in text, f"{record.name}: a secret in {text[:200]!r}"
        assert not FLOATS.search(text), f"{record.name}: a vector in {text[:200]!r}"
