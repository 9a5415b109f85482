"""Exact search over a gallery's contiguous matrix, float32 or float16."""

from __future__ import annotations

import numpy as np
import pytest

from airside.biometrics.index import GalleryIndex


def unit(n: int, d: int = 128, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_search_equals_brute_force(dtype: str) -> None:
    x, q = unit(2000), unit(5, seed=1)
    ix = GalleryIndex(128, dtype)  # type: ignore[arg-type]
    ix.add(np.arange(2000) + 100, x)
    hits = ix.search(q, 10)
    expected = np.argsort(-(q @ x.T), axis=1)[:, :10] + 100
    for row, exp in zip(hits, expected, strict=True):
        got = [h.template_id for h in row]
        assert got[:5] == list(exp[:5])
    tol = 1e-5 if dtype == "float32" else 2e-3
    assert hits[0][0].score == pytest.approx(float((q[0] @ x.T).max()), abs=tol)


def test_removed_templates_are_never_returned() -> None:
    x = unit(100)
    ix = GalleryIndex(128)
    ix.add(np.arange(100), x)
    assert ix.remove([7]) == 1
    assert all(h.template_id != 7 for h in ix.search(x[7:8], 100)[0])
    assert len(ix) == 99


def test_empty_index_returns_no_hits() -> None:
    assert GalleryIndex(128).search(unit(2), 5) == [[], []]


@pytest.mark.parametrize(("dtype", "limit"), [("float32", 520), ("float16", 300)])
def test_memory_per_template(dtype: str, limit: int) -> None:
    ix = GalleryIndex(128, dtype)  # type: ignore[arg-type]
    ix.add(np.arange(1000), unit(1000))
    assert ix.memory_bytes() / len(ix) <= limit
