"""A gallery index in a Milvus collection, for galleries larger than one machine's memory.

Same operations as ``ExactIndex`` and ``HnswIndex`` (``biometrics/index.py``); the
collection holds only template ids and the gallery's transformed vectors (no names, no
subjects), so what a stolen Milvus volume reveals is bounded (docs/template_protection.md).

pymilvus is imported lazily: it costs ~0.5 s and pulls pandas, and most deployments never
use Milvus. ``connect("…/x.db")`` gives a milvus-lite file (tests, one machine);
``connect("https://…", token)`` a Milvus server or cluster.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np

from airside.biometrics.index import Hit, _ids, _vectors
from airside.errors import AirsideError

if TYPE_CHECKING:
    from pymilvus import MilvusClient

# Milvus refuses a search whose limit exceeds 16,384 (its topk cap); a wider top-k is
# cut to that many hits.
MILVUS_MAX_TOPK = 16_384
# Rows per upsert request: well under Milvus's default 64 MB gRPC message limit at any
# face-embedding dim, and small enough to keep one request's latency short.
UPSERT_BATCH = 2_000
# Ids per delete/presence query: keeps the ``id in [...]`` expression short.
ID_BATCH = 10_000
# An add of at least this many rows (a bulk load) is flushed: sealed segments are indexed,
# while unflushed rows are scanned one by one (milvus-lite at 10k unflushed rows: 0.5 s
# per search or count; flushed: 20-30 ms). Small adds are not, since every flush makes a
# small segment that the server must later compact.
FLUSH_ROWS = 2_000

# HNSW, with the widest parameters measured for ``HnswIndex`` (docs/scale.md: narrower
# graphs lose mates among a million face embeddings). It is what a real cluster serves
# from memory, and milvus-lite builds the same graph (FAISS), so tests exercise the
# production path. At 100M, measure recall on the deployment's own templates first
# (make bench-scale); milvus-lite has no DISKANN; pass it on a cluster.
DEFAULT_INDEX_TYPE = "HNSW"
DEFAULT_INDEX_PARAMS: dict[str, Any] = {"M": 32, "efConstruction": 256}
DEFAULT_SEARCH_EF = 512

_ID = "id"
_VECTOR = "v"

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def _answering() -> Iterator[None]:
    """A Milvus that is down, refuses the token or times out is one clear, retryable error
    (``index_unavailable``, HTTP 503), not a client library's traceback."""
    try:
        yield
    except AirsideError:
        raise
    except Exception as e:
        from pymilvus.exceptions import MilvusException

        if not isinstance(e, MilvusException | ConnectionError | TimeoutError | OSError):
            raise
        reason = getattr(e, "message", None) or str(e)
        raise AirsideError(
            f"the gallery's Milvus index did not answer ({reason[:200]}); try again",
            code="index_unavailable",
        ) from None


