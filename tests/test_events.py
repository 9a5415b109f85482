"""Events: recorded with their audit record, crops kept only while retention allows and
sealed at rest, purged on time, erased with the subject, listed within scopes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from tests.conftest import CliOnDir, jpeg_bytes, png_bytes, store_bytes

from airside.config import Settings
from airside.errors import AccessDenied, ConflictError, NotFoundError
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, erasure, events, galleries, matching, principal_admin
from airside.services.app import Airside
from airside.services.retention import purge
from airside.store.tables import AuditRecord, Event
from airside.vision.analyzer import FaceAnalyzer

CONSENT = BasisInput("consent")


@pytest.fixture
def admin(app: Airside) -> Principal:
    return principal_admin.ensure_local_admin(app)


@pytest.fixture
def crop(astronaut: np.ndarray) -> bytes:
    return jpeg_bytes(np.ascontiguousarray(astronaut[20:220, 140:330]), 90)


@pytest.fixture
def cam(app: Airside, admin: Principal, astronaut: np.ndarray) -> Principal:
    """Gallery ``g`` (seamless-travel) with PNR-1 enrolled, and a camera scoped to it."""
    galleries.create_gallery(app, admin, "g", "seamless-travel")
    enrolment.enrol(app, admin, "g", "PNR-1", [png_bytes(astronaut)], CONSENT)
    return principal_admin.add_principal(app, admin, "cam-1", "camera", [("g", "*")])


def record(
    app: Airside, who: Principal, crop: bytes | None, gallery: str = "g", **kw: object
) -> int:
    args: dict[str, object] = {
        "camera": "gate-12",
        "track": 7,
        "subject": "PNR-1",
        "gallery": gallery,
        "score": 0.83,
        "first_seen": 10.0,
        "last_seen": 12.5,
        "crop_jpeg": crop,
        **kw,
    }
    return events.record_identity_event(app, who, **args)  # type: ignore[arg-type]


def rows(app: Airside) -> list[Event]:
    with app.session() as s:
        return list(s.scalars(select(Event).order_by(Event.id)))


def audit_of(app: Airside, action: str) -> list[AuditRecord]:
    with app.session() as s:
        return list(
            s.scalars(
                select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.seq)
            )
        )


def file_bytes(app: Airside) -> bytes:
    app.db.compact_wal()
    files = b"".join(p.read_bytes() for p in app.settings.data_dir.rglob("*") if p.is_file())
    return files + store_bytes(app)


def body(jpeg: bytes) -> bytes:
    """A stretch of the JPEG's entropy-coded data (headers are alike between JPEGs)."""
    return jpeg[len(jpeg) // 2 : len(jpeg) // 2 + 96]


@pytest.fixture
def plain_app(tmp_path: Path, analyzer: FaceAnalyzer) -> Iterator[Airside]:
    """An installation without template protection (no key): crops are stored as they are."""
    a = Airside(
        Settings(data_dir=tmp_path / "plain", template_protection="auto"),
        analyzer_factory=lambda _s: analyzer,
    )
    yield a
    a.close()


# --------------------------------------------------------------------------------------------
# recording


def test_an_identity_event_is_recorded_and_audited(
    app: Airside, cam: Principal, crop: bytes
) -> None:
    eid = record(app, cam, crop, detail={"votes": 3})
    (ev,) = rows(app)
    assert (ev.id, ev.type, ev.severity, ev.camera, ev.track) == (
        eid,
        "identity",
        "info",
        "gate-12",
        7,
    )
    assert (ev.subject_ref, ev.gallery, ev.purpose, ev.score) == (
        "PNR-1",
        "g",
        "seamless-travel",
        0.83,
    )
    assert (ev.first_seen, ev.last_seen, json.loads(ev.detail or "")) == (10.0, 12.5, {"votes": 3})
    (rec,) = audit_of(app, "event.record")
    result = json.loads(rec.result)
    assert (rec.actor, rec.gallery, rec.purpose, rec.decision) == (
        "cam-1",
        "g",
        "seamless-travel",
        "recorded",
    )
    assert result["event"] == eid and result["subject"].startswith("ps_")  # a pseudonym
    assert result["track"] == 7 and result["camera"] == "gate-12" and result["crop"] is True


def test_the_crop_is_sealed_at_rest_and_opens_again(
    app: Airside, admin: Principal, cam: Principal, crop: bytes
) -> None:
    eid = record(app, cam, crop)
    (ev,) = rows(app)
    assert ev.evidence_key_id is not None and ev.evidence != crop
    assert body(crop) not in file_bytes(app)
    assert events.event_crop(app, admin, eid) == crop
    (shown,) = audit_of(app, "event.crop")
    assert shown.decision == "shown" and json.loads(shown.result)["event"] == eid


def test_a_sealed_crop_moved_to_another_event_does_not_open(
    app: Airside, admin: Principal, cam: Principal, crop: bytes
) -> None:
    from airside.governance.template_keys import TemplateKeyError

    first, second = record(app, cam, crop), record(app, cam, crop, track=8)
    with app.session() as s:
        a, b = s.get(Event, first), s.get(Event, second)
        assert a is not None and b is not None
        b.evidence = a.evidence
    with pytest.raises(TemplateKeyError):
        events.event_crop(app, admin, second)


def test_key_rotation_reseals_the_crops(
    app: Airside, admin: Principal, cam: Principal, crop: bytes
) -> None:
    from airside.services.template_keys import rotate_keys

    eid = record(app, cam, crop)
    before = rows(app)[0].evidence_key_id
    rep = rotate_keys(app, admin, retire_old=True)
    assert rep.event_crops == 1 and rep.retired == [before]
    assert rows(app)[0].evidence_key_id == rep.key_id
    assert events.event_crop(app, admin, eid) == crop


def test_a_camera_without_scope_on_the_gallery_is_refused_and_audited(
    app: Airside, admin: Principal, cam: Principal, crop: bytes
) -> None:
    other = principal_admin.add_principal(app, admin, "cam-2", "camera", [("elsewhere:*", "*")])
    with pytest.raises(AccessDenied) as e:
        record(app, other, crop)
    assert e.value.code == "out_of_scope"
    assert rows(app) == []
    (refused,) = audit_of(app, "event.record")
    assert refused.decision == "refused:out_of_scope" and refused.actor == "cam-2"


def test_an_event_about_an_erased_subject_is_refused(
    app: Airside, admin: Principal, cam: Principal, crop: bytes
) -> None:
    erasure.erase_subject(app, admin, "PNR-1")
    with pytest.raises(NotFoundError):
        record(app, cam, crop)
    assert rows(app) == []


def test_a_watchlist_hit_names_its_review_case(
    app: Airside, admin: Principal, astronaut: np.ndarray, crop: bytes
) -> None:
    galleries.create_gallery(app, admin, "wl", "watchlist:court-order-17")
    enrolment.enrol(
        app,
        admin,
        "wl",
        "W-1",
        [png_bytes(astronaut)],
        BasisInput("public_task", reference="order 17"),
    )
    cam = principal_admin.add_principal(app, admin, "cam-9", "camera", [("wl", "*")])
    hit = matching.identify(app, cam, "wl", jpeg_bytes(astronaut, 70))
    assert hit.review_case is not None
    eid = record(app, cam, crop, gallery="wl", subject="W-1", review_case=hit.review_case)
    ev = rows(app)[0]
    assert (ev.id, ev.type, ev.severity, ev.review_case) == (
        eid,
        "watchlist_hit",
        "warning",
        hit.review_case,
    )
    with pytest.raises(ConflictError):  # a case that is not this subject's hit in this gallery
        record(app, cam, crop, gallery="wl", subject="W-1", review_case=hit.review_case + 1)


def test_last_seen_only_moves_forward_and_is_not_audited(
    app: Airside, cam: Principal, crop: bytes
) -> None:
    eid = record(app, cam, crop)
    events.update_event_seen(app, cam, eid, 30.0)
    events.update_event_seen(app, cam, eid, 20.0)
    assert rows(app)[0].last_seen == 30.0
    assert len(audit_of(app, "event.record")) == 1


def test_a_system_event_is_stored_without_personal_data_or_audit(
    app: Airside, cam: Principal
) -> None:
    eid = events.record_system_event(
        app, cam, camera="gate-12", type_="stream_lost", at=42.0, detail="no packets for 5 s"
    )
    (ev,) = rows(app)
    assert (ev.id, ev.type, ev.severity, ev.subject_id, ev.evidence) == (
        eid,
        "system",
        "warning",
        None,
        None,
    )
    assert json.loads(ev.detail or "") == {"kind": "stream_lost", "message": "no packets for 5 s"}
    assert audit_of(app, "event.record") == []


def test_a_bad_crop_is_refused(app: Airside, cam: Principal, astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError, match="JPEG"):
        record(app, cam, png_bytes(astronaut))
    assert rows(app) == []


# --------------------------------------------------------------------------------------------
# retention


def test_a_crop_is_kept_no_longer_than_the_gallery_keeps_templates(
    app: Airside, admin: Principal, astronaut: np.ndarray, crop: bytes
) -> None:
    galleries.create_gallery(app, admin, "short", "seamless-travel", retain_seconds=3600)
    enrolment.enrol(app, admin, "short", "PNR-1", [png_bytes(astronaut)], CONSENT)
    eid = record(app, admin, crop, gallery="short")
    until = rows(app)[0].evidence_until
    assert until is not None
    assert until.replace(tzinfo=UTC) <= datetime.now(UTC) + timedelta(hours=1)
    rep = purge(app, admin, now=datetime.now(UTC) + timedelta(hours=2))
    assert rep.event_crops == 1 and rep.events == 0
    (ev,) = rows(app)
    assert ev.evidence is None and ev.evidence_until is None
    assert events.event_crop(app, admin, eid) is None


def test_no_crop_is_kept_when_crops_are_turned_off(
    app: Airside, admin: Principal, cam: Principal, crop: bytes
) -> None:
    app.settings.keep_event_crops = False
    eid = record(app, cam, crop)
    assert rows(app)[0].evidence is None
    assert events.event_crop(app, admin, eid) is None
    assert json.loads(audit_of(app, "event.record")[0].result)["crop"] is False


def test_purge_removes_old_crops_then_old_events_and_audits_it(
    app: Airside, admin: Principal, cam: Principal, crop: bytes
) -> None:
    record(app, cam, crop)
    now = datetime.now(UTC)
    dry = purge(app, admin, now=now + timedelta(days=31), dry_run=True)
    assert (dry.events, dry.event_crops) == (0, 1) and rows(app)[0].evidence is not None
    rep = purge(app, admin, now=now + timedelta(days=31))  # crops: 30 days
    assert (rep.events, rep.event_crops) == (0, 1)
    assert rows(app)[0].evidence is None
    rep = purge(app, admin, now=now + timedelta(days=91))  # events: 90 days
    assert (rep.events, rep.event_crops) == (1, 0) and rows(app) == []
    purged = [json.loads(r.result) for r in audit_of(app, "purge") if r.decision == "purged"]
    assert [(p["events"], p["event_crops"]) for p in purged] == [(0, 1), (1, 0)]
    assert purged[0]["event_crops_by_gallery"] == {"g": 1}
    assert rep.as_dict()["events"] == 1


def test_a_purged_crop_leaves_no_bytes_in_the_files(
    plain_app: Airside, astronaut: np.ndarray, crop: bytes
) -> None:
    app = plain_app
    admin = principal_admin.ensure_local_admin(app)
    galleries.create_gallery(app, admin, "g", "seamless-travel")
    enrolment.enrol(app, admin, "g", "PNR-1", [png_bytes(astronaut)], CONSENT)
    record(app, admin, crop)
    assert body(crop) in file_bytes(app)  # no protection: the crop is stored as it is
    purge(app, admin, now=datetime.now(UTC) + timedelta(days=31))
    assert body(crop) not in file_bytes(app)


# --------------------------------------------------------------------------------------------
# erasure and withdrawal


def test_erasure_removes_the_events_and_leaves_no_crop_in_the_files(
    plain_app: Airside, astronaut: np.ndarray, hopper: np.ndarray, crop: bytes
) -> None:
    app = plain_app
    admin = principal_admin.ensure_local_admin(app)
    galleries.create_gallery(app, admin, "g", "seamless-travel")
    enrolment.enrol(app, admin, "g", "PNR-1", [png_bytes(astronaut)], CONSENT)
    enrolment.enrol(app, admin, "g", "PNR-2", [png_bytes(hopper)], CONSENT)
    record(app, admin, crop)
    record(app, admin, crop, track=8)
    record(app, admin, None, subject="PNR-2", track=9)
    assert body(crop) in file_bytes(app)
    receipt = erasure.erase_subject(app, admin, "PNR-1")
    assert receipt.events == 2 and receipt.as_dict()["events"] == 2
    assert [e.subject_ref for e in rows(app)] == ["PNR-2"]
    assert body(crop) not in file_bytes(app)


def test_erasure_removes_sealed_crops_too(
    app: Airside, admin: Principal, cam: Principal, crop: bytes
) -> None:
    record(app, cam, crop)
    sealed = rows(app)[0].evidence
    assert sealed is not None and body(sealed) in file_bytes(app)
    erasure.erase_subject(app, admin, "PNR-1")
    assert rows(app) == []
    assert body(sealed) not in file_bytes(app)


def test_withdrawal_removes_the_events_of_that_purpose_only(
    app: Airside, admin: Principal, cam: Principal, astronaut: np.ndarray, crop: bytes
) -> None:
    galleries.create_gallery(app, admin, "KE123", "boarding:KE123")
    enrolment.enrol(app, admin, "KE123", "PNR-1", [png_bytes(astronaut)], CONSENT)
    record(app, admin, crop, gallery="KE123")
    record(app, admin, crop, gallery="g")
    receipt = erasure.withdraw_basis(app, admin, "PNR-1", "boarding:KE123")
    assert receipt.events == 1
    assert [e.gallery for e in rows(app)] == ["g"]


# --------------------------------------------------------------------------------------------
# reading


def test_listing_is_scoped_and_audited(
    app: Airside, admin: Principal, cam: Principal, astronaut: np.ndarray, crop: bytes
) -> None:
    galleries.create_gallery(app, admin, "KE123", "boarding:KE123")
    enrolment.enrol(app, admin, "KE123", "PNR-1", [png_bytes(astronaut)], CONSENT)
    in_g = record(app, cam, crop)
    in_ke = record(app, admin, crop, gallery="KE123", camera="gate-3")
    sys_ev = events.record_system_event(
        app, cam, camera="gate-12", type_="stream_lost", at=1.0, detail=""
    )
    agent = principal_admin.add_principal(app, admin, "agent", "operator", [("g", "*")])
    assert {e.id for e in events.list_events(app, agent)} == {in_g, sys_ev}
    assert {e.id for e in events.list_events(app, admin)} == {in_g, in_ke, sys_ev}
    assert [e.id for e in events.list_events(app, admin, camera="gate-3")] == [in_ke]
    assert [e.id for e in events.list_events(app, admin, subject="PNR-1", limit=1)] == [in_ke]
    future = datetime.now(UTC) + timedelta(minutes=5)
    assert events.list_events(app, admin, since=future) == []
    with pytest.raises(AccessDenied):
        events.list_events(app, agent, gallery="KE123")
    with pytest.raises(AccessDenied):
        events.event_crop(app, agent, in_ke)
    with pytest.raises(AccessDenied):  # a camera records, it does not read
        events.list_events(app, cam)
    view = events.list_events(app, agent, camera="gate-12", subject="PNR-1")[0]
    assert view.crop and view.subject == "PNR-1" and json.loads(view.json_line())["id"] == in_g
    listed = [json.loads(r.result) for r in audit_of(app, "event.list") if r.decision == "listed"]
    assert listed[0] == {"n": 2, "camera": None, "subject": None, "type": None, "since": None}


def test_the_governance_report_counts_events(
    app: Airside, admin: Principal, cam: Principal, crop: bytes
) -> None:
    from airside.services.governance_report import build_report, render_html

    record(app, cam, crop)
    record(app, cam, None, track=8)
    rep = build_report(app, admin)
    (g,) = rep.galleries
    assert (g.events, g.event_crops) == (2, 1)
    assert rep.events["retention_days"] == 90 and rep.events["crop_retention_days"] == 30
    assert rep.events["total"] == 2 and rep.events["with_crop"] == 1
    assert "Events are kept 90" in render_html(rep)


def test_cli_lists_events_and_writes_a_crop(
    tmp_path: Path, analyzer: FaceAnalyzer, crop: bytes, cli_on_dir: CliOnDir
) -> None:
    run = cli_on_dir
    run.enrol("g", "PNR-1")
    service = Airside(Settings(data_dir=tmp_path / "d"), analyzer_factory=lambda _s: analyzer)
    try:
        eid = record(service, principal_admin.ensure_local_admin(service), crop)
    finally:
        service.close()
    res = run("events", "list", "--since", "1h", "--json")
    assert res.exit_code == 0, res.output
    (listed,) = json.loads(res.stdout)
    assert listed["id"] == eid and listed["subject"] == "PNR-1" and listed["crop"] is True
    lines = run("events", "list", "--jsonl").stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [eid]
    out = tmp_path / "crop.jpg"
    res = run("events", "crop", str(eid), str(out))
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == crop and (out.stat().st_mode & 0o077) == 0
    missing = run("events", "crop", "999", str(tmp_path / "x.jpg"), "--json")
    assert missing.exit_code != 0 and json.loads(missing.stdout)["error"] == "not_found"
