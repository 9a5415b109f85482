"""The in-process gallery indexes: exact (FAISS flat, float32 or float16; an int8 scan proven
equal to float32), PQ with exact re-scoring, and HNSW (usearch).

Each kind answers the same Protocol; these tests hold every kind to it. Milvus is held to
it in tests/test_milvus_index.py (it needs a Milvus)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from airside.biometrics.index import (
    ExactIndex,
    GalleryIndex,
    HnswIndex,
    Int8ExactIndex,
    PqIndex,
    exact_index,
    kind_of,
)


def unit(n: int, d: int = 128, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


KINDS: dict[str, Callable[[], GalleryIndex]] = {
    "exact-flat": lambda: ExactIndex(128, "float32"),
    "exact-fp16": lambda: ExactIndex(128, "float16"),
    "exact-int8": lambda: Int8ExactIndex(128),
    "hnsw": lambda: HnswIndex(128),
    # Trained from 1,000 templates on (production: PQ_TRAIN_AT), so that the tests with
    # 2,000 templates search the codes, and those with fewer the exhaustive fallback.
    "pq": lambda: PqIndex(128, train_at=1000),
}
each_kind = pytest.mark.parametrize("kind", list(KINDS))


@each_kind
def test_search_finds_the_nearest_templates(kind: str) -> None:
    x, q = unit(2000), unit(5, seed=1)
    ix = KINDS[kind]()
    ix.add(np.arange(2000) + 100, x)
    hits = ix.search(q, 10)
    expected = np.argsort(-(q @ x.T), axis=1)[:, :10] + 100
    # On random (structureless) vectors an approximate index is held to the top-1 only;
    # its recall on face-like data is the last test's.
    top = 1 if kind in ("hnsw", "pq") else 5
    for row, exp in zip(hits, expected, strict=True):
        got = [h.template_id for h in row]
        assert got[:top] == list(exp[:top])
    tol = 1e-5 if kind == "exact-flat" else 2e-3  # fp16 vectors
    assert hits[0][0].score == pytest.approx(float((q[0] @ x.T).max()), abs=tol)


@each_kind
def test_the_index_says_what_kind_it_is(kind: str) -> None:
    ix = KINDS[kind]()
    assert ix.kind == kind
    assert kind_of(ix) == kind.split("-")[0]


@each_kind
def test_removed_templates_are_never_returned(kind: str) -> None:
    x = unit(100)
    ix = KINDS[kind]()
    ix.add(np.arange(100), x)
    assert ix.remove([7, 1000]) == 1  # only what was there counts
    assert all(h.template_id != 7 for h in ix.search(x[7:8], 100)[0])
    assert len(ix) == 99
    assert 7 not in set(ix.ids().tolist())


@each_kind
def test_adding_a_present_id_replaces_its_vector(kind: str) -> None:
    x = unit(50)
    ix = KINDS[kind]()
    ix.add(np.arange(50), x)
    ix.add(np.array([3]), x[40:41])  # template 3 now holds template 40's vector
    assert len(ix) == 50
    top = [h.template_id for h in ix.search(x[3:4], 3)[0]]
    assert 3 not in top[:1]
    assert set(ix.search(x[40:41], 2)[0][i].template_id for i in (0, 1)) == {3, 40}


@each_kind
def test_ids_and_max_id_follow_adds_and_removes(kind: str) -> None:
    ix = KINDS[kind]()
    ix.add(np.array([5, 9, 2]), unit(3))
    ix.remove([9])
    assert sorted(ix.ids().tolist()) == [2, 5]
    assert ix.max_id == 9  # what was synchronised, not what is left


@each_kind
def test_empty_index_returns_no_hits(kind: str) -> None:
    assert KINDS[kind]().search(unit(2), 5) == [[], []]


@each_kind
def test_k_larger_than_the_gallery_returns_every_template(kind: str) -> None:
    ix = KINDS[kind]()
    ix.add(np.arange(30), unit(30))
    hits = ix.search(unit(1, seed=3), 500)[0]
    assert sorted(h.template_id for h in hits) == list(range(30))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@each_kind
def test_drop_empties_the_index(kind: str) -> None:
    ix = KINDS[kind]()
    ix.add(np.arange(10), unit(10))
    ix.drop()
    assert len(ix) == 0


def test_one_id_per_vector() -> None:
    for make in KINDS.values():
        with pytest.raises(ValueError, match="one id per vector"):
            make().add(np.arange(3), unit(2))


@pytest.mark.parametrize(
    ("kind", "limit"), [("exact-flat", 520), ("exact-fp16", 300), ("exact-int8", 680), ("pq", 340)]
)
def test_memory_per_template(kind: str, limit: int) -> None:
    ix = KINDS[kind]()
    ix.add(np.arange(1000), unit(1000))
    assert ix.memory_bytes() / len(ix) <= limit


def _face_like(n: int, people: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = unit(people, seed=seed + 1)
    x = centres[rng.integers(0, people, n)] + 0.08 * rng.standard_normal((n, 128), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pq_finds_a_mate_among_near_isotropic_templates() -> None:
    """The case a graph fails (docs/scale.md): structureless distractors and a mate at
    0.6 similarity. The full quantised scan with exact re-scoring finds the mate and
    scores it exactly (to fp16)."""
    rng = np.random.default_rng(7)
    gallery = unit(30_000, seed=8)
    mates = rng.choice(30_000, 200, replace=False)
    noise = unit(200, seed=9)
    probes = 0.6 * gallery[mates] + 0.8 * noise
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    ix = PqIndex(128, train_at=5_000)
    ix.add(np.arange(30_000), gallery)
    assert ix.trained
    hits = ix.search(probes, 5)
    assert [h[0].template_id for h in hits] == mates.tolist()
    exact = np.einsum("ij,ij->i", probes, gallery[mates])
    assert [h[0].score for h in hits] == pytest.approx(exact.tolist(), abs=2e-3)


def test_pq_never_returns_a_removed_template_and_finds_one_added_again() -> None:
    x = unit(3000, seed=10)
    ix = PqIndex(128, train_at=1000)
    ix.add(np.arange(3000), x)
    ix.remove([5, 6])
    assert all(h.template_id not in (5, 6) for h in ix.search(x[5:7], 50)[0])
    ix.add(np.array([5]), x[100:101])  # id 5 again, with another vector
    top = [h.template_id for h in ix.search(x[100:101], 2)[0]]
    assert sorted(top) == [5, 100]
    assert 6 not in set(ix.ids().tolist()) and len(ix) == 2999


def test_pq_re_encodes_once_removals_pile_up() -> None:
    x = unit(5000, seed=11)
    ix = PqIndex(128, train_at=1000)
    ix.add(np.arange(5000), x)
    ix.remove(np.arange(40))
    assert ix.stale_codes == 40
    ix.remove(np.arange(40, 100))  # over 1% of the gallery: codes re-encoded
    assert ix.stale_codes == 0
    assert [h.template_id for h in ix.search(x[200:201], 1)[0]] == [200]


def _same_as_float32(ix: GalleryIndex, x: np.ndarray, q: np.ndarray, k: int) -> None:
    """``ix`` returns exactly what FAISS flat float32 returns: ids in order, scores to 1e-5."""
    ref = ExactIndex(x.shape[1], "float32")
    ref.add(np.arange(len(x)), x)
    for got, want in zip(ix.search(q, k), ref.search(q, k), strict=True):
        assert [h.template_id for h in got] == [h.template_id for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)


def test_int8_answers_exactly_what_float32_does_and_proves_most_answers() -> None:
    x = np.concatenate([_face_like(15_000, 3_000, seed=20), unit(5_000, seed=21)])
    q = np.concatenate([_face_like(150, 3_000, seed=20)[:100], unit(50, seed=22)])
    ix = Int8ExactIndex(128)
    for s in range(0, len(x), 4_000):  # grown in batches, as a gallery is
        ix.add(np.arange(s, min(s + 4_000, len(x))), x[s : s + 4_000])
    for k in (1, 10, 100):
        _same_as_float32(ix, x, q, k)
    assert ix.certified > 0.9 * (ix.certified + ix.fallbacks)
    assert 0 < ix.code_error < 0.01  # measured on the codes, not assumed


def test_int8_falls_back_to_the_float32_scan_when_the_proof_fails() -> None:
    """Hundreds of templates whose scores lie closer together than the codes can tell
    apart: the candidates cannot be proven to hold the best, so the float32 scan answers
    and the result is still the exact one."""
    rng = np.random.default_rng(23)
    b, u = unit(2, seed=24)
    u = u - (u @ b) * b
    u /= np.linalg.norm(u)
    theta = 0.5 + 1e-4 * rng.permutation(400)  # scores cos(theta), ~5e-5 apart
    ties = np.cos(theta)[:, None] * b + np.sin(theta)[:, None] * u
    x = np.concatenate([unit(3_000, seed=25), ties]).astype(np.float32)
    ix = Int8ExactIndex(128)
    ix.add(np.arange(len(x)), x)
    _same_as_float32(ix, x, b[None, :].astype(np.float32), 5)
    assert ix.fallbacks == 1 and ix.certified == 0


def test_int8_widens_its_codes_for_a_vector_outside_them_and_stays_exact() -> None:
    x = unit(2_000, seed=26)
    ix = Int8ExactIndex(128)
    ix.add(np.arange(2_000), x)
    err = ix.code_error
    spike = np.zeros((1, 128), np.float32)
    spike[0, 7] = 3.0  # far outside every code's range (and not a unit vector)
    ix.add(np.array([2_000]), spike)
    assert ix.code_error <= 3.0 / 255 + 1e-6 and ix.code_error > err
    both = np.concatenate([x, spike])
    _same_as_float32(ix, both, np.concatenate([x[:20], spike / 3.0]), 3)
    assert ix.search(spike / 3.0, 1)[0][0].template_id == 2_000


def test_the_exact_index_setting_names_its_kind() -> None:
    assert [exact_index(8, d).kind for d in ("float32", "float16", "int8")] == [
        "exact-flat",
        "exact-fp16",
        "exact-int8",
    ]


def test_hnsw_recall_on_clustered_faces_like_data() -> None:
    """Clustered unit vectors (people, and several photos each) at 20k: top-1 equals the
    exact index's for at least 99 in 100 probes (docs/scale.md measures it at 1M)."""
    rng = np.random.default_rng(4)
    centres = unit(5000, seed=5)
    x = centres[rng.integers(0, 5000, 20000)] + 0.08 * rng.standard_normal(
        (20000, 128), dtype=np.float32
    )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:300] + 0.05 * rng.standard_normal((300, 128), dtype=np.float32)
    exact, approx = ExactIndex(128), HnswIndex(128)
    for ix in (exact, approx):
        ix.add(np.arange(20000), x)
    want = [r[0].template_id for r in exact.search(q, 1)]
    got = [r[0].template_id for r in approx.search(q, 1)]
    assert np.mean(np.array(want) == np.array(got)) >= 0.99
