"""Accuracy on LFW development pairs (needs ../shared/data; slow)."""

from __future__ import annotations

import pytest
from tests.conftest import shared_data

from airside.biometrics.contract import EmbeddingContract
from airside.config import Settings
from airside.config import Settings as _Settings
from airside.evaluation.datasets import read_identities, read_pairs
from airside.evaluation.identification import evaluate_identification
from airside.evaluation.verification import evaluate_pairs
from airside.vision.factory import default_contract


def resnet_contract() -> EmbeddingContract:
    return default_contract(_Settings())


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("lfw"))


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
