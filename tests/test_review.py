"""A watchlist hit is actionable only after two different reviewers confirm it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import select, update
from tests.conftest import jpeg_bytes, png_bytes, register

from airside.errors import AccessDenied, AirsideError, ConflictError
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries, matching, review
from airside.services.app import Airside
from airside.store.tables import AuditRecord, ReviewCase

OFFICER = Principal("officer", "admin")
OPERATOR = Principal("operator-1", "operator")
ANNA = Principal("anna", "reviewer")
BEN = Principal("ben", "reviewer")


@pytest.fixture(autouse=True)
def _principals(app: Airside) -> None:
    register(app, OFFICER, OPERATOR, ANNA, BEN, Principal("cleo", "reviewer"))


@pytest.fixture
def hit(app: Airside, astronaut: np.ndarray) -> int:
    galleries.create_gallery(app, OFFICER, "wl", "watchlist:court-order-17")
    enrolment.enrol(
        app, OFFICER, "wl", "W-1", [png_bytes(astronaut)], BasisInput("legal_obligation", "CO-17")
    )
    res = matching.identify(app, OPERATOR, "wl", jpeg_bytes(astronaut, 60))
    assert res.match and res.review_case is not None
    assert not res.actionable
    return res.review_case


def test_a_watchlist_hit_opens_a_case_that_is_not_actionable(app: Airside, hit: int) -> None:
    case = review.get_case(app, ANNA, hit)
    assert case.status == "open" and not case.actionable
    assert case.gallery == "wl" and case.purpose == "watchlist:court-order-17"
    assert case.opened_by == "operator-1" and len(case.probe_digest) == 64


def test_one_confirmation_is_not_enough(app: Airside, hit: int) -> None:
    assert not review.vote(app, ANNA, hit, "confirm").actionable


def test_two_different_reviewers_make_it_actionable(app: Airside, hit: int) -> None:
    review.vote(app, ANNA, hit, "confirm")
    case = review.vote(app, BEN, hit, "confirm")
    assert case.status == "confirmed" and case.actionable and case.closed_at
    assert [v["reviewer"] for v in case.votes] == ["anna", "ben"]


def test_the_same_reviewer_cannot_confirm_twice(app: Airside, hit: int) -> None:
    review.vote(app, ANNA, hit, "confirm")
    with pytest.raises(AirsideError, match="second, different reviewer"):
        review.vote(app, ANNA, hit, "confirm")
    assert not review.get_case(app, BEN, hit).actionable


def test_an_operator_may_not_review(app: Airside, hit: int) -> None:
    with pytest.raises(AccessDenied, match=r"may not review\.vote"):
        review.vote(app, OPERATOR, hit, "confirm")


def test_the_searcher_cannot_review_their_own_hit(
    app: Airside, hit: int, astronaut: np.ndarray
) -> None:
    own = matching.identify(app, OFFICER, "wl", jpeg_bytes(astronaut, 70)).review_case
    assert own is not None
    with pytest.raises(AirsideError, match="cannot review"):
        review.vote(app, OFFICER, own, "confirm")


def test_a_reviewer_outside_the_gallery_scope_may_not_review(app: Airside, hit: int) -> None:
    register(app, Principal("dan", "reviewer"), scopes=("boarding:*",))
    with pytest.raises(AccessDenied, match="no scope") as e:
        review.vote(app, Principal("dan", "reviewer"), hit, "confirm")
    assert e.value.code == "out_of_scope"
    assert review.list_cases(app, Principal("dan", "reviewer")) == []


def test_a_rejection_closes_the_case(app: Airside, hit: int) -> None:
    review.vote(app, ANNA, hit, "confirm")
    case = review.vote(app, BEN, hit, "reject", note="different person")
    assert case.status == "rejected" and not case.actionable
    with pytest.raises(ConflictError):
        review.vote(app, Principal("cleo", "reviewer"), hit, "confirm")


def test_an_unsettled_case_expires_and_is_recorded(app: Airside, hit: int) -> None:
    with app.session() as s:
        s.execute(update(ReviewCase).values(deadline=datetime.now(UTC) - timedelta(seconds=1)))
    with pytest.raises(AirsideError, match="expired"):
        review.vote(app, ANNA, hit, "confirm")
    assert review.get_case(app, ANNA, hit).status == "expired"
    with app.session() as s:
        actions = s.scalars(select(AuditRecord.action)).all()
    assert "review.expire" in actions


def test_every_vote_and_refusal_is_audited(app: Airside, hit: int) -> None:
    review.vote(app, ANNA, hit, "confirm")
    with pytest.raises(AirsideError):
        review.vote(app, ANNA, hit, "confirm")
    with app.session() as s:
        recs = s.scalars(select(AuditRecord).where(AuditRecord.action.like("review.%"))).all()
    decisions = [(r.action, r.actor, r.decision) for r in recs]
    assert ("review.open", "operator-1", "open") in decisions
    assert ("review.confirm", "anna", "open") in decisions
    assert ("review.confirm", "anna", "refused:same_reviewer") in decisions


def test_other_galleries_need_no_review(app: Airside, astronaut: np.ndarray) -> None:
    galleries.create_gallery(app, OFFICER, "b", "boarding:KE1")
    enrolment.enrol(app, OFFICER, "b", "P", [png_bytes(astronaut)], BasisInput("consent"))
    res = matching.identify(app, OPERATOR, "b", jpeg_bytes(astronaut, 60))
    assert res.match and res.actionable and res.review_case is None


def test_cli_review_flow(
    tmp_path: object, analyzer: object, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from airside.cli.main import app as cli

    monkeypatch.setattr("airside.vision.factory.default_analyzer", lambda _s: analyzer)
    folder = Path(str(tmp_path))
    (folder / "a.png").write_bytes(png_bytes(astronaut))
    (folder / "b.jpg").write_bytes(jpeg_bytes(astronaut, 60))
    base = ["--data-dir", str(folder / "d")]
    run = CliRunner().invoke
    assert run(cli, [*base, "gallery", "create", "wl", "--purpose", "watchlist"]).exit_code == 0
    enrol = [*base, "enrol", "--gallery", "wl", "--subject", "W", "--basis", "legal_obligation"]
    assert run(cli, [*enrol, "--basis-ref", "CO-17", str(folder / "a.png")]).exit_code == 0
    res = json.loads(run(cli, [*base, "identify", "--gallery", "wl", str(folder / "b.jpg"),
                               "--json"]).stdout)  # fmt: skip
    assert res["match"] and not res["actionable"]
    case = str(res["review_case"])
    keys = {}
    for name in ("anna", "ben"):
        made = run(cli, [*base, "principal", "add", name, "--role", "reviewer", "--scope", "wl"])
        assert made.exit_code == 0, made.output
        issued = json.loads(run(cli, [*base, "apikey", "issue", name, "--json"]).stdout)
        keys[name] = issued["key"]
    as_anna, as_ben = {"AIRSIDE_API_KEY": keys["anna"]}, {"AIRSIDE_API_KEY": keys["ben"]}
    first = run(cli, [*base, "review", "confirm", case, "--json"], env=as_anna)
    assert json.loads(first.stdout)["actionable"] is False
    again = run(cli, [*base, "review", "confirm", case], env=as_anna)
    assert again.exit_code != 0
    second = run(cli, [*base, "review", "confirm", case, "--json"], env=as_ben)
    assert json.loads(second.stdout)["actionable"] is True
