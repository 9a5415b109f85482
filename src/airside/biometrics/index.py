"""Exact in-memory search over one gallery's templates.

A gallery's templates live in one contiguous matrix inside a FAISS flat index (float32),
or a scalar-quantised fp16 one (half the memory, and faster on one core since the scan is
memory-bound). Both are exhaustive: every template is scored. Labels are template ids, so
the index holds nothing but vectors and ids (no per-template Python objects).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np


@dataclass(frozen=True)
class Hit:
    template_id: int
    score: float


class GalleryIndex:
    def __init__(self, dim: int, dtype: Literal["float32", "float16"] = "float32") -> None:
        self.dim = dim
        self.dtype = dtype
        base: faiss.Index
        if dtype == "float32":
            base = faiss.IndexFlatIP(dim)
        elif dtype == "float16":
            base = faiss.IndexScalarQuantizer(
                dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
            )
        else:
            raise ValueError(f"unknown index dtype {dtype!r}")
        self._index = faiss.IndexIDMap(base)
        self._lock = threading.RLock()
        # What the owner last synchronised from the store (see services.app.Airside.index).
        self.revision = -1
        self.max_id = 0

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, template_ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(template_ids, dtype=np.int64).reshape(-1)
        x = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if ids.shape[0] != x.shape[0]:
            raise ValueError("one id per vector")
        with self._lock:
            self._index.add_with_ids(x, ids)
            if ids.size:
                self.max_id = max(self.max_id, int(ids.max()))

    def remove(self, template_ids: np.ndarray | list[int]) -> int:
        ids = np.ascontiguousarray(template_ids, dtype=np.int64).reshape(-1)
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

    def memory_bytes(self) -> int:
        """Bytes held for vectors and ids (what grows with the gallery)."""
        base = faiss.downcast_index(self._index.index)
        code_size = int(base.sa_code_size())
        return len(self) * (code_size + 8)
