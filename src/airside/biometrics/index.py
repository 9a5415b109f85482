"""Search over one gallery's templates: one Protocol, three kinds of index behind it.

- ``ExactIndex`` (``exact-flat`` / ``exact-fp16``): every template scored, in a FAISS
  flat matrix (float32), or a scalar-quantised fp16 one (half the memory, and faster on
  one core since the scan is memory-bound). Right for a flight's manifest; the reference
  every other kind is measured against.
- ``Int8ExactIndex`` (``exact-int8``): the same answers as ``exact-flat``, found by an
  8-bit scan and proven per query (falling back to the float32 scan when the proof fails):
  the exact tier of a national gallery (docs/scale.md).
- ``PqIndex`` (``pq``): every template scored on a 32-byte product-quantised code (FAISS
  fast-scan, 4-bit), and the best few hundred re-scored on their fp16 vectors. Still a full
  scan, so unlike a graph its recall does not collapse on near-isotropic face embeddings
  (docs/scale.md): 2-3 ms at 1M on one core. Online insert and delete.
- ``HnswIndex`` (``hnsw``): a navigable small-world graph (usearch, fp16 vectors) that
  visits a few thousand templates instead of all of them. Inserts and deletes online, no
  rebuild; but on near-isotropic face embeddings its recall falls with size (measured in
  docs/scale.md), so it is only chosen explicitly.
- ``MilvusIndex`` (``milvus``, ``biometrics/milvus_index.py``): the same operations on a
  Milvus collection, for galleries larger than one machine's memory.

Whatever answers, the open-set decision above it (thresholds, candidates per subject,
fair calibration) is the same; only ``kind`` differs, and it is audited. Labels are
template ids, so an index holds nothing but transformed vectors and ids.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal, Protocol

import faiss
import numpy as np

IndexKind = Literal["exact", "pq", "hnsw", "milvus"]
INDEX_KINDS: tuple[IndexKind, ...] = ("exact", "pq", "hnsw", "milvus")


@dataclass(frozen=True)
class Hit:
    template_id: int
    score: float


class GalleryIndex(Protocol):
    """What a gallery's search needs. ``add`` is an upsert (an id already present is
    replaced); ``revision`` and ``max_id`` are the owner's record of what it last
    synchronised from the store (``services.app.Airside.index_with_transform``)."""

    kind: str
    dim: int
    revision: int
    max_id: int

    def __len__(self) -> int: ...

    def add(self, template_ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, template_ids: np.ndarray | list[int]) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]: ...

    def ids(self) -> np.ndarray: ...

    def memory_bytes(self) -> int: ...

    def drop(self) -> None: ...


def kind_of(index: GalleryIndex) -> str:
    """The family an index belongs to (``exact``, ``hnsw``, ``milvus``): what a gallery
    or the installation chooses; ``index.kind`` names the variant, as audited."""
    return "exact" if index.kind.startswith("exact") else index.kind


def _ids(template_ids: np.ndarray | list[int]) -> np.ndarray:
    return np.ascontiguousarray(template_ids, dtype=np.int64).reshape(-1)


def _vectors(vectors: np.ndarray, dim: int, n: int) -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
    if x.shape[0] != n:
        raise ValueError("one id per vector")
    return x


class ExactIndex:
    """Exhaustive inner-product search (FAISS flat)."""

    def __init__(self, dim: int, dtype: Literal["float32", "float16"] = "float32") -> None:
        self.dim = dim
        self.dtype = dtype
        base: faiss.Index
        if dtype == "float32":
            base = faiss.IndexFlatIP(dim)
            self.kind = "exact-flat"
        elif dtype == "float16":
            base = faiss.IndexScalarQuantizer(
                dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
            )
            self.kind = "exact-fp16"
        else:
            raise ValueError(f"unknown index dtype {dtype!r}")
        self._index = faiss.IndexIDMap(base)
        self._lock = threading.RLock()
        self.revision = -1
        self.max_id = 0

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, template_ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = _ids(template_ids)
        x = _vectors(vectors, self.dim, ids.shape[0])
        with self._lock:
            if ids.size and int(ids.min()) <= self.max_id:  # may be present: replace
                self._index.remove_ids(faiss.IDSelectorBatch(ids))
            self._index.add_with_ids(x, ids)
            if ids.size:
                self.max_id = max(self.max_id, int(ids.max()))

    def remove(self, template_ids: np.ndarray | list[int]) -> int:
        ids = _ids(template_ids)
        if ids.size == 0:
            return 0
        with self._lock:
            return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-``k`` templates per query, best first."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            n = len(self)
            if n == 0:
                return [[] for _ in range(q.shape[0])]
            scores, ids = self._index.search(q, min(k, n))
        return [
            [Hit(int(i), float(s)) for s, i in zip(srow, irow, strict=True) if i >= 0]
            for srow, irow in zip(scores, ids, strict=True)
        ]

    def ids(self) -> np.ndarray:
        with self._lock:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def memory_bytes(self) -> int:
        """Bytes held for vectors and ids (what grows with the gallery)."""
        base = faiss.downcast_index(self._index.index)
        code_size = int(base.sa_code_size())
        return len(self) * (code_size + 8)

    def drop(self) -> None:
        with self._lock:
            self._index.reset()


# The int8 scan of ``Int8ExactIndex``: each wanted result brings INT8_POOL_FACTOR
# candidates to the exact re-scoring, at least INT8_POOL_MIN; the proof (below) decides
# whether they are enough. INT8_SLACK covers float32 rounding in FAISS's scan.
INT8_POOL_FACTOR = 4
INT8_POOL_MIN = 64
INT8_SLACK = 1e-4


class Int8ExactIndex:
    """Exact search at int8 speed, proven per query (``exact-int8``).

    Every template is scored on an 8-bit code (FAISS uniform scalar quantiser: 128 bytes
    at 128-d; on SFace at 1M p50 10.6 ms against float32's 20.3 on one core), the best few
    dozen are re-scored on their float32 vectors, and the answer is returned only when it
    is provably the exhaustive one: a template's code score differs from its true score by at most
    ``|q|_1 * e`` (``e`` the largest coordinate error of any code made, measured when it was
    made, not assumed), so a template outside the candidates, whose code score is at most
    the last candidate's, cannot beat the k-th re-scored one when ``last + |q|_1 * e`` is
    below it. When that does not hold (near-ties, a wide ``k``), the query is answered by
    the float32 scan instead. Either way the result equals ``exact-flat``'s; ``certified``
    and ``fallbacks`` count which way each query went. Where scores crowd together (dlib's
    templates) the proof often fails and both scans are paid: measured in docs/scale.md."""

    kind = "exact-int8"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._vectors = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))  # the truth
        self._codes: faiss.IndexIDMap | None = None
        self._range = 0.0  # the codes cover [-range, range] in every coordinate
        self._error = 0.0  # the largest |x_i - decoded x_i| of any code made
        self._lock = threading.RLock()
        self.certified = 0
        self.fallbacks = 0
        self.revision = -1
        self.max_id = 0

    def __len__(self) -> int:
        return int(self._vectors.ntotal)

    @property
    def code_error(self) -> float:
        return self._error

    def _encode(self, ids: np.ndarray, x: np.ndarray) -> None:
        """Add codes of ``x``, widening the codes' range first (and re-encoding every
        stored vector) when ``x`` falls outside it; measures each code's error."""
        assert self._codes is not None
        sq = faiss.downcast_index(self._codes.index)
        decoded = sq.sa_decode(sq.sa_encode(x))
        self._error = max(self._error, float(np.max(np.abs(decoded - x), initial=0.0)))
        self._codes.add_with_ids(x, ids)

    def _retrain(self, wanted: float) -> None:
        """Codes over [-wanted, wanted]; every stored vector re-encoded. The range grows
        by at least a quarter each time, so a growing gallery re-encodes a few times."""
        self._range = max(wanted, 1.25 * self._range)
        sq = faiss.IndexScalarQuantizer(
            self.dim, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT
        )
        sq.train(np.array([[-self._range] * self.dim, [self._range] * self.dim], np.float32))
        self._codes = faiss.IndexIDMap(sq)
        self._error = 0.0
        n = len(self)
        if n:
            ids = faiss.vector_to_array(self._vectors.id_map).astype(np.int64)
            self._encode(ids, self._vectors.index.reconstruct_n(0, n))

    def add(self, template_ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = _ids(template_ids)
        x = _vectors(vectors, self.dim, ids.shape[0])
        if ids.size == 0:
            return
        with self._lock:
            if int(ids.min()) <= self.max_id:  # may be present: replace
                self.remove(ids)
            self._vectors.add_with_ids(x, ids)
            reach = float(np.max(np.abs(x)))
            if self._codes is None or reach > self._range:
                self._retrain(reach)  # encodes x with the rest
            else:
                self._encode(ids, x)
            self.max_id = max(self.max_id, int(ids.max()))

    def remove(self, template_ids: np.ndarray | list[int]) -> int:
        ids = _ids(template_ids)
        if ids.size == 0:
            return 0
        with self._lock:
            removed = int(self._vectors.remove_ids(faiss.IDSelectorBatch(ids)))
            if self._codes is not None and removed:
                self._codes.remove_ids(faiss.IDSelectorBatch(ids))
            return removed

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            n = len(self)
            if n == 0 or self._codes is None:
                return [[] for _ in range(q.shape[0])]
            want = min(k, n)
            pool = min(n, max(want * INT8_POOL_FACTOR, INT8_POOL_MIN))
            approx, candidates = self._codes.search(q, pool)
            out: list[list[Hit]] = []
            for row, found, near in zip(q, candidates, approx, strict=True):
                keep = found >= 0
                cand, near = found[keep], near[keep]
                exact = self._vectors.reconstruct_batch(cand) @ row
                best = np.argsort(-exact, kind="stable")[:want]
                bound = float(np.abs(row).sum()) * self._error + INT8_SLACK
                if cand.size >= n or float(near[-1]) + bound < float(exact[best[-1]]):
                    self.certified += 1
                    out.append([Hit(int(cand[j]), float(exact[j])) for j in best])
                    continue
                self.fallbacks += 1
                scores, ids = self._vectors.search(row.reshape(1, -1), want)
                out.append([Hit(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True)])
            return out

    def ids(self) -> np.ndarray:
        with self._lock:
            return faiss.vector_to_array(self._vectors.id_map).astype(np.int64)

    def memory_bytes(self) -> int:
        """float32 vectors, 8-bit codes, both id maps (IDMap2 keeps a reverse map too)."""
        return len(self) * (4 * self.dim + self.dim + 8 + 8 + 16)

    def drop(self) -> None:
        with self._lock:
            self._vectors.reset()
            self._codes = None
            self._range = self._error = 0.0


def exact_index(dim: int, dtype: Literal["float32", "float16", "int8"]) -> GalleryIndex:
    """The exact index ``AIRSIDE_INDEX_DTYPE`` names."""
    if dtype == "int8":
        return Int8ExactIndex(dim)
    return ExactIndex(dim, dtype)


# Product quantisation: 4-bit codes, one sub-quantiser per two dimensions (32 bytes a
# template at 128-d). Measured at 1M on LFW mates among fitted distractors (docs/scale.md):
# SFace recall@1 0.997 (mated 1.000) with 256 candidates re-scored, where one sub-quantiser
# per four dimensions gave 0.85 and per two with 1,024 candidates 0.9995. Each wanted
# result brings PQ_RESCORE_FACTOR candidates to the exact re-scoring, at least
# PQ_RESCORE_MIN. Codebooks are trained once the gallery holds PQ_TRAIN_AT templates
# (before that every search is exhaustive on the fp16 vectors).
PQ_DIMS_PER_SUBQUANTIZER = 2
PQ_RESCORE_FACTOR = 8
PQ_RESCORE_MIN = 256
PQ_TRAIN_AT = 20_000
PQ_TRAIN_SAMPLE = 100_000
PQ_STALE_SHARE = 0.01


def _subquantizers(dim: int) -> int:
    want = max(1, dim // PQ_DIMS_PER_SUBQUANTIZER)
    return max(m for m in range(1, want + 1) if dim % m == 0)


class PqIndex:
    """Fast-scan product quantisation with exact re-scoring (FAISS).

    The fp16 vectors, keyed by template id, are the truth; 4-bit PQ codes of them are
    scanned in full (SIMD lookup tables: a million codes in about a millisecond), and the
    best ``max(k * PQ_RESCORE_FACTOR, PQ_RESCORE_MIN)`` candidates are re-scored exactly on
    the fp16 vectors. A template is missed only if its quantised score falls out of those
    hundreds, which a mate far above the crowd of impostors does not (docs/scale.md).

    A removal takes the vector out at once, so a removed template can never be returned.
    Its code is not removed in place: FAISS 1.15's fast-scan index, after a removal, loses
    some of the codes added next (seen here for most gallery sizes tried, erratically), so
    stale codes are skipped and the codes are re-encoded from the vectors (not re-trained;
    ~3 s at 1M) once they are ``PQ_STALE_SHARE`` of the gallery."""

    kind = "pq"

    def __init__(self, dim: int, *, train_at: int = PQ_TRAIN_AT) -> None:
        self.dim = dim
        self.train_at = max(train_at, 1_000)  # 16 centroids per sub-quantiser need data
        self._vectors = faiss.IndexIDMap2(
            faiss.IndexScalarQuantizer(
                dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
            )
        )
        self._trained: faiss.Index | None = None  # the empty, trained PQ
        self._codes: faiss.IndexIDMap | None = None
        self._stale: set[int] = set()  # ids whose code no longer matches a vector
        self._lock = threading.RLock()
        self.revision = -1
        self.max_id = 0

    @property
    def trained(self) -> bool:
        return self._codes is not None

    @property
    def stale_codes(self) -> int:
        return len(self._stale)

    def __len__(self) -> int:
        return int(self._vectors.ntotal)

    def _stored(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        ids = faiss.vector_to_array(self._vectors.id_map).astype(np.int64)
        return ids, self._vectors.index.reconstruct_n(0, n)

    def _encode_all(self) -> None:
        """(Re-)encode every stored vector with the trained quantiser; stale codes go."""
        assert self._trained is not None
        ids, stored = self._stored()
        codes = faiss.IndexIDMap(faiss.clone_index(self._trained))
        codes.add_with_ids(np.ascontiguousarray(stored, dtype=np.float32), ids)
        self._codes = codes
        self._stale = set()

    def _train(self) -> None:
        ids, stored = self._stored()
        rng = np.random.default_rng(0)
        sample = stored[rng.choice(len(ids), min(len(ids), PQ_TRAIN_SAMPLE), replace=False)]
        pq = faiss.IndexPQFastScan(
            self.dim, _subquantizers(self.dim), 4, faiss.METRIC_INNER_PRODUCT
        )
        pq.train(np.ascontiguousarray(sample, dtype=np.float32))
        self._trained = pq
        self._encode_all()

    def add(self, template_ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = _ids(template_ids)
        x = _vectors(vectors, self.dim, ids.shape[0])
        if ids.size == 0:
            return
        with self._lock:
            if int(ids.min()) <= self.max_id:  # may be present: replace
                self.remove(ids)
            self._vectors.add_with_ids(x, ids)
            if self._codes is not None:
                self._codes.add_with_ids(x, ids)
                # An id added again has a fresh code; its old one is still stale, and the
                # search ignores duplicates, so it stays counted until re-encoding.
            elif len(self) >= self.train_at:
                self._train()
            self.max_id = max(self.max_id, int(ids.max()))

    def remove(self, template_ids: np.ndarray | list[int]) -> int:
        ids = _ids(template_ids)
        if ids.size == 0:
            return 0
        with self._lock:
            removed = int(self._vectors.remove_ids(faiss.IDSelectorBatch(ids)))
            if self._codes is not None and removed:
                self._stale.update(int(i) for i in ids)
                if len(self._stale) > PQ_STALE_SHARE * max(len(self), 1):
                    self._encode_all()
            return removed

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            n = len(self)
            if n == 0:
                return [[] for _ in range(q.shape[0])]
            want = min(k, n)
            if self._codes is None:  # not trained yet: exhaustive on the fp16 vectors
                scores, ids = self._vectors.search(q, want)
                return [
                    [Hit(int(i), float(s)) for s, i in zip(sr, ir, strict=True) if i >= 0]
                    for sr, ir in zip(scores, ids, strict=True)
                ]
            pool = min(int(self._codes.ntotal), max(want * PQ_RESCORE_FACTOR, PQ_RESCORE_MIN))
            _, candidates = self._codes.search(q, pool + len(self._stale))
            out: list[list[Hit]] = []
            for row, found in zip(q, candidates, strict=True):
                found = found[found >= 0]
                _, first = np.unique(found, return_index=True)
                cand = found[np.sort(first)]
                if self._stale:
                    removed = np.fromiter(self._stale, dtype=np.int64)
                    live = np.isin(cand, removed, invert=True)
                    # an id removed and added again is live (it has a vector)
                    again = ~live
                    if again.any():
                        live[again] = [self._has(int(i)) for i in cand[again]]
                    cand = cand[live]
                exact = self._vectors.reconstruct_batch(cand) @ row
                best = np.argsort(-exact, kind="stable")[:want]
                out.append([Hit(int(cand[j]), float(exact[j])) for j in best])
            return out

    def _has(self, template_id: int) -> bool:
        try:
            self._vectors.reconstruct(template_id)
        except RuntimeError:
            return False
        return True

    def ids(self) -> np.ndarray:
        with self._lock:
            return faiss.vector_to_array(self._vectors.id_map).astype(np.int64)

    def memory_bytes(self) -> int:
        """Codes, fp16 vectors and both id maps (IDMap2 keeps a reverse map too)."""
        code = 0
        if self._codes is not None:
            code = int(self._codes.index.sa_code_size()) + 8
        return len(self) * (code + 2 * self.dim + 8 + 16)

    def drop(self) -> None:
        with self._lock:
            self._vectors.reset()
            self._codes = None
            self._trained = None
            self._stale = set()


# Graph parameters. Measured on LFW mates among distractors fitted to face embeddings
# (docs/scale.md): at M 16 / search breadth 64 the graph lost the mate for most probes at a
# million (SFace recall@1 0.24); M 32 with breadth 512 held 0.99 at 100k (p50 ~3.6 ms) and
# is still short of it at 1M. Hence ``auto`` never picks HNSW; these are its best measured.
HNSW_CONNECTIVITY = 32
HNSW_EXPANSION_ADD = 256
HNSW_EXPANSION_SEARCH = 512


class HnswIndex:
    """Approximate inner-product search on an HNSW graph (usearch; fp16 vectors).

    Chosen over hnswlib and FAISS's HNSW by measurement (same recall and speed at half
    hnswlib's memory, and unlike FAISS's graph it deletes in place) and because it is
    actively maintained. Removing a template unlinks it from the graph at once; the
    search asks for ``max(k, expansion)`` neighbours, so a wide top-k stays exact-ranked
    among what the graph visits."""

    kind = "hnsw"

    def __init__(
        self,
        dim: int,
        *,
        connectivity: int = HNSW_CONNECTIVITY,
        expansion_add: int = HNSW_EXPANSION_ADD,
        expansion_search: int = HNSW_EXPANSION_SEARCH,
        dtype: Literal["f32", "f16", "i8"] = "f16",
        threads: int = 0,
    ) -> None:
        from usearch.index import Index

        self.dim = dim
        self.expansion_search = expansion_search
        self._threads = threads  # for bulk adds; 0: every core
        self._index = Index(
            ndim=dim,
            metric="ip",
            dtype=dtype,
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )
        self._lock = threading.RLock()
        self.revision = -1
        self.max_id = 0

    def __len__(self) -> int:
        return len(self._index)

    def add(self, template_ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = _ids(template_ids)
        x = _vectors(vectors, self.dim, ids.shape[0])
        if ids.size == 0:
            return
        with self._lock:
            if int(ids.min()) <= self.max_id:  # may be present: replace
                present = np.asarray(self._index.contains(ids), dtype=bool).reshape(-1)
                if present.any():
                    self._index.remove(ids[present])
            self._index.add(ids, x, threads=self._threads)
            self.max_id = max(self.max_id, int(ids.max()))

    def remove(self, template_ids: np.ndarray | list[int]) -> int:
        ids = _ids(template_ids)
        if ids.size == 0:
            return 0
        with self._lock:
            present = np.asarray(self._index.contains(ids), dtype=bool).reshape(-1)
            if not present.any():
                return 0
            return int(np.sum(self._index.remove(ids[present])))

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            n = len(self)
            if n == 0:
                return [[] for _ in range(q.shape[0])]
            want = min(k, n)
            # A wide top-k (a fair calibration's re-ranking) widens the search with it.
            self._index.expansion_search = max(self.expansion_search, want)  # type: ignore[misc]
            found = self._index.search(q, want, threads=1)
        keys = np.asarray(found.keys).reshape(q.shape[0], -1)
        dist = np.asarray(found.distances).reshape(q.shape[0], -1)
        counts = np.asarray(getattr(found, "counts", [keys.shape[1]])).reshape(-1)
        return [
            # usearch's "ip" distance is 1 - inner product.
            [Hit(int(i), float(1.0 - d)) for i, d in zip(krow[:c], drow[:c], strict=True)]
            for krow, drow, c in zip(keys, dist, counts, strict=True)
        ]

    def ids(self) -> np.ndarray:
        with self._lock:
            return np.fromiter(iter(self._index.keys), dtype=np.int64, count=len(self))

    def memory_bytes(self) -> int:
        """Bytes the graph and its vectors take (usearch's own count)."""
        return int(self._index.memory_usage)

    def drop(self) -> None:
        with self._lock:
            self._index.reset()  # type: ignore[no-untyped-call]
