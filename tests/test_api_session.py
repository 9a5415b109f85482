"""Console sessions over real HTTP, without a browser: the cookie is a session of its key
(audited in and out, ended by the key's revocation or the principal's disabling), only
digests are stored, and a change without the CSRF token is refused and audited."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select
from tests.server_harness import Server, running

from airside.services import principal_admin
from airside.services.app import Airside
from airside.store.tables import ConsoleSession

API = "/api/v1"


@pytest.fixture
def server(app: Airside) -> Iterator[Server]:
    with running(app) as s:
        yield s


def signed_in(server: Server, key: str) -> tuple[httpx.Client, str]:
    """A client holding the session cookie (closed by the caller's ``with``), and the token."""
    c = httpx.Client(base_url=server.url)
    res = httpx.post(f"{server.url}{API}/session", json={"key": key})
    assert res.status_code == 200, res.text
    c.cookies.set("airside_session", res.cookies["airside_session"])
    return c, res.json()["csrf_token"]


def audit_records(server: Server) -> list[dict[str, object]]:
    with server.client(server.admin_key) as c:
        lines = c.get(f"{API}/audit/export").text.splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "record"]


def test_a_session_is_the_keys_holder_and_says_what_the_role_may_do(server: Server) -> None:
    c, csrf = signed_in(server, server.key_for("desk-1", "enrolment_officer", [("board-*", "*")]))
    with c:
        me = c.get(f"{API}/session").json()
    assert me["principal"] == "desk-1" and me["role"] == "enrolment_officer"
    assert "enrol" in me["actions"] and "subject.erase" not in me["actions"]
    assert me["scopes"] == [{"gallery": "board-*", "purpose": "*"}] and len(csrf) > 40


def test_only_digests_of_the_cookie_and_the_csrf_token_are_stored(server: Server) -> None:
    c, csrf = signed_in(server, server.admin_key)
    token = c.cookies["airside_session"]
    c.close()
    with server.airside.session() as s:
        row = s.scalars(select(ConsoleSession)).one()
        stored = " ".join(str(v) for v in vars(row).values())
    assert token not in stored and csrf not in stored


def test_sign_in_and_out_are_audited_and_the_cookie_is_dead_after(server: Server) -> None:
    c, csrf = signed_in(server, server.admin_key)
    token = c.cookies["airside_session"]
    with c:
        assert c.delete(f"{API}/session", headers={"X-CSRF-Token": csrf}).status_code == 200
    with httpx.Client(base_url=server.url, cookies={"airside_session": token}) as again:
        res = again.get(f"{API}/galleries")
    assert res.status_code == 401 and res.json()["code"] == "session_ended"
    actions = [(r["actor"], r["action"]) for r in audit_records(server)]
    assert ("api-admin", "session.start") in actions and ("api-admin", "session.end") in actions


@pytest.mark.parametrize("how", ["key revoked", "principal disabled"])
def test_a_session_ends_with_its_key_or_its_principal(server: Server, how: str) -> None:
    key = server.key_for("duty-mgr", "operator")
    c, _ = signed_in(server, key)
    with c:
        assert c.get(f"{API}/galleries").status_code == 200
        if how == "key revoked":
            principal_admin.revoke_key(server.airside, server.admin, key.split("_")[1])
        else:
            principal_admin.disable_principal(server.airside, server.admin, "duty-mgr")
        res = c.get(f"{API}/galleries")
    assert res.status_code == 401
    assert res.json()["code"] in ("key_revoked", "principal_disabled")


def test_a_change_without_the_csrf_token_is_refused_and_audited(server: Server) -> None:
    c, csrf = signed_in(server, server.admin_key)
    body = {"name": "board-1", "purpose": "boarding:KE1"}
    with c:
        refused = c.post(f"{API}/galleries", json=body)
        wrong = c.post(f"{API}/galleries", json=body, headers={"X-CSRF-Token": "x" * 43})
        done = c.post(f"{API}/galleries", json=body, headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 403 and refused.json()["code"] == "csrf_failed"
    assert wrong.status_code == 403 and done.status_code == 201
    assert sum(r["decision"] == "refused:csrf_failed" for r in audit_records(server)) == 2


def test_a_wrong_key_gets_no_session_and_is_audited(server: Server) -> None:
    with httpx.Client(base_url=server.url) as c:
        res = c.post(f"{API}/session", json={"key": "as1_0123456789ab_" + "A" * 43})
        assert res.status_code == 401 and "airside_session" not in c.cookies
        assert c.post(f"{API}/session", json={}).status_code == 422
    assert any(r["decision"] == "refused:bad_key" for r in audit_records(server))


@pytest.mark.parametrize("edit", ["lengthen", "revive", "hand over"])
def test_a_database_writer_cannot_lengthen_revive_or_hand_over_a_session(
    server: Server, edit: str
) -> None:
    from datetime import timedelta

    from airside.store.tables import PrincipalRecord

    c, csrf = signed_in(server, server.key_for("duty-9", "operator"))
    with c:
        if edit == "revive":
            assert c.delete(f"{API}/session", headers={"X-CSRF-Token": csrf}).status_code == 200
        with server.airside.session() as s:  # straight to the database, behind Airside's back
            row = s.scalars(select(ConsoleSession)).one()
            if edit == "lengthen":
                row.expires_at = row.expires_at + timedelta(days=30)
            elif edit == "revive":
                row.ended_at = None
            else:
                admin = s.scalars(
                    select(PrincipalRecord).where(PrincipalRecord.name == "api-admin")
                )
                row.principal_id = admin.one().id
        res = c.get(f"{API}/galleries")
    assert res.status_code in (401, 403) and res.json()["code"] == "registry_tampered", res.text
