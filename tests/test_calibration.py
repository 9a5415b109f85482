"""Thresholds are set as a target FMR through the model's calibration table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from airside.biometrics.calibration import load_calibration, save_calibration
from airside.config import Settings as _Settings
from airside.errors import NoCalibrationError
from airside.evaluation.metrics import fit_calibration
from airside.vision.contract import EmbeddingContract
from airside.vision.factory import default_contract


def resnet_contract() -> EmbeddingContract:
    return default_contract(_Settings())


def test_the_default_model_ships_a_calibration() -> None:
    table = load_calibration(resnet_contract())
    assert table.model == resnet_contract().fingerprint
    assert table.impostors >= 1_000_000
    t3, t4 = table.threshold_for(1e-3), table.threshold_for(1e-4)
    assert t4 > t3


def test_shipped_table_rows_are_reproduced_by_threshold_for() -> None:
    table = load_calibration(resnet_contract())
    for fmr, thr in zip(table.fmr, table.threshold, strict=True):
        assert table.threshold_for(fmr) == pytest.approx(thr)


def test_a_deployment_table_overrides_the_shipped_one(tmp_path: Path) -> None:
    contract = resnet_contract()
    rng = np.random.default_rng(0)
    table = fit_calibration(
        rng.normal(0.95, 0.01, 500), rng.normal(0.8, 0.03, 100_000), contract.fingerprint, "test"
    )
    save_calibration(table, contract, tmp_path)
    loaded = load_calibration(contract, tmp_path)
    assert loaded.source == "test"
    assert loaded.threshold_for(1e-3) == pytest.approx(table.threshold_for(1e-3))


def test_a_table_for_another_model_is_refused(tmp_path: Path) -> None:
    contract = resnet_contract()
    rng = np.random.default_rng(0)
    table = fit_calibration([], rng.normal(0.8, 0.03, 1000), "other-model", "test")
    path = save_calibration(table, contract, tmp_path)
    assert json.loads(path.read_text())["model"] == "other-model"
    with pytest.raises(ValueError, match="fitted for other-model"):
        load_calibration(contract, tmp_path)


def test_unresolvable_fmr_is_refused() -> None:
    rng = np.random.default_rng(0)
    table = fit_calibration([], rng.normal(0.8, 0.03, 1000), "m", "test")
    with pytest.raises(ValueError, match="resolve"):
        table.threshold_for(1e-5)


SFACE_SHA256 = "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79"
SFACE_PREPROCESSING = "arcface5pt-112-v1+mirror|rgb-nchw-mean0-std1"


def sface_contract(name: str, preprocessing: str = SFACE_PREPROCESSING) -> EmbeddingContract:
    return EmbeddingContract(
        model_id=f"sface:{name}",
        version="7",
        weights_sha256=SFACE_SHA256,
        dim=128,
        preprocessing=preprocessing,
    )


def test_the_sface_table_follows_the_weights_whatever_name_they_were_registered_under() -> None:
    for name in ("sface", "front-door"):
        table = load_calibration(sface_contract(name))
        assert table.model == sface_contract(name).fingerprint
        assert table.impostors >= 1_000_000
        assert 0.3 < table.threshold_for(1e-3) < 0.5  # cosine, not dlib's 0.93


def test_the_same_weights_with_other_preprocessing_have_no_shipped_table() -> None:
    """Another alignment changes what a score means: no table, and the error says which
    preprocessing the shipped one was fitted for."""
    with pytest.raises(NoCalibrationError, match="Fit one on labelled faces") as err:
        load_calibration(sface_contract("sface", "fallback-dlib5pt-eyes-112-v1|rgb-nchw"))
    assert SFACE_PREPROCESSING in str(err.value) and "YuNet" in str(err.value)
    assert err.value.details == {"next": "calibration.fit"}
