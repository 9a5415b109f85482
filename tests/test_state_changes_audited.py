"""Every CLI command that changes state is a service use-case: done by an entitled principal it
leaves its audit record; asked by one without the role it is refused, and the refusal is
audited too. The walk covers the command tree: a new state-changing command that is not
listed here fails ``test_every_command_is_classified``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from tests.conftest import CliOnDir, jpeg_bytes, png_bytes
from tests.tiny_onnx import linear_embedder

from airside.config import Settings
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries, matching, principal_admin
from airside.services.app import Airside
from airside.store.tables import AuditRecord
from airside.vision.analyzer import FaceAnalyzer

OPERATOR = Principal("op-1", "operator")


@dataclass
class World:
    """A data directory with a boarding gallery (one subject), a watchlist hit opened by an
    operator, a camera principal with a key (the caller without the role), and files."""

    cli: CliOnDir
    tmp: Path
    camera_key: str
    case: int
    key_id: str


@pytest.fixture
def world(
    cli_on_dir: CliOnDir, tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray,
    hopper: np.ndarray,
) -> Iterator[World]:  # fmt: skip
    app = Airside(Settings(data_dir=cli_on_dir.data_dir), analyzer_factory=lambda _s: analyzer)
    try:
        admin = principal_admin.ensure_local_admin(app)
        galleries.create_gallery(app, admin, "boarding", "boarding")
        enrolment.enrol(app, admin, "boarding", "S-1", [png_bytes(hopper)],
                        BasisInput("consent"))  # fmt: skip
        galleries.create_gallery(app, admin, "wl", "watchlist:order-1")
        enrolment.enrol(app, admin, "wl", "W-1", [png_bytes(astronaut)],
                        BasisInput("legal_obligation", "order 1"))  # fmt: skip
        principal_admin.add_principal(app, admin, OPERATOR.name, "operator", [("*", "*")])
        res = matching.identify(app, OPERATOR, "wl", jpeg_bytes(astronaut, 60))
        assert res.review_case is not None
        principal_admin.add_principal(app, admin, "cam-1", "camera", [("*", "*")])
        principal_admin.add_principal(app, admin, "spare", "operator", [])
        camera = principal_admin.issue_key(app, admin, "cam-1")
        spare = principal_admin.issue_key(app, admin, "spare")
    finally:
        app.close()
    # Three "people" of two photos each: 3 genuine and 12 impostor pairs, enough to fit.
    faces = (astronaut, astronaut[:, ::-1], hopper, hopper[:, ::-1], astronaut[40:, 30:],
             astronaut[40:, 30:][:, ::-1])  # fmt: skip
    for i, img in enumerate(faces):
        (tmp_path / f"id{i}.png").write_bytes(png_bytes(np.ascontiguousarray(img)))
    (tmp_path / "ids.csv").write_text(
        "image,identity\n" + "".join(f"id{i}.png,person{i // 2}\n" for i in range(6))
    )
    (tmp_path / "batch.csv").write_text(f"subject,image,basis\nS-9,{cli_on_dir.photo},consent\n")
    linear_embedder(tmp_path / "tiny.onnx")
    yield World(cli_on_dir, tmp_path, camera.secret, res.review_case, spare.key_id)


# command -> (its arguments in the world, the audit action it records)
STATE_CHANGING: dict[str, tuple[Callable[[World], list[str]], str]] = {
    "gallery create": (lambda w: ["gallery", "create", "g2", "--purpose", "p2"], "gallery.create"),
    "enrol": (
        lambda w: [
            "enrol",
            "--gallery",
            "boarding",
            "--subject",
            "S-2",
            "--basis",
            "consent",
            str(w.cli.photo),
        ],
        "enrol",
    ),
    "enrol --csv": (
        lambda w: ["enrol", "--gallery", "boarding", "--csv", str(w.tmp / "batch.csv")],
        "enrol.batch",  # refused as a batch; done, each subject's enrolment is audited
    ),
    "consent withdraw": (
        lambda w: ["consent", "withdraw", "S-1", "--purpose", "boarding"],
        "consent.withdraw",
    ),
    "subject erase": (lambda w: ["subject", "erase", "S-1"], "subject.erase"),
    "purge": (lambda w: ["purge"], "purge"),
    "principal add": (lambda w: ["principal", "add", "p2", "--role", "operator"], "principal.add"),
    "principal grant": (lambda w: ["principal", "grant", "spare", "boarding"], "principal.grant"),
    "principal revoke": (
        lambda w: ["principal", "revoke", "op-1", "*", "--purpose", "*"],
        "principal.revoke",
    ),
    "principal disable": (lambda w: ["principal", "disable", "spare"], "principal.disable"),
    "apikey issue": (lambda w: ["apikey", "issue", "spare"], "apikey.issue"),
    "apikey revoke": (lambda w: ["apikey", "revoke", w.key_id], "apikey.revoke"),
    "audit checkpoint": (lambda w: ["audit", "checkpoint"], "audit.checkpoint"),
    "keys rotate": (lambda w: ["keys", "rotate"], "keys.rotate"),
    "keys export": (lambda w: ["keys", "export", "--to", str(w.tmp / "keyset")], "keys.export"),
    "gallery rekey": (lambda w: ["gallery", "rekey", "boarding"], "gallery.rekey"),
    "backup": (lambda w: ["backup", str(w.tmp / "backup")], "store.backup"),
    "store migrate": (
        lambda w: ["store", "migrate", "--to", f"sqlite:///{w.tmp / 'moved.db'}"],
        "store.migrate",
    ),
    "review confirm": (lambda w: ["review", "confirm", str(w.case)], "review.confirm"),
    "review reject": (lambda w: ["review", "reject", str(w.case)], "review.reject"),
    "eval verify --calibrate": (
        lambda w: [
            "eval",
            "verify",
            "--identities",
            str(w.tmp / "ids.csv"),
            "--calibrate",
            "--workers",
            "1",
        ],
        "calibration.fit",
    ),
    "models add": (
        lambda w: [
            "models",
            "add",
            str(w.tmp / "tiny.onnx"),
            "--family",
            "arcface",
            "--licence",
            "MIT",
        ],
        "model.add",
    ),
}
# Use-cases whose success is audited under another action than their refusal.
DONE_AS = {"enrol.batch": "enrol"}
# State-changing commands whose effect needs more than this world (another calibrated
# model, a video): refused here for a caller without the role; their audited effect is
# tested in the file named.
REFUSED_ONLY: dict[str, tuple[Callable[[World], list[str]], str, str]] = {
    "calibrate --gallery": (lambda w: ["calibrate", "--gallery", "boarding"], "calibration.build",
                            "tests/test_fair_calibration.py (needs 100 people)"),
    "calibrate --remove": (lambda w: ["calibrate", "--remove"], "calibration.remove",
                           "tests/test_fair_calibration.py (needs one installed)"),
    "calibrate --gallery --table": (
        lambda w: ["calibrate", "--gallery", "boarding", "--table"], "calibration.fit_gallery",
        "tests/test_gallery_calibration.py (needs 20 people or more)",
    ),
    "calibrate --gallery --table --remove": (
        lambda w: ["calibrate", "--gallery", "boarding", "--table", "--remove"],
        "calibration.remove_gallery", "tests/test_gallery_calibration.py (needs one fitted)",
    ),
    "calibrate --gallery --own": (
        lambda w: ["calibrate", "--gallery", "boarding", "--own"], "calibration.build",
        "tests/test_gallery_fair_calibration.py (needs 100 people)",
    ),
    "calibrate --gallery --own --remove": (
        lambda w: ["calibrate", "--gallery", "boarding", "--own", "--remove"],
        "calibration.remove", "tests/test_gallery_fair_calibration.py (needs one fitted)",
    ),
    "gallery migrate": (
        lambda w: ["gallery", "migrate", "boarding", "--to", "tiny"], "gallery.migrate",
        "tests/test_migration.py",
    ),
    "models remove": (lambda w: ["models", "remove", "tiny"], "model.remove",
                      "tests/test_models_cli.py"),
    "restore": (lambda w: ["restore", str(w.tmp / "backup")], "store.restore",
                "tests/test_backup.py (needs a backup, and replaces the store)"),
}  # fmt: skip
# Commands that change nothing (reads, reports, evaluations, offline checks) or whose
# every effect is another command's use-case (watch records events as its camera; worker
# has the server search and record as its camera: tests/test_camera_workers.py).
# (keys init writes a new key set outside any installation and opens no store.)
NOT_STATE_CHANGING = {
    "keys init",
    "audit export", "audit verify", "demo", "eval fairness", "eval identify", "eval in-domain",
    "eval track",
    "events crop", "events list", "galleries", "identify", "models bench", "models list",
    "models verify", "principal list", "principal roles", "receipt verify",
    "report governance", "review list", "subjects", "verify", "watch", "serve", "worker",
}  # fmt: skip


def records(data_dir: Path, action: str) -> list[tuple[str, str]]:
    """(actor, decision) of the audit records of ``action``, oldest first."""
    app = Airside(Settings(data_dir=data_dir))
    try:
        with app.session(readonly=True) as s:
            rows = s.scalars(
                select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.seq)
            )
            return [(r.actor, r.decision) for r in rows]
    finally:
        app.close()


def test_every_command_is_classified() -> None:
    from typer.main import get_command

    from airside.cli.main import app

    def walk(cmd: object, prefix: tuple[str, ...]) -> Iterator[str]:
        subs = getattr(cmd, "commands", None)
        if not subs:
            yield " ".join(prefix)
            return
        for name, sub in subs.items():
            yield from walk(sub, (*prefix, name))

    listed = [*STATE_CHANGING, *REFUSED_ONLY]
    known = {c.split(" --")[0] for c in listed} | NOT_STATE_CHANGING
    assert set(walk(get_command(app), ())) - known == set()


@pytest.mark.parametrize("command", sorted(STATE_CHANGING))
def test_a_state_changing_command_is_audited_and_refused_without_the_role(
    world: World, command: str
) -> None:
    args, action = STATE_CHANGING[command]
    cli = world.cli
    before = records(cli.data_dir, action)

    refused = cli(*args(world), "--json", env={"AIRSIDE_API_KEY": world.camera_key})

    assert refused.exit_code != 0, refused.output
    assert refused.stdout and json.loads(refused.stdout)["error"] == "forbidden", refused.output
    after_refusal = records(cli.data_dir, action)
    assert after_refusal[len(before) :] == [("cam-1", "refused:forbidden")]

    done_as = DONE_AS.get(action, action)
    before_done = records(cli.data_dir, done_as)

    done = cli(*args(world))

    assert done.exit_code == 0, done.output
    new = records(cli.data_dir, done_as)[len(before_done) :]
    assert new and all(not d.startswith("refused") for _, d in new), new
    assert {actor for actor, _ in new} == {principal_admin.local_user_name()}


@pytest.mark.parametrize("command", sorted(REFUSED_ONLY))
def test_a_command_tested_elsewhere_is_refused_without_the_role(world: World, command: str) -> None:
    args, action, _where = REFUSED_ONLY[command]
    refused = world.cli(*args(world), "--json", env={"AIRSIDE_API_KEY": world.camera_key})
    assert refused.exit_code != 0
    assert records(world.cli.data_dir, action)[-1:] == [("cam-1", "refused:forbidden")]
