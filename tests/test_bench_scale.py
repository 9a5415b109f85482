"""make bench-scale's parts on generated embeddings (fast; no shared data)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from airside.bench_scale import (
    BenchConfig,
    distractor_check,
    estimate_cost,
    extrapolate,
    fit_distractor_model,
    fnir_at_fpir,
    measure_gallery,
    split_protocol,
)

ROW_KEYS = {
    "index",
    "size",
    "embedder",
    "build_s",
    "bytes_per_template",
    "p50_ms",
    "p99_ms",
    "recall_at_1",
    "rank1",
    "fnir_at_fpir_0_003",
    "exact_rank1",
    "exact_fnir",
    "queries",
    "extrapolated",
}


def clustered(
    n_ids: int, per_id: int, dim: int = 32, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """Unit vectors in clusters around a common direction, like face templates."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(dim)
    mu *= 0.6 / np.linalg.norm(mu)
    centres = mu + rng.standard_normal((n_ids, dim)) * 0.25
    x = np.repeat(centres, per_id, axis=0) + rng.standard_normal((n_ids * per_id, dim)) * 0.08
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    who = [f"p{i}" for i in range(n_ids) for _ in range(per_id)]
    return x.astype(np.float32), who


def test_distractor_model_resembles_the_data_it_was_fitted_to() -> None:
    x, who = clustered(400, 3)
    model = fit_distractor_model(x, who)
    s = model.sample(20_000, np.random.default_rng(1))
    assert s.shape == (20_000, 32) and s.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1.0, atol=1e-5)
    # Mean and covariance close to the data's (one template per identity in both).
    one = x[::3]
    assert np.linalg.norm(s.mean(0) - one.mean(0)) < 0.05
    c_data, c_syn = np.cov(one.T), np.cov(s.T)
    assert np.linalg.norm(c_syn - c_data) / np.linalg.norm(c_data) < 0.35
    # Two samples of one synthetic identity are closer than two identities.
    rng = np.random.default_rng(2)
    centres = model.centres(500, rng)
    a, b = model.around(centres, rng), model.around(centres, rng)
    genuine = np.sum(a * b, axis=1).mean()
    impostor = (a @ b.T)[~np.eye(500, dtype=bool)].mean()
    assert genuine > impostor + 0.2


def test_fnir_at_fpir_on_a_hand_made_case() -> None:
    # 1,000 non-mated top-1 scores 0.000 .. 0.999: at FPIR 0.003 exactly the three highest
    # (0.997, 0.998, 0.999) may be at or above the threshold, so it sits just above 0.996.
    nonmated = np.arange(1000) / 1000.0
    mate = np.array([0, 1, 2, 3])
    got = np.array([0, 1, 2, 9])  # the fourth probe's top-1 is not its mate
    scores = np.array([0.999, 0.996, 0.5, 0.999])
    fnir, t, achieved = fnir_at_fpir(got, scores, mate, nonmated, 0.003)
    assert 0.996 < t <= 0.997
    assert math.isclose(achieved, 0.003)
    # Probe 0 is found (0.999 >= t); 1 and 2 score under t; 3 found the wrong one.
    assert math.isclose(fnir, 0.75)
    # Everyone found at a high score: FNIR 0.
    fnir0, _, _ = fnir_at_fpir(mate, np.full(4, 0.9999), mate, nonmated, 0.003)
    assert fnir0 == 0.0


def test_measuring_a_small_gallery_gives_every_key() -> None:
    x, who = clustered(300, 3, dim=32, seed=3)
    x1, who1 = clustered(200, 1, dim=32, seed=4)  # non-mated: identities with one image
    x = np.concatenate([x, x1])
    who = who + [f"single{k}" for k in range(len(who1))]
    probes = split_protocol(x, who)
    assert probes.enrol.shape[0] == 300 and probes.mated.shape[0] == 600
    assert probes.nonmated.shape[0] == 200
    model = fit_distractor_model(x, who)
    distractors = model.sample(3_000, np.random.default_rng(5))
    cfg = BenchConfig(latency_queries=50, latency_cap_s=2.0, sweep=(16, 64), online_n=20)
    names = ["exact-flat", "exact-fp16", "exact-int8", "ivf-pq", "hnsw", "numpy"]
    rows = measure_gallery("synthetic", 2_000, probes, distractors, names, cfg)
    assert [r["index"] for r in rows] == names
    for r in rows:
        assert set(r) >= ROW_KEYS, ROW_KEYS - set(r)
        assert r["size"] == 2_000 and r["queries"] >= 50
        assert 0.0 <= r["fnir_at_fpir_0_003"] <= 1.0
        assert r["bytes_per_template"] > 0
    flat = rows[0]
    assert flat["recall_at_1"] == 1.0 and flat["rank1"] > 0.9
    numpy_row = rows[-1]
    assert numpy_row["recall_at_1"] == 1.0
    assert numpy_row["fnir_at_fpir_0_003"] == flat["fnir_at_fpir_0_003"]
    int8 = rows[2]
    assert int8["recall_at_1"] == 1.0 and 0.0 <= int8["certified_share"] <= 1.0
    ivf = rows[3]
    assert [p["nprobe"] for p in ivf["nprobe_sweep"]] == [16, 32, 64, 128, 256, 512]
    assert ivf["nprobe_sweep"][-1]["recall_at_1"] >= 0.99  # every cell probed
    hnsw = rows[4]
    assert hnsw["recall_at_1"] > 0.95
    assert [s["expansion_search"] for s in hnsw["expansion_sweep"]] == [16, 64]
    assert hnsw["online_removed"] == 20 and hnsw["online_insert_ms_per_template"] > 0

    # Extrapolation from two sizes, and the budget estimate.
    small = dict(flat, size=1_000, build_s=flat["build_s"] / 2, cost_s=1.0)
    big = dict(flat, cost_s=2.0)
    est = estimate_cost([small, big], 4_000)
    assert est is not None and est == pytest.approx(4.0)
    ext = extrapolate([small, big], 20_000, "test")
    assert ext["extrapolated"] is True and ext["size"] == 20_000
    assert set(ext) >= ROW_KEYS


def test_distractor_check_reports_both_galleries() -> None:
    x, who = clustered(300, 3, dim=32, seed=6)
    x1, _ = clustered(100, 1, dim=32, seed=7)
    x = np.concatenate([x, x1])
    who = who + [f"s{k}" for k in range(100)]
    probes = split_protocol(x, who)
    check = distractor_check(probes, fit_distractor_model(x, who), (8, 64), repeats=1)
    assert set(check["recall_at_1_real"]) == {"8", "64"}
    assert set(check["recall_at_1_synthetic"]) == {"8", "64"}
    for key in ("impostor_real", "impostor_synthetic"):
        assert {"mean", "sd", "p99_9"} <= set(check[key])
    assert check["gallery_size"] == 400
