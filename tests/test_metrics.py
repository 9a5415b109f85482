"""Behavioural tests for airside.evaluation.metrics and the HTML reports.

Small examples are hand-computable; the comments show the arithmetic.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from airside.evaluation.metrics import (
    CalibrationTable,
    best_threshold_accuracy,
    eer,
    error_curve,
    fit_calibration,
    identification_metrics,
    kfold_accuracy,
    tar_at_far,
    threshold_at_fmr,
    wilson_interval,
)
from airside.evaluation.report import render_identification_report, render_verification_report

GENUINE = np.array([0.9, 0.8, 0.7])
IMPOSTOR = np.array([0.1, 0.2, 0.75])


# --- error curve / EER -------------------------------------------------------------------


def test_error_curve_thresholds_are_distinct_scores_plus_one_above_max() -> None:
    curve = error_curve(GENUINE, IMPOSTOR)
    np.testing.assert_array_equal(curve.thresholds[:-1], [0.1, 0.2, 0.7, 0.75, 0.8, 0.9])
    assert curve.thresholds[-1] > 0.9
    assert curve.thresholds[-1] == np.nextafter(0.9, np.inf)


def test_error_curve_exact_rates() -> None:
    curve = error_curve(GENUINE, IMPOSTOR)
    # t=0.1: all impostors accepted; t=0.75: only 0.75 accepted, genuine 0.7 rejected; ...
    np.testing.assert_allclose(curve.fmr, [1, 2 / 3, 1 / 3, 1 / 3, 0, 0, 0])
    np.testing.assert_allclose(curve.fnmr, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])


def test_eer_at_exact_crossing() -> None:
    # At t=0.75 FMR = FNMR = 1/3.
    assert eer(GENUINE, IMPOSTOR) == pytest.approx(1 / 3)


def test_eer_interpolates_between_thresholds() -> None:
    # t=0.6: FMR 1/2, FNMR 1/3; t=0.8: FMR 0, FNMR 1/3 -> the rates cross at 1/3.
    assert eer([0.4, 0.8, 0.9], [0.5, 0.6]) == pytest.approx(1 / 3)


def test_perfect_separation_has_zero_eer() -> None:
    assert eer([0.8, 0.9], [0.1, 0.2]) == 0.0


def test_perfect_separation_has_full_accuracy() -> None:
    thr, acc = best_threshold_accuracy([0.1, 0.2, 0.8, 0.9], [False, False, True, True])
    assert acc == 1.0
    assert thr == pytest.approx(0.5)  # midpoint of the gap (0.2, 0.8)


def test_error_curve_rejects_non_finite_scores() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        error_curve([0.5, float("nan")], [0.1])


def test_error_curve_rejects_empty_impostors() -> None:
    with pytest.raises(ValueError, match="impostor scores are empty"):
        error_curve([0.5], [])


# --- threshold_at_fmr / tar_at_far -------------------------------------------------------


def test_threshold_at_fmr_admits_floor_of_target_times_n() -> None:
    imp = np.round(np.arange(1, 11) / 10, 2)  # 0.1 .. 1.0
    t = threshold_at_fmr(imp, 0.25)  # 2 of 10 may pass: 0.9 and 1.0
    assert np.mean(imp >= t) == pytest.approx(0.2)
    assert 0.8 < t <= 0.9


def test_threshold_at_fmr_is_just_above_highest_rejected_score() -> None:
    imp = np.round(np.arange(1, 11) / 10, 2)
    assert threshold_at_fmr(imp, 0.1) == np.nextafter(0.9, np.inf)


def test_threshold_at_fmr_below_resolution_rejects_all_impostors() -> None:
    imp = np.round(np.arange(1, 11) / 10, 2)
    t = threshold_at_fmr(imp, 0.05)  # < 1/10: nobody may pass
    assert np.mean(imp >= t) == 0.0


@pytest.mark.parametrize("seed", range(40))
def test_threshold_at_fmr_never_exceeds_target_and_is_smallest(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 500))
    imp = rng.normal(size=n)
    if seed % 2:
        imp = np.round(imp, 1)  # heavy ties
    for target in rng.uniform(1e-4, 0.999, size=20):
        t = threshold_at_fmr(imp, float(target))
        assert np.mean(imp >= t) <= target
        # Any smaller threshold would admit more impostors than allowed.
        if t > imp.min():
            assert np.mean(imp >= np.nextafter(t, -np.inf)) > target


def test_tar_at_far_is_nan_with_too_few_impostors() -> None:
    imp = np.linspace(0.0, 0.5, 99)
    assert math.isnan(tar_at_far([0.9], imp, 0.01))


def test_tar_at_far_measures_with_enough_impostors() -> None:
    imp = np.linspace(0.0, 0.5, 100)  # threshold just above the 99th impostor (< 0.5)
    assert tar_at_far([0.3, 0.6, 0.7, 0.8], imp, 0.01) == pytest.approx(0.75)


# --- accuracy / k-fold -------------------------------------------------------------------


def test_best_threshold_accuracy_non_separable_picks_lowest_best_gap() -> None:
    # Thresholds 0.3, 0.4 and 0.9 all reach 3/4; the lowest is chosen, placed mid-gap.
    thr, acc = best_threshold_accuracy([0.1, 0.4, 0.3, 0.9], [False, False, True, True])
    assert acc == pytest.approx(0.75)
    assert thr == pytest.approx(0.2)


# Fold A: same (0.6, 0.7), different (0.2, 0.3) -> its own best threshold is 0.45.
# Fold B: same (0.9, 0.95), different (0.65, 0.1) -> its own best threshold is 0.775.
# Testing A with B's 0.775 rejects both same pairs: 2/4. Testing B with A's 0.45 accepts the
# different pair 0.65: 3/4. Mean 0.625, std 0.125 -- whereas one pooled threshold gets 7/8.
KF_SCORES = np.array([0.6, 0.7, 0.2, 0.3, 0.9, 0.95, 0.65, 0.1])
KF_SAME = np.array([True, True, False, False, True, True, False, False])


def test_kfold_accuracy_uses_thresholds_from_other_folds() -> None:
    mean, std = kfold_accuracy(KF_SCORES, KF_SAME, np.array([0, 0, 0, 0, 1, 1, 1, 1]))
    assert mean == pytest.approx(0.625)
    assert std == pytest.approx(0.125)
    assert best_threshold_accuracy(KF_SCORES, KF_SAME)[1] == pytest.approx(7 / 8)


def test_kfold_accuracy_integer_folds_are_contiguous() -> None:
    assert kfold_accuracy(KF_SCORES, KF_SAME, 2) == pytest.approx((0.625, 0.125))


def test_kfold_accuracy_rejects_single_fold() -> None:
    with pytest.raises(ValueError, match="folds"):
        kfold_accuracy(KF_SCORES, KF_SAME, 1)


# --- identification ----------------------------------------------------------------------


def test_identification_metrics_fnir_at_fpir() -> None:
    # 100 non-mated searches: 98 top-1 scores of 0.1, one 0.5, one 0.7.
    # FPIR 0.01 -> 1 may pass -> T just above 0.5; FPIR 0.02 -> 2 may pass -> T just above 0.1.
    nonmated = np.concatenate([np.full(98, 0.1), [0.5, 0.7]])
    out = identification_metrics(
        mated_top1_ids=[1, 2, 3, 9],
        mated_top1_scores=[0.9, 0.6, 0.4, 0.8],
        mated_true_ids=[1, 2, 3, 4],
        mated_true_scores=[0.9, 0.6, 0.4, 0.3],  # search 4: mate is not at rank 1
        nonmated_top1_scores=nonmated,
        fpir_targets=(0.01, 0.02, 0.003),
    )
    assert out["rank1"] == pytest.approx(0.75)
    assert out["fnir_at_fpir"]["0.01"] == pytest.approx(0.5)  # 0.4 below T, search 4 missed
    assert out["fnir_at_fpir"]["0.02"] == pytest.approx(0.25)  # only search 4 missed
    assert out["thresholds"]["0.01"] == np.nextafter(0.5, np.inf)
    assert math.isnan(out["fnir_at_fpir"]["0.003"])  # 100 < 1/0.003
    assert math.isnan(out["thresholds"]["0.003"])


def test_identification_metrics_default_keys() -> None:
    out = identification_metrics([1], [0.9], [1], [0.9], [])
    assert set(out) == {"rank1", "fnir_at_fpir", "thresholds"}
    assert set(out["fnir_at_fpir"]) == {"0.01", "0.003"}


# --- Wilson interval ---------------------------------------------------------------------


def test_wilson_interval_zero_successes() -> None:
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(0.2775, abs=1e-4)


def test_wilson_interval_half() -> None:
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4)
    assert hi == pytest.approx(0.7634, abs=1e-4)


def test_wilson_interval_empty_is_nan() -> None:
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


# --- calibration -------------------------------------------------------------------------


@pytest.fixture
def table() -> CalibrationTable:
    rng = np.random.default_rng(7)
    return fit_calibration(
        rng.normal(0.7, 0.1, 500), rng.normal(0.1, 0.1, 1000), model="m@sha256:abc", source="t"
    )


def test_fit_calibration_grid_reaches_resolution_limit(table: CalibrationTable) -> None:
    assert table.fmr[0] == 0.1
    assert table.fmr[-1] == pytest.approx(1e-3)
    assert table.impostors == 1000 and table.genuines == 500
    assert all(v is not None for v in table.fnmr)


def test_calibration_json_round_trip(table: CalibrationTable) -> None:
    restored = CalibrationTable.from_json(json.loads(json.dumps(table.to_json())))
    assert restored == table


def test_calibration_threshold_for_is_monotone(table: CalibrationTable) -> None:
    targets = np.logspace(-3, -1, 60)
    thresholds = np.array([table.threshold_for(float(t)) for t in targets])
    assert np.all(np.diff(thresholds) <= 0.0)  # laxer FMR target -> lower threshold
    assert table.threshold_for(0.01) == table.threshold[table.fmr.index(0.01)]


def test_calibration_fmr_for_inverts_threshold_for(table: CalibrationTable) -> None:
    for target in (0.003, 0.02, 0.07):
        assert table.fmr_for(table.threshold_for(target)) == pytest.approx(target, rel=1e-6)


@pytest.mark.parametrize("target", [1e-4, 0.0, 1.0, -0.1])
def test_calibration_threshold_for_refuses_unresolvable_targets(
    table: CalibrationTable, target: float
) -> None:
    with pytest.raises(ValueError, match=r"resolve|open interval"):
        table.threshold_for(target)


def test_fit_calibration_without_genuines_records_no_fnmr() -> None:
    cal = fit_calibration([], np.linspace(0, 1, 50), model="m", source="s")
    assert cal.genuines == 0
    assert all(v is None for v in cal.fnmr)
    assert cal.fmr[-1] == pytest.approx(1 / 50)


def test_fit_calibration_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="impostor scores are empty"):
        fit_calibration([0.5], [], model="m", source="s")
    with pytest.raises(ValueError, match="non-finite"):
        fit_calibration([0.5], [0.1] * 20 + [float("inf")], model="m", source="s")


# --- reports -----------------------------------------------------------------------------


def test_verification_report_has_svg_and_summary_values() -> None:
    rng = np.random.default_rng(3)
    gen, imp = rng.normal(0.7, 0.1, 300), rng.normal(0.2, 0.1, 2000)
    summary = {"eer": 0.0123, "tar_at_far_1e-4": float("nan"), "pairs": 2300}
    html = render_verification_report(gen, imp, summary, title="LFW <verification>")
    assert html.count("<svg") == 2
    assert "0.0123" in html and "null" in html and "2300" in html
    assert "LFW &lt;verification&gt;" in html  # title is escaped


def test_identification_report_flattens_nested_summary() -> None:
    summary = {"rank1": 0.97, "fnir_at_fpir": {"0.01": 0.05, "0.003": float("nan")}}
    html = render_identification_report(summary, title="1:N")
    assert "fnir_at_fpir.0.01" in html and "0.05" in html and "null" in html
