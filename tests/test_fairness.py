"""Fairness statistics against hand-computed cases, the ``eval fairness`` command, and the
rule that demographic labels stay inside the evaluation code.

The LFW measurement (race labels from ../shared/data) is in tests/test_lfw.py.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from airside.evaluation.fairness import (
    GroupedScores,
    all_pairs,
    fairness_summary,
    group_names_of_pairs,
    normalise_group_label,
)
from airside.evaluation.fairness_report import render_fairness_report
from airside.evaluation.metrics import wilson_interval

SRC = Path(__file__).resolve().parents[1] / "src" / "airside"

# --------------------------------------------------------------------------------------------
# Wilson intervals, by hand: centre (k + z^2/2)/(n + z^2), half-width
# z/(n + z^2) * sqrt(n p (1-p) + z^2/4), z = 1.96.


def test_wilson_interval_of_no_errors_in_ten() -> None:
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(1.96**2 / (10 + 1.96**2))  # 0.27754


def test_wilson_interval_of_five_in_ten() -> None:
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.236590, abs=1e-6), pytest.approx(0.763410, abs=1e-6))


def test_wilson_interval_of_nothing_is_undefined() -> None:
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


# --------------------------------------------------------------------------------------------
# per-group rates


def _data(rows: list[tuple[float, bool, str]]) -> GroupedScores:
    return GroupedScores.from_labels(
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    )


def test_rates_at_an_explicit_threshold_count_ties_as_matches() -> None:
    data = _data(
        [
            (0.5, False, "a"),  # exactly at the threshold: a false match
            (0.4, False, "a"),
            (0.49, False, "a"),
            (0.2, False, "a"),
            (0.5, True, "a"),  # exactly at the threshold: accepted
            (0.3, True, "a"),  # a false non-match
        ]
    )
    s = fairness_summary(data, threshold=0.5, fmr_target=0.25, min_genuines=1)
    g = s["groups"]["a"]
    assert (g["false_matches"], g["impostors"], g["fmr"]) == (1, 4, 0.25)
    assert (g["false_non_matches"], g["genuines"], g["fnmr"]) == (1, 2, 0.5)
    assert g["fmr_ci"] == pytest.approx(list(wilson_interval(1, 4)))
    assert g["fnmr_ci"] == pytest.approx(list(wilson_interval(1, 2)))


def test_the_threshold_rejects_tied_impostors_together_so_fmr_never_exceeds_the_target() -> None:
    # 8 impostors, target 1/8: one may be admitted, but the top two tie at 0.7, so both are
    # rejected (measured FMR 0 <= target); a genuine at exactly 0.7 is rejected too.
    imp = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.7]
    data = _data([(v, False, "a") for v in imp] + [(0.7, True, "a"), (0.9, True, "a")])
    s = fairness_summary(data, fmr_target=0.125, min_genuines=1)
    assert s["threshold"] > 0.7
    assert s["threshold"] == np.nextafter(0.7, 1.0)
    assert s["overall"]["false_matches"] == 0
    assert s["overall"]["false_non_matches"] == 1
    # Target 1/4: two may be admitted, and the tied pair is admitted together.
    s = fairness_summary(data, fmr_target=0.25, min_genuines=1)
    assert s["threshold"] == np.nextafter(0.6, 1.0)
    assert s["overall"]["false_matches"] == 2
    assert s["overall"]["fmr"] == 0.25


def test_differential_is_max_over_min_of_measurable_within_groups() -> None:
    rows: list[tuple[float, bool, str]] = []
    rows += [(0.9, False, "a")] * 2 + [(0.1, False, "a")] * 998  # FMR 2/1000
    rows += [(0.9, False, "b")] * 1 + [(0.1, False, "b")] * 1999  # FMR 1/2000
    rows += [(0.9, False, "c")] * 5 + [(0.1, False, "c")] * 5  # 10 pairs: too few
    rows += [(0.9, False, "a|b")] * 50  # cross-group: shown, never ranked
    rows += [(0.95, True, "a")] * 30 + [(0.95, True, "b")] * 30
    s = fairness_summary(_data(rows), threshold=0.5, fmr_target=1e-3)
    assert s["fmr_differential"] == pytest.approx(0.002 / 0.0005)  # 4.0
    detail = s["fmr_differential_detail"]
    assert (detail["max_group"], detail["min_group"]) == ("a", "b")
    c = s["groups"]["c"]
    assert c["fmr"] == 0.5 and c["false_matches"] == 5 and c["impostors"] == 10
    assert not c["fmr_measurable"]
    assert c["status"] == "too_small" and c["too_small"]  # shown, marked, not hidden
    assert s["groups"]["a|b"]["kind"] == "cross"
    assert s["groups"]["a"]["fmr_ratio_to_overall"] == pytest.approx(0.002 / s["overall"]["fmr"])
    assert s["fnmr_differential"] is None  # both groups have FNMR 0: undefined, not 0/0


def test_a_group_with_no_false_matches_gives_an_unbounded_differential_and_a_bound() -> None:
    rows = [(0.9, False, "a")] * 3 + [(0.1, False, "a")] * 997
    rows += [(0.1, False, "b")] * 2000
    s = fairness_summary(_data(rows), threshold=0.5, fmr_target=1e-3)
    assert s["fmr_differential"] is None
    detail = s["fmr_differential_detail"]
    assert "unbounded" in detail["note"]
    upper = wilson_interval(0, 2000)[1]
    assert detail["lower_bound"] == pytest.approx(0.003 / upper)


def test_empty_groups_report_counts_and_no_rate() -> None:
    rows = [(0.9, True, "only-genuine")] * 3 + [(0.1, False, "")] * 2000
    s = fairness_summary(_data(rows), fmr_target=1e-3, min_genuines=5)
    g = s["groups"]["only-genuine"]
    assert (g["impostors"], g["fmr"], g["fmr_ci"]) == (0, None, None)
    assert (g["genuines"], g["fnmr"]) == (3, 0.0)
    assert g["fmr_ratio_to_overall"] is None
    assert g["status"] == "too_small"
    assert s["unlabelled"] == {"impostors": 2000, "genuines": 0}
    assert (
        s["fmr_differential"] is None and "fewer than two" in (s["fmr_differential_detail"]["note"])
    )
    json.dumps(s)  # JSON-serialisable: no NaN, no numpy types


def test_no_threshold_from_too_few_impostors() -> None:
    data = _data([(0.1, False, "a")] * 500 + [(0.9, True, "a")])
    with pytest.raises(ValueError, match="500 impostor pairs cannot set a threshold"):
        fairness_summary(data, fmr_target=1e-3)


def test_quantiles_are_given_only_where_the_sample_supports_them() -> None:
    rows = [(float(v), False, "a") for v in np.linspace(0, 1, 200)] + [(0.9, True, "a")] * 30
    s = fairness_summary(_data(rows), threshold=0.5, fmr_target=0.01)
    q = s["groups"]["a"]["impostor_quantiles"]
    assert q["0.5"] == pytest.approx(0.5)
    assert q["0.99"] is not None  # 200 * 0.01 = 2 values above
    assert q["0.999"] is None  # 200 * 0.001 < 1


def test_group_labels_are_canonical() -> None:
    assert normalise_group_label(" b | a ") == "a|b"
    assert normalise_group_label("a|a") == "a"
    assert normalise_group_label("  ") == ""
    with pytest.raises(ValueError, match="one name"):
        normalise_group_label("a|b|c")
    with pytest.raises(ValueError, match="one name"):
        normalise_group_label("a|")


def test_pair_groups_from_image_groups() -> None:
    names, image_code, codes = group_names_of_pairs(["x", "y", "", "x"])
    assert names == ["x", "y", "x|y"]
    assert image_code.tolist() == [0, 1, -1, 0]
    i = np.array([0, 0, 0, 1, 1, 2])
    j = np.array([1, 2, 3, 2, 3, 3])
    assert [names[c] if c >= 0 else "" for c in codes(i, j)] == ["x|y", "", "x", "", "x|y", ""]
    with pytest.raises(ValueError, match="cross-group"):
        group_names_of_pairs(["a|b"])


def test_all_pairs_scores_every_unordered_pair_once() -> None:
    x = np.eye(3)
    i, j, s, same = all_pairs(x, ["p", "p", "q"])
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2)]
    assert s.tolist() == [0.0, 0.0, 0.0]
    assert same.tolist() == [True, False, False]


def test_html_report_has_per_group_det_curves_and_histograms() -> None:
    rng = np.random.default_rng(0)
    rows: list[tuple[float, bool, str]] = []
    for name, shift in (("a", 0.0), ("b", 0.1)):
        rows += [(float(v), False, name) for v in rng.normal(0.3 + shift, 0.1, 3000)]
        rows += [(float(v), True, name) for v in rng.normal(0.8, 0.1, 200)]
    data = _data(rows)
    summary = fairness_summary(data, fmr_target=1e-3)
    page = render_fairness_report({"raw": (data, summary)}, "test")
    assert page.count("<svg") == 2  # one DET chart (a line per group), one histogram grid
    assert "DET curves per group" in page and "(3000 imp.)" in page


# --------------------------------------------------------------------------------------------
# two thresholds for one FMR target: in-domain (fitted on the evaluated pairs) and deployment
# (from the model's FMR table)


def _two_groups(seed: int) -> GroupedScores:
    """Group b's impostors score higher and its genuines lower than group a's."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[float, bool, str]] = []
    for name, imp_mean, gen_mean in (("a", 0.30, 0.80), ("b", 0.38, 0.72)):
        rows += [(float(v), False, name) for v in rng.normal(imp_mean, 0.1, 4000)]
        rows += [(float(v), True, name) for v in rng.normal(gen_mean, 0.1, 300)]
    return _data(rows)


