"""Accuracy and demographic differentials on LFW View 1 (needs ../shared/data; slow)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.conftest import shared_data

from airside.config import Settings
from airside.config import Settings as _Settings
from airside.evaluation.datasets import read_identities, read_pairs
from airside.evaluation.fairness import (
    GroupedScores,
    all_pairs,
    crossfit_scores,
    fairness_summary,
    group_names_of_pairs,
)
from airside.evaluation.identification import evaluate_identification
from airside.evaluation.templates import extract_templates
from airside.evaluation.verification import evaluate_pairs
from airside.vision.contract import EmbeddingContract
from airside.vision.factory import default_contract


def resnet_contract() -> EmbeddingContract:
    """The default contract (SFace since it became the default; the name is historical)."""
    return default_contract(_Settings())


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(pytestconfig: pytest.Config) -> Settings:
    """Every test here shares one template cache, kept between runs in pytest's cache dir:
    LFW is embedded once (the tests are in one file, so one xdist worker runs them in turn)."""
    assert pytestconfig.cache is not None
    return Settings(data_dir=Path(pytestconfig.cache.mkdir("airside-lfw")))


@pytest.fixture(scope="module")
def devtest(settings: Settings) -> dict[str, object]:
    pairs = read_pairs(shared_data("faces", "lfw_view1", "pairs_devtest.csv"))
    return evaluate_pairs(pairs, settings, resnet_contract()).summary


def test_lfw_devtest_ten_fold_accuracy_is_at_least_99_percent(devtest: dict[str, object]) -> None:
    assert devtest["accuracy_protocol"].startswith("10-fold")  # type: ignore[union-attr]
    assert devtest["accuracy"] >= 0.990, devtest  # type: ignore[operator]


def test_lfw_devtest_failures_to_enrol_are_under_half_a_percent(
    devtest: dict[str, object],
) -> None:
    assert devtest["failures_to_enrol"] / devtest["images"] < 0.005, devtest  # type: ignore[operator]


def test_lfw_identification_rank1(settings: Settings) -> None:
    ids = read_identities(shared_data("faces", "lfw_view1", "identities.csv"))
    res = evaluate_identification(ids, settings, resnet_contract())
    assert res["rank1"] >= 0.93, res
    assert res["non_mated_probes"] > 1000


# --------------------------------------------------------------------------------------------
# LFW: race labels measure, never decide (slow; skipped without ../shared/data)


def test_lfw_within_group_fmr_differential_with_and_without_calibration(
    settings: Settings, tmp_path: Path
) -> None:
    root = shared_data("faces", "lfw_view1")
    labels_csv = shared_data("faces", "lfw_view1", "race_labels.csv")
    with labels_csv.open(newline="") as f:
        race = {r["identity"]: r["race_labels"] for r in csv.DictReader(f)}
    ids = read_identities(root / "identities.csv")
    contract = default_contract(settings)
    tpl = extract_templates(ids.images, settings, contract, policy="central")
    keep = [k for k, p in enumerate(ids.images) if tpl[p].vector is not None]
    x = np.stack([np.asarray(tpl[ids.images[k]].vector) for k in keep]).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    who = [ids.identities[k] for k in keep]
    # Evaluation only, never passed to a fit. Identities with several labels ("african,
    # caucasian") belong to no group: they count towards the overall threshold only.
    groups = [race.get(w, "") if "," not in race.get(w, "") else "" for w in who]
    names, _, codes = group_names_of_pairs(groups)
    i, j, s, same = all_pairs(x, who)
    base = GroupedScores(s, same, codes(i, j), names)
    results: dict[str, dict[str, Any]] = {"raw": fairness_summary(base)}
    for method in ("fair", "znorm", "cohort"):
        scores = crossfit_scores(x, who, i, j, s, method)
        results[method] = fairness_summary(base.with_scores(scores))
    table = {
        m: {
            "fmr_differential": r["fmr_differential"],
            "tar": r["overall"]["tar"],
            "threshold": r["threshold"],
            "african": [
                r["groups"]["african"]["false_matches"],
                r["groups"]["african"]["impostors"],
            ],
            "caucasian": [
                r["groups"]["caucasian"]["false_matches"],
                r["groups"]["caucasian"]["impostors"],
            ],
        }
        for m, r in results.items()
    }
    (tmp_path / "lfw-fairness.json").write_text(json.dumps(table, indent=1))
    print(json.dumps(table, indent=1))
    raw, fair = results["raw"], results["fair"]
    # SFace (the default): raw differential 5.7 where dlib's ResNet had 20.6, which the fair
    # calibration brought under 2 (docs/fairness.md). On SFace it gains little (5.3): it
    # must not make it worse, nor cost more than a point of TAR.
    assert raw["fmr_differential"] is not None and raw["fmr_differential"] < 10
    assert fair["fmr_differential"] is not None
    assert fair["fmr_differential"] <= raw["fmr_differential"] * 1.1
    assert fair["overall"]["tar"] >= raw["overall"]["tar"] - 0.01  # TAR drops <= 1 point
