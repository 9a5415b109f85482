"""The ``airside`` command line, specified by what an operator or a script sees.

Everything is real: faces from registry packages (scikit-image's astronaut, matplotlib's Grace
Hopper, scikit-image's chelsea the cat: no human face), the real dlib/ONNX analyzer, a real
SQLite store under ``tmp_path``. A few tests run ``python -m airside.cli`` in a subprocess,
end to end; the rest use Typer's CliRunner in-process, where the one real analyzer is loaded
once and shared (model loading is the only thing shared; every data directory is the
test's own).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from tests.conftest import database_env
from typer.testing import CliRunner

from airside.cli.main import app
from airside.vision.analyzer import FaceAnalyzer

# --------------------------------------------------------------------------------------------
# helpers


def run_airside(
    *args: str, data_dir: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m airside.cli`` as a user would, with a clean AIRSIDE_* environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRSIDE_")}
    cmd = [sys.executable, "-m", "airside.cli"]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
        base.update(database_env(data_dir))
    return subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
        check=False,
    )


def ok_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def one_line(text: str) -> str:
    return " ".join(text.split())


class Cli:
    """The CLI run in-process against one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Any:
        return self.runner.invoke(
            app, ["--data-dir", str(self.data_dir), *args], catch_exceptions=False
        )

    def json(self, *args: str) -> Any:
        res = self(*args, "--json")
        assert res.exit_code == 0, res.stderr
        return json.loads(res.stdout)


def _encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def altered(img: Image.Image) -> bytes:
    """Another capture of the same face: resized to 70% and saved as JPEG quality 40."""
    w, h = img.size
    return _encode(img.resize((int(w * 0.7), int(h * 0.7))), "JPEG", quality=40)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module", autouse=True)
def _one_model_load(analyzer: FaceAnalyzer) -> Iterator[None]:
    """In-process runs share the session's real analyzer instead of reloading the models."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("airside.vision.factory.default_analyzer", lambda _settings: analyzer)
        mp.delenv("AIRSIDE_DATA_DIR", raising=False)
        yield


@pytest.fixture(scope="module")
def photos(
    tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray, two_faces: np.ndarray
) -> dict[str, Path]:
    import matplotlib.cbook as cbook
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    astro = Image.fromarray(astronaut)
    blobs = {
        "astronaut": ("astronaut.png", _encode(astro, "PNG")),
        "astronaut_altered": ("astronaut-70pc-q40.jpg", altered(astro)),
        "chelsea": ("chelsea.png", _encode(Image.fromarray(data.chelsea()), "PNG")),
        "two_faces": ("two-faces.png", _encode(Image.fromarray(two_faces), "PNG")),
    }
    out = {}
    for key, (name, blob) in blobs.items():
        out[key] = folder / name
        out[key].write_bytes(blob)
    out["hopper"] = folder / "grace-hopper.jpg"
    shutil.copyfile(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), out["hopper"])
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, Path]) -> dict[str, Any]:
    """A data directory where, by the real CLI in a subprocess, gallery 'boarding' was
    created and the astronaut enrolled with consent. Tests that use it only read it."""
    data_dir = tmp_path_factory.mktemp("world")
    created = ok_json(
        run_airside(
            "gallery",
            "create",
            "boarding",
            "--purpose",
            "seamless-boarding",
            "--json",
            data_dir=data_dir,
        )
    )
    enrolled = ok_json(
        run_airside(
            "enrol",
            "--gallery",
            "boarding",
            "--subject",
            "astronaut",
            "--basis",
            "consent",
            str(photos["astronaut"]),
            "--json",
            data_dir=data_dir,
        )
    )
    return {"dir": data_dir, "created": created, "enrolled": enrolled}


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A fresh data directory with one gallery, 'boarding'."""
    c = Cli(tmp_path / "data")
    c.json("gallery", "create", "boarding", "--purpose", "seamless-boarding")
    return c