def _web_table(seed: int) -> Any:
    """An FMR table fitted on other scores than the evaluated ones (impostors centred
    lower, as a table fitted on one kind of photo and used on another)."""
    from airside.biometrics.score_rates import fit_calibration

    rng = np.random.default_rng(seed)
    return fit_calibration(
        rng.normal(0.8, 0.1, 500), rng.normal(0.25, 0.1, 50_000), model="m", source="web"
    )


def test_in_domain_fnmr_per_group_equals_a_count_from_the_scores_themselves() -> None:
    data = _two_groups(1)
    fmr = 1e-2
    s = fairness_summary(data, fmr_target=fmr, min_genuines=1)
    imp_desc = np.sort(data.scores[~data.same])[::-1]
    # At most floor(n * fmr) impostors are admitted: every score at or below the highest
    # rejected impostor score is a non-match.
    cut = imp_desc[math.floor(imp_desc.size * fmr)]
    for code, name in enumerate(data.names):
        gen = data.scores[data.same & (data.group == code)]
        imp = data.scores[~data.same & (data.group == code)]
        g = s["groups"][name]
        assert (g["false_non_matches"], g["genuines"]) == (int(np.sum(gen <= cut)), gen.size)
        assert g["fnmr"] == np.sum(gen <= cut) / gen.size
        assert (g["false_matches"], g["impostors"]) == (int(np.sum(imp > cut)), imp.size)
    assert s["threshold_basis"].startswith("in-domain")


