"""Subject references: a short printable name for a person, never a path.

Each hostile reference below was once stored verbatim. Now every way a reference comes in
(enrolment, a CSV batch row, a verification against an enrolled subject) refuses it with
``bad_reference`` and a message that names the offending character by its code point,
and nothing is stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from tests.conftest import jpeg_bytes, png_bytes
from typer.testing import CliRunner

from airside.errors import AirsideError
from airside.governance.consent import BasisInput
from airside.governance.identifiers import BadReference, validate_reference
from airside.governance.principals import Principal
from airside.services import enrolment, galleries, matching, principal_admin
from airside.services.app import Airside
from airside.store.tables import Subject
from airside.vision.analyzer import FaceAnalyzer

CONSENT = BasisInput("consent")

HOSTILE = {
    "slash": "../../etc/passwd",
    "backslash": "PNR\\4F7K2",
    "dot": ".",
    "dot-dot": "..",
    "newline": "PNR-1\nforged audit line",
    "carriage-return": "PNR-1\rPNR-2",
    "tab": "PNR\t1",
    "nul": "PNR-1\x00",
    "escape": "PNR-\x1b[31m1",
    "rtl-override": "PNR-1\u202egpj.exe",
    "ltr-embedding": "\u202aPNR-1",
    "pop-directional": "PNR-1\u202c",
    "ltr-isolate": "PNR\u2066-1",
    "pop-isolate": "PNR-1\u2069",
    "zero-width-space": "PNR\u200b-1",
    "zero-width-joiner": "PNR\u200d-1",
    "byte-order-mark": "\ufeffPNR-1",
    "no-break-space": "PNR\u00a01",
    "line-separator": "PNR\u20281",
    "too-long": "P" * 201,
    "empty": "",
    "blank": "   ",
}


@pytest.mark.parametrize("reference", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_reference_is_refused(reference: str) -> None:
    with pytest.raises(BadReference) as e:
        validate_reference(reference)
    assert e.value.code == "bad_reference" and isinstance(e.value, AirsideError)
    # The message never carries the character it refuses (it could rewrite the terminal).
    assert not any(not c.isprintable() for c in str(e.value))


@pytest.mark.parametrize(
    "reference", ["PNR-4F7K2", "P" * 200, "Müller, Zoë", "李小龍", "passport 123 456", "a.b"]
)
def test_an_ordinary_reference_is_kept_as_it_is(reference: str) -> None:
    assert validate_reference(reference) == reference


def test_surrounding_whitespace_is_dropped() -> None:
    assert validate_reference("  PNR-4F7K2\n") == "PNR-4F7K2"


def test_a_control_character_is_named_by_its_code_point() -> None:
    with pytest.raises(BadReference, match="U\\+202E"):
        validate_reference("PNR-1\u202egpj.exe")


def test_a_path_separator_is_refused_as_a_path() -> None:
    with pytest.raises(BadReference, match="names a person, not a file"):
        validate_reference("boarding/PNR-1")


# --------------------------------------------------------------------------------------------
# every way in


@pytest.fixture
def admin(app: Airside) -> Principal:
    admin = principal_admin.ensure_local_admin(app)
    galleries.create_gallery(app, admin, "boarding", "boarding")
    return admin


def subjects(app: Airside) -> int:
    with app.session() as s:
        return int(s.scalar(select(func.count()).select_from(Subject)) or 0)


@pytest.mark.parametrize("key", ["slash", "newline", "nul", "rtl-override", "zero-width-space"])
def test_enrolment_refuses_a_hostile_reference_and_stores_nothing(
    app: Airside, admin: Principal, astronaut: np.ndarray, key: str
) -> None:
    with pytest.raises(BadReference):
        enrolment.enrol(app, admin, "boarding", HOSTILE[key], [png_bytes(astronaut)], CONSENT)
    assert subjects(app) == 0


def test_a_batch_refuses_the_rows_with_hostile_references(
    app: Airside, admin: Principal, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    rows = [
        enrolment.EnrolRow("PNR-1", png_bytes(astronaut), CONSENT),
        enrolment.EnrolRow("PNR-2\u202e", png_bytes(hopper), CONSENT),
    ]
    res = enrolment.enrol_batch(app, admin, "boarding", rows, skip_refused=True)
    assert [r.subject for r in res.enrolled] == ["PNR-1"]
    [(row, _, refusal)] = res.refused
    assert row == 2 and "U+202E" in refusal.message
    assert subjects(app) == 1


def test_verification_against_a_hostile_reference_is_refused(
    app: Airside, admin: Principal, astronaut: np.ndarray
) -> None:
    with pytest.raises(BadReference):
        matching.verify_subject(app, admin, "boarding", "../PNR-1", jpeg_bytes(astronaut, 70))


def test_the_cli_refuses_csv_rows_with_hostile_references(
    tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airside.cli.main import app as cli

    monkeypatch.setattr("airside.vision.factory.default_analyzer", lambda _s: analyzer)
    monkeypatch.delenv("AIRSIDE_API_KEY", raising=False)
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes(astronaut))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text('subject,image\n"PNR-1\nforged",photo.png\n', encoding="utf-8")
    base = ["--data-dir", str(tmp_path / "data")]
    run = CliRunner().invoke
    assert run(cli, [*base, "gallery", "create", "b", "--purpose", "boarding"]).exit_code == 0

    res = run(cli, [*base, "enrol", "--gallery", "b", "--csv", str(manifest), "--basis",
                    "consent", "--json"])  # fmt: skip

    assert res.exit_code == 1
    [refused] = json.loads(res.stdout)["refused"]
    assert "U+000A" in refused["message"]
    listed = run(cli, [*base, "subjects", "--json"])
    assert json.loads(listed.stdout) == []
