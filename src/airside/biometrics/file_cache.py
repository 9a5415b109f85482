"""Parsed files that a long-running process re-reads when they change on disk.

Both calibration tables (the FMR -> threshold table and the fair calibration) are written
by an administrator's command while servers and camera workers keep running; every later
decision must use the new one. Each lookup costs one ``stat``; the file is parsed again
only when its identity (inode, modification time, size) differs from the cached one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

_Stamp = tuple[int, int, int]


class FileCache(Generic[T]):
    """``path -> parse(path)``, kept while the file is unchanged; None for a missing file."""

    def __init__(self, parse: Callable[[Path], T]) -> None:
        self._parse = parse
        self._lock = threading.Lock()
        self._items: dict[str, tuple[_Stamp, T]] = {}

    def get(self, path: Path) -> T | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            self.forget(path)
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._items.get(str(path))
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = self._parse(path)  # raises for a file that does not parse: never cached
        with self._lock:
            self._items[str(path)] = (stamp, value)
        return value

    def forget(self, path: Path) -> None:
        with self._lock:
            self._items.pop(str(path), None)