def test_per_group_rates_at_the_deployment_threshold_are_counted_at_the_tables_threshold() -> None:
    from airside.evaluation.fairness import deployment_threshold

    data = _two_groups(2)
    table = _web_table(3)
    s = fairness_summary(
        data,
        fmr_target=1e-2,
        min_genuines=1,
        deployment=deployment_threshold(table, 1e-2, "the shipped table"),
    )
    dep = s["deployment"]
    t = table.threshold_for(1e-2)
    assert dep["threshold"] == t and dep["source"] == "the shipped table"
    assert dep["threshold"] != s["threshold"]  # fitted on other scores: another threshold
    for code, name in enumerate(data.names):
        member = data.group == code
        gen, imp = data.scores[data.same & member], data.scores[~data.same & member]
        d = dep["groups"][name]
        assert (d["false_matches"], d["impostors"]) == (int(np.sum(imp >= t)), imp.size)
        assert (d["false_non_matches"], d["genuines"]) == (int(np.sum(gen < t)), gen.size)
        assert d["fnmr_ci"] == pytest.approx(list(wilson_interval(int(np.sum(gen < t)), gen.size)))
    # The table was fitted on lower impostor scores: on these pairs it lets more through
    # than its target, which the in-domain threshold does not.
    assert dep["overall"]["fmr"] > 1e-2 >= s["overall"]["fmr"]
    assert dep["fmr_differential_detail"]["max_group"] == "b"


