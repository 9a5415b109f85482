"""Access control: every call is made by a registered principal, within its role and
scopes; keys are stored hashed; every refusal is audited and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, text, update
from tests.conftest import jpeg_bytes, png_bytes

from airside.errors import AccessDenied
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries, matching, principal_admin, subjects
from airside.services.app import Airside
from airside.services.audit_service import verify_chain
from airside.store.tables import ApiKey, AuditRecord, PrincipalRecord, PrincipalScope, Template

CONSENT = BasisInput("consent")


@pytest.fixture
def admin(app: Airside) -> Principal:
    return principal_admin.ensure_local_admin(app)


@pytest.fixture
def boarding(app: Airside, admin: Principal, astronaut: np.ndarray) -> Iterator[str]:
    """A boarding gallery and a seamless-travel gallery, the astronaut enrolled in both."""
    for name, purpose in (("boarding:KE123", "boarding"), ("seamless", "seamless-travel")):
        galleries.create_gallery(app, admin, name, purpose)
        enrolment.enrol(app, admin, name, "PNR-1", [png_bytes(astronaut)], CONSENT)
    yield "boarding:KE123"


def refusals(app: Airside, code: str) -> list[AuditRecord]:
    with app.session() as s:
        return list(s.scalars(select(AuditRecord).where(AuditRecord.decision == f"refused:{code}")))


def templates(app: Airside) -> int:
    with app.session() as s:
        return int(s.scalar(select(func.count()).select_from(Template)) or 0)


# --------------------------------------------------------------------------------------------
# the first run and the registry


def test_the_first_run_makes_the_local_user_administrator_once(app: Airside) -> None:
    first = principal_admin.ensure_local_admin(app)
    assert first.role == "admin" and first.name.startswith("local:")
    assert principal_admin.ensure_local_admin(app) == first
    with app.session() as s:
        recs = s.scalars(select(AuditRecord).where(AuditRecord.action == "principal.add")).all()
    assert [(r.actor, json.loads(r.result)["principal"]) for r in recs] == [("system", first.name)]


def test_another_local_user_on_an_installed_system_is_not_an_administrator(
    app: Airside, admin: Principal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "mallory")
    someone = principal_admin.ensure_local_admin(app)
    assert someone == Principal("local:mallory", "unregistered")
    with pytest.raises(AccessDenied) as e:
        galleries.create_gallery(app, someone, "g", "p")
    assert e.value.code == "unknown_principal"


def test_an_unregistered_principal_is_refused_audited_and_learns_nothing(
    app: Airside, boarding: str, astronaut: np.ndarray
) -> None:
    stranger = Principal("stranger", "admin")
    with pytest.raises(AccessDenied, match="not a registered principal") as e:
        matching.identify(app, stranger, "no-such-gallery", png_bytes(astronaut))
    assert e.value.code == "unknown_principal"  # not "no such gallery"
    [rec] = refusals(app, "unknown_principal")
    assert (rec.actor, rec.action) == ("stranger", "identify")


def test_claiming_another_role_is_refused(app: Airside, admin: Principal, boarding: str) -> None:
    principal_admin.add_principal(app, admin, "agent", "operator", [("boarding:*", "*")])
    with pytest.raises(AccessDenied) as e:
        galleries.create_gallery(app, Principal("agent", "admin"), "mine", "anything")
    assert e.value.code == "role_mismatch"


def test_only_an_administrator_manages_principals(app: Airside, admin: Principal) -> None:
    agent = principal_admin.add_principal(app, admin, "agent", "operator")
    with pytest.raises(AccessDenied) as e:
        principal_admin.add_principal(app, agent, "accomplice", "admin")
    assert e.value.code == "forbidden"
    with pytest.raises(AccessDenied):
        principal_admin.grant(app, agent, "agent", "*")
    with app.session() as s:
        assert s.scalar(select(PrincipalRecord).where(PrincipalRecord.name == "accomplice")) is None
    assert len(refusals(app, "forbidden")) == 2


def test_bad_names_roles_and_patterns_are_refused_and_audited(
    app: Airside, admin: Principal
) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        principal_admin.add_principal(app, admin, "x", "superuser")
    with pytest.raises(ValueError, match="principal name"):
        principal_admin.add_principal(app, admin, "has space", "operator")
    with pytest.raises(ValueError, match="pattern"):
        principal_admin.add_principal(app, admin, "y", "operator", [("", "*")])
    assert len(refusals(app, "bad_request")) == 3


def test_permission_changes_are_audited(app: Airside, admin: Principal) -> None:
    principal_admin.add_principal(app, admin, "agent", "operator", [("boarding:*", "boarding")])
    principal_admin.grant(app, admin, "agent", "seamless")
    principal_admin.revoke_scope(app, admin, "agent", "seamless")
    key = principal_admin.issue_key(app, admin, "agent")
    principal_admin.revoke_key(app, admin, key.key_id)
    principal_admin.disable_principal(app, admin, "agent")
    with app.session() as s:
        actions = [
            r.action
            for r in s.scalars(
                select(AuditRecord).where(AuditRecord.actor == admin.name).order_by(AuditRecord.seq)
            )
        ]
    assert actions == [
        "principal.add",
        "principal.grant",
        "principal.revoke",
        "apikey.issue",
        "apikey.revoke",
        "principal.disable",
    ]
    assert verify_chain(app, admin).ok


# --------------------------------------------------------------------------------------------
# roles and scopes


def test_an_operator_may_not_enrol_and_nothing_is_written(
    app: Airside, admin: Principal, boarding: str, hopper: np.ndarray
) -> None:
    agent = principal_admin.add_principal(app, admin, "agent", "operator", [("boarding:*", "*")])
    before = templates(app)
    with pytest.raises(AccessDenied) as e:
        enrolment.enrol(app, agent, boarding, "PNR-2", [png_bytes(hopper)], CONSENT)
    assert e.value.code == "forbidden"
    assert templates(app) == before
    [rec] = refusals(app, "forbidden")
    assert (rec.actor, rec.action, rec.gallery) == ("agent", "enrol", boarding)


def test_a_search_outside_the_principals_scope_is_refused(
    app: Airside, admin: Principal, boarding: str, astronaut: np.ndarray
) -> None:
    agent = principal_admin.add_principal(app, admin, "agent", "operator", [("boarding:*", "*")])
    assert matching.identify(app, agent, boarding, jpeg_bytes(astronaut, 70)).match
    with pytest.raises(AccessDenied, match="no scope") as e:
        matching.identify(app, agent, "seamless", jpeg_bytes(astronaut, 70))
    assert e.value.code == "out_of_scope"
    [rec] = refusals(app, "out_of_scope")
    assert (rec.actor, rec.action, rec.gallery) == ("agent", "identify", "seamless")


def test_a_search_for_another_purpose_is_refused(
    app: Airside, admin: Principal, boarding: str, astronaut: np.ndarray
) -> None:
    probe = jpeg_bytes(astronaut, 70)
    # Declared by the caller: a boarding gallery is not searched for law enforcement.
    with pytest.raises(AccessDenied, match="serves purpose 'boarding'") as e:
        matching.identify(app, admin, boarding, probe, purpose="law-enforcement")
    assert e.value.code == "purpose_mismatch"
    with pytest.raises(AccessDenied):
        matching.verify_subject(app, admin, boarding, "PNR-1", probe, purpose="law-enforcement")
    # Bound in the grant: this principal may use boarding galleries only for security checks.
    police = principal_admin.add_principal(app, admin, "liaison", "operator", [("*", "security")])
    with pytest.raises(AccessDenied, match="only for security") as e:
        matching.identify(app, police, boarding, probe)
    assert e.value.code == "purpose_mismatch"
    assert len(refusals(app, "purpose_mismatch")) == 3
    assert matching.identify(app, admin, boarding, probe, purpose="boarding").match


def test_an_auditor_reads_the_log_but_cannot_search(
    app: Airside, admin: Principal, boarding: str, astronaut: np.ndarray
) -> None:
    auditor = principal_admin.add_principal(app, admin, "regulator", "auditor")
    assert verify_chain(app, auditor).ok
    with pytest.raises(AccessDenied) as e:
        matching.identify(app, auditor, boarding, jpeg_bytes(astronaut, 70))
    assert e.value.code == "forbidden"


def test_a_camera_identifies_in_its_galleries_only(
    app: Airside, admin: Principal, boarding: str, astronaut: np.ndarray
) -> None:
    cam = principal_admin.add_principal(
        app, admin, "cam-gate-12", "camera", [(boarding, "boarding")]
    )
    assert matching.identify(app, cam, boarding, jpeg_bytes(astronaut, 70)).match
    for call in (
        lambda: matching.identify(app, cam, "seamless", jpeg_bytes(astronaut, 70)),
        lambda: subjects.list_subjects(app, cam, boarding),
        lambda: enrolment.enrol(app, cam, boarding, "X", [png_bytes(astronaut)], CONSENT),
    ):
        with pytest.raises(AccessDenied):
            call()


def test_listings_show_only_what_the_scopes_reach(
    app: Airside, admin: Principal, boarding: str
) -> None:
    officer = principal_admin.add_principal(
        app, admin, "officer", "enrolment_officer", [("seamless", "*")]
    )
    assert [g.name for g in galleries.list_galleries(app, officer)] == ["seamless"]
    assert [x.galleries for x in subjects.list_subjects(app, officer)] == [{"seamless": 1}]
    assert {g.name for g in galleries.list_galleries(app, admin)} == {boarding, "seamless"}


def test_a_disabled_principal_is_refused(app: Airside, admin: Principal, boarding: str) -> None:
    agent = principal_admin.add_principal(app, admin, "agent", "operator", [("*", "*")])
    principal_admin.disable_principal(app, admin, "agent")
    with pytest.raises(AccessDenied) as e:
        galleries.list_galleries(app, agent)
    assert e.value.code == "principal_disabled"


# --------------------------------------------------------------------------------------------
# API keys


@pytest.fixture
def agent_key(app: Airside, admin: Principal) -> principal_admin.IssuedKey:
    principal_admin.add_principal(app, admin, "agent", "operator", [("boarding:*", "*")])
    return principal_admin.issue_key(app, admin, "agent")


def test_a_key_authenticates_its_principal(
    app: Airside, agent_key: principal_admin.IssuedKey
) -> None:
    assert principal_admin.authenticate(app, agent_key.secret) == Principal("agent", "operator")


def test_only_a_hash_of_the_key_is_stored(
    app: Airside, agent_key: principal_admin.IssuedKey, tmp_path: Path
) -> None:
    secret_part = agent_key.secret[len("as1_") + 12 + 1 :]  # the part after the key id
    with app.session() as s:
        row = s.scalar(select(ApiKey))
        assert row is not None and secret_part not in row.secret_sha256
        dump = "\n".join(str(r) for r in s.execute(text("SELECT * FROM api_keys")))
        log = "\n".join(str(r) for r in s.execute(text("SELECT * FROM audit_log")))
    assert secret_part not in dump and secret_part not in log
    app.db.compact_wal()
    for f in app.settings.data_dir.rglob("*"):
        try:
            data = f.read_bytes() if f.is_file() else b""
        except FileNotFoundError:  # a journal SQLite removed meanwhile
            continue
        assert secret_part.encode() not in data, f


def test_a_forged_key_is_refused_and_audited(
    app: Airside, agent_key: principal_admin.IssuedKey
) -> None:
    forged = agent_key.secret[:-6] + (
        "A" * 6 if not agent_key.secret.endswith("A" * 6) else "B" * 6
    )
    for attempt in (forged, "as1_000000000000_" + "x" * 43, "not-a-key", ""):
        with pytest.raises(AccessDenied) as e:
            principal_admin.authenticate(app, attempt)
        assert e.value.code == "bad_key"
    recs = refusals(app, "bad_key")
    assert len(recs) == 4 and {r.actor for r in recs} == {"anonymous"}
    assert json.loads(recs[0].result)["key_id"] == agent_key.key_id


def test_a_revoked_key_cannot_be_reused(
    app: Airside, admin: Principal, agent_key: principal_admin.IssuedKey
) -> None:
    principal_admin.revoke_key(app, admin, agent_key.key_id)
    with pytest.raises(AccessDenied) as e:
        principal_admin.authenticate(app, agent_key.secret)
    assert e.value.code == "key_revoked"
    assert len(refusals(app, "key_revoked")) == 1


def test_an_expired_key_is_refused(
    app: Airside, admin: Principal, agent_key: principal_admin.IssuedKey
) -> None:
    short = principal_admin.issue_key(app, admin, "agent", expires_in=timedelta(hours=1))
    with app.session() as s:
        s.execute(
            update(ApiKey)
            .where(ApiKey.key_id == short.key_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with pytest.raises(AccessDenied) as e:
        principal_admin.authenticate(app, short.secret)
    assert e.value.code == "key_expired"
    assert (
        principal_admin.authenticate(app, agent_key.secret).name == "agent"
    )  # the other key lives


def test_disabling_a_principal_revokes_its_keys(
    app: Airside, admin: Principal, agent_key: principal_admin.IssuedKey
) -> None:
    principal_admin.disable_principal(app, admin, "agent")
    with pytest.raises(AccessDenied) as e:
        principal_admin.authenticate(app, agent_key.secret)
    assert e.value.code == "key_revoked"


def test_the_cli_acts_as_the_keys_principal_and_refuses_a_forged_key(
    app: Airside,
    agent_key: principal_admin.IssuedKey,
    boarding: str,
    tmp_path: Path,
    astronaut: np.ndarray,
) -> None:
    from typer.testing import CliRunner

    from airside.cli.main import app as cli

    app.close()
    probe = tmp_path / "probe.jpg"
    probe.write_bytes(jpeg_bytes(astronaut, 70))
    base = ["--data-dir", str(app.settings.data_dir)]
    run = CliRunner().invoke
    ok = run(cli, [*base, "galleries", "--json"], env={"AIRSIDE_API_KEY": agent_key.secret})
    assert ok.exit_code == 0, ok.output
    assert [g["name"] for g in json.loads(ok.stdout)] == [boarding]
    bad = run(cli, [*base, "galleries", "--json"], env={"AIRSIDE_API_KEY": "as1_forged"})
    assert bad.exit_code == 1 and json.loads(bad.stdout)["error"] == "bad_key"
    denied = run(
        cli,
        [*base, "gallery", "create", "mine", "--purpose", "x", "--json"],
        env={"AIRSIDE_API_KEY": agent_key.secret},
    )
    assert denied.exit_code == 1 and json.loads(denied.stdout)["error"] == "forbidden"


# --------------------------------------------------------------------------------------------
# the registry itself, edited behind Airside's back


def test_a_role_raised_in_the_database_is_refused_and_audited(
    app: Airside, admin: Principal, boarding: str
) -> None:
    principal_admin.add_principal(app, admin, "agent", "operator", [("boarding:*", "*")])
    with app.session() as s:
        s.execute(
            update(PrincipalRecord).where(PrincipalRecord.name == "agent").values(role="admin")
        )
    with pytest.raises(AccessDenied, match="changed outside Airside") as e:
        galleries.create_gallery(app, Principal("agent", "admin"), "mine", "anything")
    assert e.value.code == "registry_tampered"
    assert [r.actor for r in refusals(app, "registry_tampered")] == ["agent"]
    assert "mine" not in {g.name for g in galleries.list_galleries(app, admin)}


def test_a_scope_inserted_in_the_database_is_refused(
    app: Airside, admin: Principal, boarding: str, astronaut: np.ndarray
) -> None:
    agent = principal_admin.add_principal(app, admin, "agent", "operator", [("boarding:*", "*")])
    with app.session() as s:
        rec = s.scalar(select(PrincipalRecord).where(PrincipalRecord.name == "agent"))
        assert rec is not None
        s.add(PrincipalScope(principal_id=rec.id, gallery_pattern="*", purpose_pattern="*",
                             granted_by="nobody"))  # fmt: skip
    with pytest.raises(AccessDenied) as e:
        matching.identify(app, agent, "seamless", jpeg_bytes(astronaut, 70))
    assert e.value.code == "registry_tampered"
    with pytest.raises(AccessDenied):
        principal_admin.grant(app, admin, "agent", "other")  # a tampered entry is not re-sealed


def test_a_revoked_key_restored_in_the_database_is_refused(
    app: Airside, admin: Principal, agent_key: principal_admin.IssuedKey
) -> None:
    principal_admin.revoke_key(app, admin, agent_key.key_id)
    with app.session() as s:
        s.execute(update(ApiKey).values(revoked_at=None))
    with pytest.raises(AccessDenied) as e:
        principal_admin.authenticate(app, agent_key.secret)
    assert e.value.code == "registry_tampered"
