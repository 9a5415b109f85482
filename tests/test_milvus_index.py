"""MilvusIndex against a real milvus-lite file: same answers as ExactIndex, upserts,
deletes that reach the backend, persistence, and the lazy import."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("milvus_lite", reason="milvus-lite (a local-file Milvus) is not installed")

from airside.biometrics.index import ExactIndex
from airside.biometrics.milvus_index import (
    MilvusIndex,
    collections_with_prefix,
    connect,
    disconnect,
)

DIM = 64
_names = itertools.count()


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One milvus-lite file for the module (starting one costs ~1 s)."""
    uri = str(tmp_path_factory.mktemp("milvus") / "gallery.db")
    connect(uri)
    yield uri
    disconnect(uri)


@pytest.fixture
def client(db: str) -> Any:
    return connect(db)


@pytest.fixture
def index(client: Any) -> MilvusIndex:
    """A fresh collection per test."""
    return MilvusIndex(client, f"t_{next(_names)}", DIM)


def test_top_k_equals_exact_search_on_2000_unit_vectors(index: MilvusIndex) -> None:
    rng = np.random.default_rng(1)
    x = unit(rng, 2000)
    ids = np.arange(1, 2001, dtype=np.int64)
    exact = ExactIndex(DIM)
    exact.add(ids, x)
    index.add(ids, x)
    queries = unit(rng, 20)
    for k in (1, 10):
        got, want = index.search(queries, k), exact.search(queries, k)
        for g, w in zip(got, want, strict=True):
            assert [h.template_id for h in g] == [h.template_id for h in w]
            np.testing.assert_allclose(
                [h.score for h in g], [h.score for h in w], atol=1e-4, rtol=0
            )


def test_adding_an_existing_id_replaces_its_vector(index: MilvusIndex) -> None:
    rng = np.random.default_rng(2)
    x = unit(rng, 50)
    index.add(np.arange(50), x)
    new = unit(rng, 1)
    index.add(np.array([7]), new)
    assert len(index) == 50
    best = index.search(new, 1)[0][0]
    assert best.template_id == 7
    assert best.score == pytest.approx(1.0, abs=1e-5)
    old = index.search(x[7:8], 50)[0]  # the old vector is gone: nothing scores ~1 for it
    assert max(h.score for h in old) < 0.9


def test_remove_deletes_from_search_and_from_the_backend(client: Any, index: MilvusIndex) -> None:
    rng = np.random.default_rng(3)
    x = unit(rng, 30)
    index.add(np.arange(1, 31), x)
    assert index.remove([5, 6]) == 2
    hits = index.search(x[4:6], 30)
    assert all(h.template_id not in (5, 6) for row in hits for h in row)
    assert client.query(index.collection, ids=[5, 6], output_fields=["id"]) == []


def test_remove_counts_only_ids_that_were_present(index: MilvusIndex) -> None:
    index.add(np.array([1, 2, 3]), unit(np.random.default_rng(4), 3))
    assert index.remove([2, 99, 100]) == 1
    assert index.remove([2]) == 0
    assert index.remove([]) == 0


def test_len_and_ids_follow_adds_and_removes(index: MilvusIndex) -> None:
    rng = np.random.default_rng(5)
    assert len(index) == 0
    assert index.ids().size == 0
    index.add(np.arange(10, 20), unit(rng, 10))
    index.add(np.arange(15, 25), unit(rng, 10))  # 15..19 replaced
    index.remove([10, 11])
    assert len(index) == 13
    ids = index.ids()
    assert ids.dtype == np.int64
    assert sorted(ids.tolist()) == list(range(12, 25))
    assert index.max_id == 24
    assert index.memory_bytes() == 13 * (DIM * 4 + 8)


def test_rows_persist_after_the_client_is_closed_and_reopened(tmp_path: Path) -> None:
    uri = str(tmp_path / "persist" / "g.db")
    x = unit(np.random.default_rng(6), 20)
    MilvusIndex(connect(uri), "gallery", DIM).add(np.arange(1, 21), x)
    disconnect(uri)
    again = MilvusIndex(connect(uri), "gallery", DIM)
    try:
        assert len(again) == 20
        assert again.search(x[3:4], 1)[0][0].template_id == 4
    finally:
        disconnect(uri)
    assert (tmp_path / "persist").stat().st_mode & 0o777 == 0o700


def test_drop_removes_the_collection(client: Any, index: MilvusIndex) -> None:
    index.add(np.array([1]), unit(np.random.default_rng(7), 1))
    index.drop()
    assert not client.has_collection(index.collection)


def test_a_collection_of_another_dim_is_refused(client: Any, index: MilvusIndex) -> None:
    with pytest.raises(ValueError, match=f"{DIM}-d"):
        MilvusIndex(client, index.collection, DIM * 2)


def test_mismatched_ids_and_vectors_are_refused(index: MilvusIndex) -> None:
    with pytest.raises(ValueError, match="one id per vector"):
        index.add(np.arange(3), unit(np.random.default_rng(8), 2))


def test_k_larger_than_the_collection_returns_every_row_best_first(index: MilvusIndex) -> None:
    rng = np.random.default_rng(9)
    index.add(np.arange(1, 6), unit(rng, 5))
    hits = index.search(unit(rng, 1), 100)[0]
    assert sorted(h.template_id for h in hits) == [1, 2, 3, 4, 5]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_searching_an_empty_collection_gives_no_hits_per_query(index: MilvusIndex) -> None:
    assert index.search(unit(np.random.default_rng(10), 3), 5) == [[], [], []]


def test_collections_with_prefix_lists_a_gallerys_collections(client: Any) -> None:
    MilvusIndex(client, "gallery_9_aaaa", DIM)
    MilvusIndex(client, "gallery_9_bbbb", DIM)
    MilvusIndex(client, "gallery_90_cccc", DIM)
    assert collections_with_prefix(client, "gallery_9_") == ["gallery_9_aaaa", "gallery_9_bbbb"]


def test_connect_returns_the_same_client_for_the_same_uri(db: str) -> None:
    assert connect(db) is connect(db)


def test_importing_the_module_does_not_import_pymilvus() -> None:
    code = "import airside.biometrics.milvus_index, sys; assert 'pymilvus' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