def test_a_target_the_table_cannot_set_gives_no_deployment_rates_and_says_why() -> None:
    from airside.evaluation.fairness import deployment_threshold

    data = _two_groups(4)
    table = _web_table(5)  # 50,000 impostor scores: nothing below FMR 2e-5
    s = fairness_summary(
        data, fmr_target=1e-2, deployment=deployment_threshold(table, 1e-6, "the shipped table")
    )
    dep = s["deployment"]
    assert dep["threshold"] is None and "resolve" in dep["note"]
    assert "groups" not in dep  # no rate without a threshold


def test_html_report_shows_each_groups_rates_at_both_thresholds() -> None:
    from airside.evaluation.fairness import deployment_threshold

    data = _two_groups(6)
    table = _web_table(7)
    summary = fairness_summary(
        data, fmr_target=1e-2, deployment=deployment_threshold(table, 1e-2, "the shipped table")
    )
    page = render_fairness_report({"raw": (data, summary)}, "test")
    assert "at the deployment threshold" in page
    assert f"{summary['deployment']['threshold']:.6g} (the shipped table)" in page
    for name in ("a", "b"):
        d = summary["deployment"]["groups"][name]
        assert f"({d['false_non_matches']}/{d['genuines']})" in page
        assert f"({d['false_matches']}/{d['impostors']})" in page


# --------------------------------------------------------------------------------------------
# the command (registered on a local app: cli/main.py wires it for users)


def _cli(data_dir: Path) -> tuple[typer.Typer, list[str]]:
    from airside.cli.fairness_cmds import register
    from airside.cli.state import State

    app = typer.Typer()
    eval_app = typer.Typer()
    app.add_typer(eval_app, name="eval")

    @app.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = State(data_dir)

    register(app, eval_app)
    return app, []