@pytest.fixture
def world_cli(world: dict[str, Any]) -> Cli:
    return Cli(world["dir"])


# --------------------------------------------------------------------------------------------
# galleries and enrolment


def test_gallery_create_json_describes_the_new_empty_gallery(world: dict[str, Any]) -> None:
    g = world["created"]
    assert g["name"] == "boarding"
    assert g["purpose"] == "seamless-boarding"
    assert isinstance(g["contract"], str) and g["contract"]
    assert isinstance(g["quality_bar"], float)
    assert isinstance(g["fmr_target"], float) and 0 < g["fmr_target"] < 1
    assert (g["subjects"], g["templates"]) == (0, 0)


def test_enrol_json_reports_the_subject_and_its_template_count(world: dict[str, Any]) -> None:
    e = world["enrolled"]
    assert e["subject"] == "astronaut"
    assert e["gallery"] == "boarding"
    assert isinstance(e["templates"], int) and e["templates"] == 1
    assert (e["added"], e["already_enrolled"]) == (1, 0)


def test_astronaut_counts_as_one_face_despite_the_mission_patch(world: dict[str, Any]) -> None:
    # Enrolment requires exactly one face, so the patch on her suit was not taken for a face.
    assert len(world["enrolled"]["qualities"]) == 1


def test_enrol_without_a_legal_basis_is_refused_and_says_so(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    data_dir = tmp_path / "data"
    assert (
        run_airside("gallery", "create", "g", "--purpose", "p", data_dir=data_dir).returncode == 0
    )

    proc = run_airside(
        "enrol",
        "--gallery",
        "g",
        "--subject",
        "astronaut",
        str(photos["astronaut"]),
        data_dir=data_dir,
    )

    assert proc.returncode != 0
    assert "--basis" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_enrolling_the_same_photo_twice_keeps_one_template(
    cli: Cli, photos: dict[str, Path]
) -> None:
    args = ["enrol", "--gallery", "boarding", "--subject", "astronaut", "--basis", "consent"]
    first = cli.json(*args, str(photos["astronaut"]))
    again = cli.json(*args, str(photos["astronaut"]))

    assert first["templates"] == 1
    assert (again["templates"], again["added"], again["already_enrolled"]) == (1, 0, 1)


def test_galleries_json_lists_each_gallery_with_its_counts(world_cli: Cli) -> None:
    (g,) = world_cli.json("galleries")
    assert g["name"] == "boarding"
    assert g["purpose"] == "seamless-boarding"
    assert (g["subjects"], g["templates"]) == (1, 1)
    assert isinstance(g["contract"], str)


def test_subjects_json_lists_who_is_enrolled_and_on_what_basis(world_cli: Cli) -> None:
    (s,) = world_cli.json("subjects")
    assert s["subject"] == "astronaut"
    assert s["galleries"] == {"boarding": 1}
    (basis,) = s["bases"]
    assert basis["kind"] == "consent"
    assert basis["purpose"] == "seamless-boarding"
    assert basis["withdrawn"] is False


# --------------------------------------------------------------------------------------------
# identification and verification


def test_identify_in_a_subprocess_finds_the_enrolled_astronaut_in_an_altered_capture(
    world: dict[str, Any], photos: dict[str, Path]
) -> None:
    res = ok_json(
        run_airside(
            "identify",
            "--gallery",
            "boarding",
            str(photos["astronaut_altered"]),
            "--json",
            data_dir=world["dir"],
        )
    )

    assert res["match"] is True
    assert res["candidates"][0]["subject"] == "astronaut"
    for c in res["candidates"]:
        assert isinstance(c["subject"], str)
        assert isinstance(c["score"], float)


def test_identify_does_not_match_a_person_who_is_not_enrolled(
    world_cli: Cli, photos: dict[str, Path]
) -> None:
    res = world_cli.json("identify", "--gallery", "boarding", str(photos["hopper"]))

    assert res["match"] is False
    assert res["subject"] is None
    # The nearest enrolled person is still listed, scored below the threshold.
    assert [c["subject"] for c in res["candidates"]] == ["astronaut"]
    assert res["candidates"][0]["score"] < res["threshold"]


def test_verify_json_has_score_decision_threshold_and_target(
    world_cli: Cli, photos: dict[str, Path]
) -> None:
    res = world_cli.json("verify", str(photos["astronaut"]), str(photos["astronaut_altered"]))

    assert isinstance(res["score"], float)
    assert isinstance(res["match"], bool)
    assert isinstance(res["threshold"], float)
    assert isinstance(res["fmr_target"], float)


def test_verify_matches_two_captures_of_the_same_person(
    world_cli: Cli, photos: dict[str, Path]
) -> None:
    res = world_cli.json("verify", str(photos["astronaut"]), str(photos["astronaut_altered"]))
    assert res["match"] is True
    assert res["score"] >= res["threshold"]


def test_verify_does_not_match_two_different_people(
    world_cli: Cli, photos: dict[str, Path]
) -> None:
    res = world_cli.json("verify", str(photos["astronaut"]), str(photos["hopper"]))
    assert res["match"] is False
    assert res["score"] < res["threshold"]


def test_names_with_brackets_are_printed_literally_not_as_markup(
    cli: Cli, photos: dict[str, Path]
) -> None:
    res = cli(
        "enrol",
        "--gallery",
        "boarding",
        "--subject",
        "pax [bold] 7 [red]",
        "--basis",
        "consent",
        str(photos["astronaut"]),
    )

    assert res.exit_code == 0, res.stderr
    assert "pax [bold] 7 [red]" in res.stdout
    assert "pax [bold] 7 [red]" in cli("subjects").stdout


# --------------------------------------------------------------------------------------------
# batch enrolment from a CSV


@pytest.fixture
def batch_csv(tmp_path: Path, photos: dict[str, Path]) -> Path:
    """Two good rows around one refused row (no face); image paths relative to the CSV."""
    folder = tmp_path / "batch"
    folder.mkdir()
    for key in ("astronaut", "hopper", "chelsea"):
        shutil.copyfile(photos[key], folder / photos[key].name)
    return write_csv(
        folder / "people.csv",
        ["subject", "image"],
        [
            ["astronaut", photos["astronaut"].name],
            ["cat", photos["chelsea"].name],
            ["hopper", photos["hopper"].name],
        ],
    )


def test_batch_enrol_is_all_or_nothing_by_default(cli: Cli, batch_csv: Path) -> None:
    res = cli("enrol", "--gallery", "boarding", "--csv", str(batch_csv), "--basis", "consent")

    assert res.exit_code != 0
    assert "nothing was enrolled" in one_line(res.stderr)
    assert "no face" in res.stderr
    assert cli.json("subjects") == []


def test_batch_enrol_with_skip_refused_enrols_good_rows_and_lists_refused_ones(
    cli: Cli, batch_csv: Path
) -> None:
    res = cli.json(
        "enrol",
        "--gallery",
        "boarding",
        "--csv",
        str(batch_csv),
        "--basis",
        "consent",
        "--skip-refused",
    )

    assert sorted(e["subject"] for e in res["enrolled"]) == ["astronaut", "hopper"]
    (refused,) = res["refused"]
    assert refused["row"] == 2  # the second data row
    assert refused["subject"] == "cat"
    assert refused["code"] == "no_face"
    assert "no face" in refused["message"]
    assert sorted(s["subject"] for s in cli.json("subjects")) == ["astronaut", "hopper"]


def test_batch_rows_may_carry_their_own_basis_and_a_bad_one_is_refused_by_row(
    cli: Cli, tmp_path: Path, photos: dict[str, Path]
) -> None:
    path = write_csv(
        tmp_path / "people.csv",
        ["subject", "image", "basis"],
        [
            ["astronaut", str(photos["astronaut"]), "consent"],
            ["hopper", str(photos["hopper"]), "hearsay"],
        ],
    )

    res = cli.json("enrol", "--gallery", "boarding", "--csv", str(path), "--skip-refused")

    assert [e["subject"] for e in res["enrolled"]] == ["astronaut"]
    (refused,) = res["refused"]
    assert (refused["row"], refused["subject"]) == (2, "hopper")
    assert "hearsay" in refused["message"]


def test_batch_csv_cannot_be_combined_with_a_single_subject(
    cli: Cli, batch_csv: Path, photos: dict[str, Path]
) -> None:
    res = cli(
        "enrol",
        "--gallery",
        "boarding",
        "--csv",
        str(batch_csv),
        "--subject",
        "x",
        "--basis",
        "consent",
        str(photos["astronaut"]),
    )

    assert res.exit_code != 0
    assert "not both" in res.stderr
    assert cli.json("subjects") == []


# --------------------------------------------------------------------------------------------
# where the data lives


def test_data_dir_from_the_environment_is_used_by_every_command(
    tmp_path: Path, photos: dict[str, Path]
) -> None:
    from_env = tmp_path / "from-env"
    home = tmp_path / "home"
    env = {"AIRSIDE_DATA_DIR": str(from_env), "HOME": str(home)}

    assert run_airside("gallery", "create", "g", "--purpose", "p", env=env).returncode == 0
    listed = ok_json(run_airside("galleries", "--json", env=env))

    assert [g["name"] for g in listed] == ["g"]
    assert (from_env / "airside.db").is_file()
    assert not (home / ".local" / "share" / "airside").exists()  # the default location


def test_data_dir_option_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env, from_flag = tmp_path / "from-env", tmp_path / "from-flag"
    monkeypatch.setenv("AIRSIDE_DATA_DIR", str(from_env))

    Cli(from_flag).json("gallery", "create", "g", "--purpose", "p")

    assert [g["name"] for g in Cli(from_flag).json("galleries")] == ["g"]
    assert not (from_env / "airside.db").exists()


# --------------------------------------------------------------------------------------------
# audit


def test_audit_chain_verifies_after_enrolments_refusals_and_searches(
    cli: Cli, batch_csv: Path, photos: dict[str, Path]
) -> None:
    enrol = ["enrol", "--gallery", "boarding", "--basis", "consent"]
    cli.json(*enrol, "--csv", str(batch_csv), "--skip-refused")
    assert cli(*enrol, "--subject", "cam", str(photos["chelsea"])).exit_code != 0
    cli.json("identify", "--gallery", "boarding", str(photos["astronaut_altered"]))
    cli.json("verify", str(photos["astronaut"]), str(photos["hopper"]))
    cli.json("subjects")

    report = cli.json("audit", "verify")

    assert report["ok"] is True
    assert report["problems"] == []
    assert report["records"] >= 6


# --------------------------------------------------------------------------------------------
# evaluation on labelled data


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, Path]) -> Path:
    """Three captures each of the astronaut and Grace Hopper, and one image with no face."""
    folder = tmp_path_factory.mktemp("eval-set")
    for who in ("astronaut", "hopper"):
        img = Image.open(photos[who]).convert("RGB")
        (folder / f"{who}-0.png").write_bytes(_encode(img, "PNG"))
        (folder / f"{who}-1.jpg").write_bytes(altered(img))
        darker = ImageEnhance.Brightness(img).enhance(0.7)
        (folder / f"{who}-2.jpg").write_bytes(_encode(darker, "JPEG", quality=60))
    shutil.copyfile(photos["chelsea"], folder / "chelsea.png")
    write_csv(
        folder / "pairs.csv",
        ["img_a", "img_b", "same"],
        [
            ["astronaut-0.png", "astronaut-1.jpg", "1"],
            ["hopper-0.png", "hopper-1.jpg", "1"],
            ["astronaut-0.png", "astronaut-2.jpg", "1"],
            ["hopper-0.png", "hopper-2.jpg", "1"],
            ["astronaut-0.png", "hopper-0.png", "0"],
            ["astronaut-1.jpg", "hopper-1.jpg", "0"],
            ["astronaut-2.jpg", "hopper-2.jpg", "0"],
            ["astronaut-0.png", "chelsea.png", "0"],
        ],
    )
    write_csv(
        folder / "identities.csv",
        ["image", "identity"],
        [
            *(
                [name, "astronaut"]
                for name in ("astronaut-0.png", "astronaut-1.jpg", "astronaut-2.jpg")
            ),
            *([name, "hopper"] for name in ("hopper-0.png", "hopper-1.jpg", "hopper-2.jpg")),
            ["chelsea.png", "chelsea"],
        ],
    )
    return folder


