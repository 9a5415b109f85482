"""Templates for evaluation datasets: computed on all cores, cached by image hash.

The cache is a plain SQLite file under the data directory's cache folder, keyed by the
embedding contract and the SHA-256 of the image bytes, so re-running an evaluation (or
running another on overlapping images) costs nothing. It is a cache of dataset images,
not part of the governed store: nobody is enrolled by an evaluation.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from airside.config import Settings
from airside.errors import AirsideError
from airside.private_files import prepare_sqlite_file, private_dir
from airside.vision.analyzer import FaceAnalyzer, FacePolicy
from airside.vision.contract import EmbeddingContract


@dataclass(frozen=True)
class Extracted:
    """One image's template, or why there is none (``vector`` is None on failure)."""

    path: str
    sha256: str
    vector: np.ndarray | None
    failure: str | None
    quality: float | None


class TemplateCache:
    def __init__(self, path: Path, contract: EmbeddingContract, policy: str) -> None:
        # Templates of evaluation faces are personal data: a 0600 file in a 0700 folder.
        private_dir(path.parent)
        prepare_sqlite_file(path)
        self._db = sqlite3.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS t (key TEXT PRIMARY KEY, vector BLOB, failure TEXT, "
            "quality REAL)"
        )
        self._prefix = f"{contract.fingerprint}|{policy}|"
        self.dim = contract.dim

    def get(self, sha: str) -> tuple[np.ndarray | None, str | None, float | None] | None:
        row = self._db.execute(
            "SELECT vector, failure, quality FROM t WHERE key=?", (self._prefix + sha,)
        ).fetchone()
        if row is None:
            return None
        vec = None if row[0] is None else np.frombuffer(row[0], dtype="<f4").copy()
        return vec, row[1], row[2]

    def put_many(self, items: Sequence[Extracted]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO t VALUES (?,?,?,?)",
            [
                (
                    self._prefix + e.sha256,
                    None if e.vector is None else e.vector.astype("<f4").tobytes(),
                    e.failure,
                    e.quality,
                )
                for e in items
            ],
        )
        self._db.commit()

    def close(self) -> None:
        self._db.close()


_worker: tuple[FaceAnalyzer, Settings, FacePolicy] | None = None


def _init_worker(settings: Settings, policy: FacePolicy) -> None:
    global _worker
    from airside.vision.factory import default_analyzer

    # One process per core: each runs its models single-threaded to avoid oversubscription.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    one = settings.model_copy(update={"embed_threads": 1})
    _worker = (default_analyzer(one), one, policy)


def _extract_one(args: tuple[str, str]) -> Extracted:
    from airside.services.captures import Capture, capture

    assert _worker is not None
    analyzer, settings, policy = _worker
    path, sha = args
    res = capture(analyzer, path, max_pixels=settings.max_image_pixels, policy=policy)
    if not isinstance(res, Capture):
        return Extracted(path, sha, None, res.code, None)
    try:
        vec = analyzer.embed([res.face])[0]
    except AirsideError as e:  # pragma: no cover - embedder failures are exceptional
        return Extracted(path, sha, None, e.code, None)
    return Extracted(path, sha, vec, None, res.face.quality.score)


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def extract_templates(
    paths: Sequence[str],
    settings: Settings,
    contract: EmbeddingContract,
    *,
    policy: FacePolicy = "central",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Extracted]:
    """Templates for every distinct path; unreadable files come back as failures."""
    unique = list(dict.fromkeys(paths))
    cache = TemplateCache(settings.cache_dir / "eval-templates.sqlite", contract, policy)
    results: dict[str, Extracted] = {}
    todo: list[tuple[str, str]] = []
    try:
        for p in unique:
            try:
                sha = file_sha256(p)
            except OSError as e:
                results[p] = Extracted(p, "", None, f"unreadable: {e.strerror}", None)
                if progress:
                    progress(1)
                continue
            hit = cache.get(sha)
            if hit is not None:
                results[p] = Extracted(p, sha, hit[0], hit[1], hit[2])
                if progress:
                    progress(1)
            else:
                todo.append((p, sha))
        n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
        if todo:
            batch: list[Extracted] = []
            # "spawn", not fork: the parent may hold ONNX Runtime / OpenMP threads, and a
            # forked child of a threaded process can deadlock on their locks.
            with ProcessPoolExecutor(
                n_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(settings, policy),
            ) as pool:
                for ex in pool.map(_extract_one, todo, chunksize=8):
                    results[ex.path] = ex
                    batch.append(ex)
                    if len(batch) >= 256:
                        cache.put_many(batch)
                        batch.clear()
                    if progress:
                        progress(1)
            cache.put_many(batch)
    finally:
        cache.close()
    return results