def test_eval_fairness_refuses_a_missing_group_column(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("img_a,img_b,same,race\na.jpg,b.jpg,0,x\n")
    app, _ = _cli(tmp_path / "data")
    res = CliRunner().invoke(
        app, ["eval", "fairness", "--pairs", str(pairs), "--group", "ethnicity", "--json"]
    )
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["error"] == "bad_input"
    assert "no group column 'ethnicity'" in out["message"] and "race" in out["message"]


def test_eval_fairness_compare_needs_identities(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("img_a,img_b,same,g\na.jpg,b.jpg,0,x\n")
    app, _ = _cli(tmp_path / "data")
    res = CliRunner().invoke(
        app, ["eval", "fairness", "--pairs", str(pairs), "--group", "g", "--compare", "--json"]
    )
    assert res.exit_code == 1
    assert "needs --identities" in json.loads(res.stdout)["message"]


def test_eval_fairness_on_real_faces(
    tmp_path: Path, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    from PIL import Image

    folder = tmp_path / "set"
    folder.mkdir()
    for who, arr in (("astronaut", astronaut), ("hopper", hopper)):
        img = Image.fromarray(arr)
        img.save(folder / f"{who}-0.png")
        w, h = img.size
        img.resize((int(w * 0.8), int(h * 0.8))).save(folder / f"{who}-1.jpg", quality=60)
    rows = [
        ["astronaut-0.png", "astronaut-1.jpg", "1", "g1"],
        ["hopper-0.png", "hopper-1.jpg", "1", "g2"],
        *[["astronaut-0.png", "hopper-0.png", "0", "g2|g1"]] * 2,
        *[["astronaut-1.jpg", "hopper-1.jpg", "0", "g1|g2"]] * 2,
    ]
    with (folder / "pairs.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img_a", "img_b", "same", "group"])
        w.writerows(rows)
    app, _ = _cli(tmp_path / "data")
    html = tmp_path / "fair.html"
    res = CliRunner().invoke(
        app,
        [
            "eval", "fairness", "--pairs", str(folder / "pairs.csv"), "--group", "group",
            "--fmr", "0.5", "--min-genuines", "1", "--workers", "1", "--json",
            "--html", str(html),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.stdout
    s: dict[str, Any] = json.loads(res.stdout)
    assert isinstance(s["threshold"], float)
    assert set(s["groups"]) == {"g1", "g2", "g1|g2"}  # "g2|g1" is the same cross group
    cross = s["groups"]["g1|g2"]
    assert (cross["impostors"], cross["genuines"]) == (4, 0)
    assert cross["fnmr"] is None  # no genuine pairs: no rate
    for name in ("g1", "g2"):
        g = s["groups"][name]
        assert (g["impostors"], g["genuines"], g["fnmr"]) == (0, 1, 0.0)
    assert s["fmr_differential"] is None  # no within-group impostors to compare
    assert "<svg" in html.read_text()
    # --installed: the same pairs again with the fair calibration installed for the model.
    from airside.biometrics.fair_calibration import fit_fair_calibration, save_fair_calibration
    from airside.config import Settings
    from airside.evaluation.metrics import fit_calibration
    from airside.vision.factory import default_contract

    contract = default_contract(Settings(data_dir=tmp_path / "data"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, contract.dim))
    cal = fit_fair_calibration(
        x,
        [f"p{k // 2}" for k in range(400)],
        contract,
        source="test",
        table_fitter=lambda g, i, m, src: fit_calibration(g, i, model=m, source=src),
    )
    save_fair_calibration(cal, contract, tmp_path / "data")
    res = CliRunner().invoke(
        app,
        [
            "eval", "fairness", "--pairs", str(folder / "pairs.csv"), "--group", "group",
            "--fmr", "0.5", "--min-genuines", "1", "--workers", "1", "--json", "--installed",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.stdout
    s = json.loads(res.stdout)
    assert s["method"] == "raw" and set(s["methods"]) == {"installed"}
    assert [r["method"] for r in s["comparison"]] == ["raw", "installed"]


def _real_pairs(folder: Path, astronaut: np.ndarray, hopper: np.ndarray) -> Path:
    """Two people, a genuine pair each (group g1, g2) and 10 cross-group impostor rows:
    enough impostors to set a threshold for FMR 0.1."""
    from PIL import Image

    folder.mkdir()
    for who, arr in (("astronaut", astronaut), ("hopper", hopper)):
        img = Image.fromarray(arr)
        img.save(folder / f"{who}-0.png")
        w, h = img.size
        img.resize((int(w * 0.8), int(h * 0.8))).save(folder / f"{who}-1.jpg", quality=60)
    rows = [
        ["astronaut-0.png", "astronaut-1.jpg", "1", "g1"],
        ["hopper-0.png", "hopper-1.jpg", "1", "g2"],
        *[["astronaut-0.png", "hopper-0.png", "0", "g1|g2"]] * 5,
        *[["astronaut-1.jpg", "hopper-1.jpg", "0", "g1|g2"]] * 5,
    ]
    path = folder / "pairs.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img_a", "img_b", "same", "group"])
        w.writerows(rows)
    return path


def _fairness_json(app: typer.Typer, pairs: Path, *extra: str) -> dict[str, Any]:
    res = CliRunner().invoke(
        app,
        [
            "eval", "fairness", "--pairs", str(pairs), "--group", "group", "--fmr", "0.1",
            "--min-genuines", "1", "--workers", "1", "--json", *extra,
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.stdout
    result: dict[str, Any] = json.loads(res.stdout)
    return result


def test_eval_fairness_measures_groups_at_the_shipped_tables_threshold(
    tmp_path: Path, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    from airside.biometrics.calibration import shipped_calibration
    from airside.config import Settings
    from airside.vision.factory import default_contract

    app, _ = _cli(tmp_path / "data")
    s = _fairness_json(app, _real_pairs(tmp_path / "set", astronaut, hopper))
    shipped = shipped_calibration(default_contract(Settings(data_dir=tmp_path / "data")))
    assert shipped is not None, "the default model ships an FMR table"
    dep = s["deployment"]
    assert dep["threshold"] == pytest.approx(shipped.threshold_for(0.1))
    assert "shipped" in dep["source"]
    # Every group is measured at both thresholds, over the same pairs.
    for name, g in s["groups"].items():
        d = dep["groups"][name]
        assert (d["impostors"], d["genuines"]) == (g["impostors"], g["genuines"])


def test_eval_fairness_uses_the_deployments_own_table_when_one_is_installed(
    tmp_path: Path, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    from airside.biometrics.calibration import CalibrationTable, save_calibration
    from airside.config import Settings
    from airside.vision.factory import default_contract

    data_dir = tmp_path / "data"
    contract = default_contract(Settings(data_dir=data_dir))
    # A deployment table whose threshold no cosine similarity reaches: at it, every genuine
    # pair is a false non-match, while at the in-domain threshold both people are matched.
    table = CalibrationTable(
        model=contract.fingerprint, fmr=[0.5, 0.1], threshold=[1.4, 1.5], fnmr=[None, None],
        impostors=1000, genuines=0, source="test",
    )  # fmt: skip
    path = save_calibration(table, contract, data_dir)
    app, _ = _cli(data_dir)
    s = _fairness_json(app, _real_pairs(tmp_path / "set", astronaut, hopper))
    dep = s["deployment"]
    assert dep["threshold"] == 1.5 and str(path) in dep["source"]
    for name in ("g1", "g2"):
        assert (s["groups"][name]["false_non_matches"], s["groups"][name]["genuines"]) == (0, 1)
        d = dep["groups"][name]
        assert (d["false_non_matches"], d["genuines"], d["fnmr"]) == (1, 1, 1.0)
    cross = dep["groups"]["g1|g2"]
    assert (cross["false_matches"], cross["impostors"], cross["fmr"]) == (0, 10, 0.0)


# --------------------------------------------------------------------------------------------
# demographic labels never leave the evaluation code

ALLOWED = ("evaluation/", "cli/fairness_cmds.py")
LABEL_PARAMS = {"group", "groups", "race", "races", "ethnicity", "ethnic", "demographic"}
LABEL_WORDS = re.compile(r"\b(race|races|racial|ethnic\w*|demograph\w*)\b", re.IGNORECASE)


def _outside_evaluation() -> list[Path]:
    return sorted(
        p
        for p in SRC.rglob("*.py")
        if not any(str(p.relative_to(SRC)).startswith(a) for a in ALLOWED)
    )


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module and its classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def test_no_function_outside_evaluation_takes_a_demographic_parameter() -> None:
    offenders = []
    for path in _outside_evaluation():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                a = node.args
                for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]:
                    if LABEL_PARAMS & set(arg.arg.lower().split("_")):
                        offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {arg.arg}")
    assert not offenders, offenders


def test_no_code_outside_evaluation_names_race_or_ethnicity() -> None:
    """Identifiers and string literals (column names, keys, messages); docstrings may
    explain what the code refuses to do."""
    offenders = []
    for path in _outside_evaluation():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            text = None
            if isinstance(node, ast.Name):
                text = node.id
            elif isinstance(node, ast.Attribute):
                text = node.attr
            elif isinstance(node, ast.arg):
                text = node.arg
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = None if id(node) in skip else node.value
            if text and LABEL_WORDS.search(text.replace("_", " ")):
                offenders.append(f"{path.relative_to(SRC)}:{getattr(node, 'lineno', '?')} {text!r}")
    assert not offenders, offenders


def test_the_label_checks_would_catch_an_offender(tmp_path: Path) -> None:
    tree = ast.parse('def fit(x, race_group=None):\n    return x["ethnicity"]\n')
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef)
    assert LABEL_PARAMS & set(fn.args.args[1].arg.split("_"))
    assert LABEL_WORDS.search("ethnicity")
    assert not LABEL_WORDS.search("trace embrace")


def test_the_calibrate_command_takes_no_group_option() -> None:
    from typer.main import get_command

    app, _ = _cli(Path("/nonexistent"))
    command = get_command(app)
    calibrate = command.commands["calibrate"]  # type: ignore[attr-defined]
    options = {opt for p in calibrate.params for opt in getattr(p, "opts", [])}
    assert not any(any(w in o for w in ("group", "race", "ethnic")) for o in options), options