@pytest.fixture(scope="module")
def eval_verify_run(tmp_path_factory: pytest.TempPathFactory, eval_set: Path) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("eval-out")
    proc = run_airside(
        "eval",
        "verify",
        "--pairs",
        str(eval_set / "pairs.csv"),
        "--json",
        "--workers",
        "1",
        "--html",
        str(out / "report.html"),
        "--scores-out",
        str(out / "scores.csv"),
        data_dir=eval_set / "data",
    )
    return {"summary": ok_json(proc), "out": out}


def test_eval_verify_json_has_the_documented_keys(eval_verify_run: dict[str, Any]) -> None:
    s = eval_verify_run["summary"]

    assert s["pairs"] == 8
    assert s["failures_to_enrol"] == 1  # the chelsea image has no human face
    assert s["accuracy"] == 1.0  # the two people are easily told apart
    assert isinstance(s["eer"], float)
    assert set(s["tar_at_far"]) == {"1e-2", "1e-3", "1e-4"}
    for v in s["tar_at_far"].values():
        assert v is None or isinstance(v, float)  # None: too few impostors to resolve the FAR


def test_eval_verify_scores_out_writes_every_pair_back_with_its_score(
    eval_verify_run: dict[str, Any], eval_set: Path
) -> None:
    with (eval_verify_run["out"] / "scores.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    with (eval_set / "pairs.csv").open(newline="") as f:
        pairs = list(csv.DictReader(f))

    assert [{k: r[k] for k in ("img_a", "img_b", "same")} for r in rows] == pairs
    no_face = [r for r in rows if r["img_b"] == "chelsea.png"]
    assert [r["score"] for r in no_face] == [""]
    for r in rows:
        if r["img_b"] != "chelsea.png":
            assert -1.0 <= float(r["score"]) <= 1.0


def test_eval_verify_html_report_contains_a_chart(eval_verify_run: dict[str, Any]) -> None:
    assert "<svg" in (eval_verify_run["out"] / "report.html").read_text()


def test_eval_verify_that_cannot_calibrate_fails_and_writes_no_outputs(
    eval_set: Path, tmp_path: Path
) -> None:
    scores, report = tmp_path / "scores.csv", tmp_path / "report.html"

    proc = run_airside(
        "eval",
        "verify",
        "--pairs",
        str(eval_set / "pairs.csv"),
        "--calibrate",
        "--workers",
        "1",
        "--scores-out",
        str(scores),
        "--html",
        str(report),
        data_dir=eval_set / "data",
    )

    assert proc.returncode != 0
    assert "impostor" in one_line(proc.stderr)  # 3 impostor pairs are too few to calibrate
    assert not scores.exists()
    assert not report.exists()


def test_eval_identify_json_reports_rank1_and_fnir_at_fpir(eval_set: Path) -> None:
    s = ok_json(
        run_airside(
            "eval",
            "identify",
            "--identities",
            str(eval_set / "identities.csv"),
            "--json",
            "--workers",
            "1",
            data_dir=eval_set / "data",
        )
    )

    assert s["rank1"] == 1.0
    assert s["failures_to_enrol"] == 1
    assert isinstance(s["fnir_at_fpir"], dict) and s["fnir_at_fpir"]
    for v in s["fnir_at_fpir"].values():
        assert v is None or isinstance(v, float)
