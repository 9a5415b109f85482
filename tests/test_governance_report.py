"""The governance report shows purposes, bases, retention, purges and the audit state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import png_bytes, register

from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, erasure, galleries
from airside.services.app import Airside
from airside.services.governance_report import build_report, render_html
from airside.services.retention import purge

ADMIN = Principal("admin", "admin")


@pytest.fixture(autouse=True)
def _principals(app: Airside) -> None:
    register(app, ADMIN)


def test_report_lists_each_gallery_with_its_governance(
    app: Airside, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    galleries.create_gallery(app, ADMIN, "KE123", "boarding:KE123", retain_seconds=60)
    enrolment.enrol(app, ADMIN, "KE123", "A", [png_bytes(astronaut)], BasisInput("consent"))
    enrolment.enrol(
        app, ADMIN, "KE123", "B", [png_bytes(hopper)], BasisInput("public_task", "Reg 2019/817")
    )
    rep = build_report(app, ADMIN)
    (g,) = rep.galleries
    assert (g.purpose, g.subjects, g.templates) == ("boarding:KE123", 2, 2)
    assert g.bases == {"consent": 1, "public_task": 1}
    assert g.retention == "templates at most 1 min old"
    assert rep.audit["ok"]


def test_report_shows_purges_and_erasures(
    app: Airside, astronaut: np.ndarray, tmp_path: Path
) -> None:
    galleries.create_gallery(app, ADMIN, "g", "seamless", retain_seconds=60)
    enrolment.enrol(app, ADMIN, "g", "A", [png_bytes(astronaut)], BasisInput("consent"))
    purge(app, ADMIN, now=datetime.now(UTC) + timedelta(minutes=5))
    enrolment.enrol(app, ADMIN, "g", "B", [png_bytes(astronaut)], BasisInput("consent"))
    erasure.erase_subject(app, ADMIN, "B")
    rep = build_report(app, ADMIN)
    assert rep.recent_purges[0]["result"]["templates"] == 1
    assert "template_ids" not in rep.recent_purges[0]["result"]
    erased = rep.recent_erasures[0]["result"]
    assert len(erased["receipt"]) == 64 and "subject" not in erased  # the receipt's digest
    html = render_html(rep)
    assert "<table" in html and "seamless" in html and "intact" in html


def test_report_says_when_the_chain_is_broken(app: Airside) -> None:
    from sqlalchemy import update

    from airside.store.tables import AuditRecord

    galleries.create_gallery(app, ADMIN, "g", "seamless")
    with app.session() as s:
        s.execute(update(AuditRecord).where(AuditRecord.seq == 1).values(actor="mallory"))
    rep = build_report(app, ADMIN)
    assert not rep.audit["ok"]
    assert "BROKEN" in render_html(rep)


def test_report_names_who_may_search_each_gallery(app: Airside) -> None:
    from airside.services import principal_admin

    galleries.create_gallery(app, ADMIN, "KE123", "boarding:KE123")
    galleries.create_gallery(app, ADMIN, "seamless", "seamless-travel")
    principal_admin.add_principal(app, ADMIN, "gate-7", "operator", [("KE123", "*")])
    principal_admin.add_principal(app, ADMIN, "cam-1", "camera", [("*", "seamless-travel")])
    principal_admin.add_principal(app, ADMIN, "officer", "enrolment_officer", [("*", "*")])
    principal_admin.add_principal(app, ADMIN, "anna", "reviewer", [("*", "*")])
    principal_admin.add_principal(app, ADMIN, "gone", "operator", [("*", "*")])
    principal_admin.disable_principal(app, ADMIN, "gone")
    by_name = {g.name: g.searchable_by for g in build_report(app, ADMIN).galleries}
    admins = [p for p in by_name["KE123"] if p.endswith("(admin)")]
    assert len(admins) == 2  # the first-run administrator and ADMIN
    assert set(by_name["KE123"]) == {*admins, "gate-7 (operator)", "officer (enrolment_officer)"}
    assert set(by_name["seamless"]) == {*admins, "cam-1 (camera)", "officer (enrolment_officer)"}
