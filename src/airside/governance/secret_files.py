"""Writing key material to disk: 0600 files in 0700 folders, atomically, never half-written.

Shared by the audit signing key and the template key ring so the care taken (exclusive
temp file, fsync, atomic rename or link, fsync of the folder) lives in one place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_secret(path: Path, data: bytes, *, exclusive: bool) -> bool:
    """Write ``data`` to ``path`` (0600, in a 0700 folder). Returns whether it was written.

    ``exclusive``: only if no file exists yet. ``link()`` fails when the name exists, so
    when two processes create the first key at once the first one wins and the other uses
    it; nobody replaces a key that may already have sealed or signed something.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp creates the file 0600 and exclusively: it is never readable by others.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                log.info("%s was created concurrently; using that one", path)
                return False
            except OSError:  # a filesystem without hard links
                if path.exists():
                    return False
                os.replace(tmp, path)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
