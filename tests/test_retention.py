"""Templates are purged on their gallery's retention, and every purge is audited."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import func, select
from tests.conftest import jpeg_bytes, png_bytes, register

from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries, matching
from airside.services.app import Airside
from airside.services.retention import PurgeScheduler, purge
from airside.store.models import AuditRecord, Template

OPS = Principal("ops", "admin")


@pytest.fixture(autouse=True)
def _principals(app: Airside) -> None:
    register(app, OPS)


def templates(app: Airside) -> int:
    with app.session() as s:
        return int(s.scalar(select(func.count()).select_from(Template)) or 0)


def test_boarding_gallery_is_purged_after_departure_plus_12_hours(
    app: Airside, astronaut: np.ndarray
) -> None:
    departs = datetime.now(UTC) + timedelta(hours=1)
    info = galleries.create_gallery(app, OPS, "KE123", "boarding:KE123", departs=departs)
    assert info.retain_until == (departs + timedelta(hours=12)).isoformat()
    enrolment.enrol(app, OPS, "KE123", "PNR-1", [png_bytes(astronaut)], BasisInput("consent"))
    assert purge(app, OPS, now=departs + timedelta(hours=11)).templates == 0
    assert templates(app) == 1
    rep = purge(app, OPS, now=departs + timedelta(hours=12, seconds=1))
    assert rep.galleries == {"KE123": 1} and templates(app) == 0


def test_purged_templates_are_no_longer_found(app: Airside, astronaut: np.ndarray) -> None:
    galleries.create_gallery(app, OPS, "g", "seamless-travel", retain_seconds=3600)
    enrolment.enrol(app, OPS, "g", "PNR-1", [png_bytes(astronaut)], BasisInput("consent"))
    assert matching.identify(app, OPS, "g", jpeg_bytes(astronaut, 60)).match
    purge(app, OPS, now=datetime.now(UTC) + timedelta(hours=2))
    assert not matching.identify(app, OPS, "g", jpeg_bytes(astronaut, 60)).candidates


def test_only_templates_older_than_the_retention_go(
    app: Airside, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    galleries.create_gallery(app, OPS, "g", "seamless-travel", retain_seconds=3600)
    enrolment.enrol(app, OPS, "g", "A", [png_bytes(astronaut)], BasisInput("consent"))
    with app.session() as s:
        old = s.scalars(select(Template)).one()
        old.created_at = datetime.now(UTC) - timedelta(hours=2)
    enrolment.enrol(app, OPS, "g", "B", [png_bytes(hopper)], BasisInput("consent"))
    assert purge(app, OPS).galleries == {"g": 1}
    assert templates(app) == 1


def test_every_purge_is_audited_with_what_it_deleted(app: Airside, astronaut: np.ndarray) -> None:
    galleries.create_gallery(app, OPS, "g", "seamless-travel", retain_seconds=60)
    enrolment.enrol(app, OPS, "g", "A", [png_bytes(astronaut)], BasisInput("consent"))
    purge(app, OPS, now=datetime.now(UTC) + timedelta(minutes=5))
    with app.session() as s:
        rec = s.scalars(select(AuditRecord).where(AuditRecord.action == "purge")).one()
    assert rec.gallery == "g" and rec.decision == "purged" and '"templates":1' in rec.result


def test_dry_run_deletes_nothing(app: Airside, astronaut: np.ndarray) -> None:
    galleries.create_gallery(app, OPS, "g", "seamless-travel", retain_seconds=60)
    enrolment.enrol(app, OPS, "g", "A", [png_bytes(astronaut)], BasisInput("consent"))
    rep = purge(app, OPS, now=datetime.now(UTC) + timedelta(minutes=5), dry_run=True)
    assert rep.templates == 1 and templates(app) == 1


def test_boarding_galleries_get_a_default_retention(app: Airside) -> None:
    info = galleries.create_gallery(app, OPS, "KE9", "boarding:KE9")
    assert info.retain_seconds == 36 * 3600


def test_past_retention_end_is_refused(app: Airside) -> None:
    with pytest.raises(ValueError, match="already past"):
        galleries.create_gallery(
            app, OPS, "g", "p", retain_until=datetime.now(UTC) - timedelta(minutes=1)
        )


def test_scheduler_purges_in_the_background(app: Airside, astronaut: np.ndarray) -> None:
    galleries.create_gallery(app, OPS, "g", "seamless-travel", retain_seconds=1)
    enrolment.enrol(app, OPS, "g", "A", [png_bytes(astronaut)], BasisInput("consent"))
    sched = PurgeScheduler(app, interval=0.2).start()
    try:
        deadline = time.monotonic() + 15
        while templates(app) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        sched.stop()
    assert templates(app) == 0 and sched.runs >= 1