def _answered(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        with _answering():
            return method(*args, **kwargs)

    return call


_clients: dict[tuple[str, str | None], MilvusClient] = {}
_clients_lock = threading.Lock()


def connect(uri: str, token: str | None = None) -> MilvusClient:
    """One client per (uri, token), shared by every gallery in the process: a client holds
    a gRPC channel (or, for milvus-lite, a server), too costly to open per gallery."""
    key = (uri, token)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            from pymilvus import MilvusClient

            if uri.endswith(".db"):  # a milvus-lite file: it holds template vectors
                Path(uri).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with _answering():
                client = MilvusClient(uri=uri, token=token or "", timeout=10)
            _clients[key] = client
        return client


def disconnect(uri: str, token: str | None = None) -> None:
    """Close and forget the cached client (tests; a milvus-lite file is opened once)."""
    with _clients_lock:
        client = _clients.pop((uri, token), None)
    if client is not None:
        client.close()


@_answered
def collections_with_prefix(client: MilvusClient, prefix: str) -> list[str]:
    """Collections whose name starts with ``prefix``: a gallery's old ones after re-keying."""
    return sorted(str(name) for name in client.list_collections() if str(name).startswith(prefix))


def _search_params(index_type: str, params: Mapping[str, Any], limit: int) -> dict[str, Any]:
    kind = index_type.upper()
    if kind in ("HNSW", "HNSW_SQ", "HNSW_PQ", "HNSW_PRQ"):
        # HNSW needs ef >= limit; a wide top-k widens the search as HnswIndex does.
        ef = max(int(params.get("ef", DEFAULT_SEARCH_EF)), limit)
        return {"metric_type": "IP", "params": {"ef": ef}}
    if kind.startswith("IVF"):
        return {"metric_type": "IP", "params": {"nprobe": int(params.get("nprobe", 16))}}
    if kind == "DISKANN":
        size = max(int(params.get("search_list", 100)), limit)
        return {"metric_type": "IP", "params": {"search_list": size}}
    return {"metric_type": "IP", "params": {}}


class MilvusIndex:
    """Inner-product search on a Milvus collection (``id`` INT64 primary key, ``v``
    FLOAT_VECTOR).

    The collection is created with Strong consistency, so an upsert or delete is seen by
    the very next search, count or query: identification must never match a template that
    was just erased. ``params`` holds build parameters and, under ``ef``/``nprobe``/
    ``search_list``, the search breadth."""

    kind = "milvus"

    @_answered
    def __init__(
        self,
        client: MilvusClient,
        collection: str,
        dim: int,
        *,
        index_type: str = DEFAULT_INDEX_TYPE,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.dim = dim
        self.collection = collection
        self.index_type = index_type
        self.params: dict[str, Any] = dict(
            DEFAULT_INDEX_PARAMS if params is None and index_type == DEFAULT_INDEX_TYPE else {}
        )
        self.params.update(params or {})
        self._client = client
        self._lock = threading.RLock()
        self.revision = -1
        self.max_id = 0
        with self._lock:
            if client.has_collection(collection):
                found = self._collection_dim()
                if found != dim:
                    raise ValueError(
                        f"Milvus collection {collection!r} holds {found}-d vectors, "
                        f"not {dim}-d: it was built by another embedder; drop it or use "
                        "another collection name"
                    )
            else:
                self._create()
            # A collection reopened (new process, milvus-lite restart) is not loaded.
            client.load_collection(collection)

    def _collection_dim(self) -> int | None:
        info = self._client.describe_collection(self.collection)
        for field in info.get("fields", []):
            if field.get("name") == _VECTOR:
                return int(field.get("params", {}).get("dim", -1))
        return None

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(_ID, DataType.INT64, is_primary=True)
        schema.add_field(_VECTOR, DataType.FLOAT_VECTOR, dim=self.dim)
        build = {k: v for k, v in self.params.items() if k not in ("ef", "nprobe", "search_list")}
        index_params = self._client.prepare_index_params()
        index_params.add_index(
            field_name=_VECTOR, index_type=self.index_type, metric_type="IP", params=build
        )
        self._client.create_collection(
            self.collection,
            schema=schema,
            index_params=index_params,
            consistency_level="Strong",
        )

    @_answered
    def __len__(self) -> int:
        with self._lock:
            rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    @_answered
    def add(self, template_ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = _ids(template_ids)
        x = _vectors(vectors, self.dim, ids.shape[0])
        if ids.size == 0:
            return
        with self._lock:
            for start in range(0, ids.size, UPSERT_BATCH):
                end = start + UPSERT_BATCH
                rows = [
                    {_ID: int(i), _VECTOR: v}
                    for i, v in zip(ids[start:end].tolist(), x[start:end], strict=True)
                ]
                self._client.upsert(self.collection, rows)
            if ids.size >= FLUSH_ROWS:
                self._client.flush(self.collection)
            self.max_id = max(self.max_id, int(ids.max()))

    def _present(self, ids: np.ndarray) -> list[int]:
        rows = self._client.query(self.collection, ids=ids.tolist(), output_fields=[_ID])
        return [int(r[_ID]) for r in rows]

    @_answered
    def remove(self, template_ids: np.ndarray | list[int]) -> int:
        """Delete by primary key. Milvus's delete reports the ids asked for, present or
        not, so the present ones are looked up first to return a true count."""
        ids = np.unique(_ids(template_ids))
        removed = 0
        with self._lock:
            for start in range(0, ids.size, ID_BATCH):
                present = self._present(ids[start : start + ID_BATCH])
                if present:
                    self._client.delete(self.collection, ids=present)
                    removed += len(present)
        return removed

    @_answered
    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-``k`` templates per query, best first; ``k`` is capped at 16,384 (Milvus's
        limit). Only ids come back: vectors never leave the server."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        limit = min(k, MILVUS_MAX_TOPK)
        if q.shape[0] == 0:
            return []
        if limit <= 0:
            return [[] for _ in range(q.shape[0])]
        with self._lock:
            found = self._client.search(
                self.collection,
                data=[row for row in q],
                limit=limit,
                anns_field=_VECTOR,
                output_fields=[_ID],
                search_params=_search_params(self.index_type, self.params, limit),
            )
        return [[Hit(int(h[_ID]), float(h["distance"])) for h in hits] for hits in found]

    @_answered
    def ids(self) -> np.ndarray:
        """Every primary key, paged by a query iterator (a plain query caps at 16,384 rows)."""
        chunks: list[np.ndarray] = []
        with self._lock:
            it = self._client.query_iterator(
                self.collection, batch_size=ID_BATCH, filter="", output_fields=[_ID]
            )
            try:
                while batch := it.next():
                    chunks.append(np.fromiter((r[_ID] for r in batch), dtype=np.int64))
            finally:
                it.close()
        return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)

    def memory_bytes(self) -> int:
        """Raw bytes of the rows (float32 vector and int64 id each); the server's index
        (HNSW links, segments, replicas) adds its own, on the server, not counted here."""
        return len(self) * (self.dim * 4 + 8)

    @_answered
    def drop(self) -> None:
        with self._lock:
            self._client.drop_collection(self.collection)
