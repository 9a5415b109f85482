"""Files that hold personal data: created 0600, in folders created (or tightened to) 0700.

The database holds templates, legal bases, the audit log and event crops; its ``-wal`` and
``-shm`` files hold recent pages of it. SQLite creates those two with the mode of the
database file, so creating the database file itself 0600 before SQLite opens it is enough
for all three. Keys have their own writer (``governance/secret_files.py``); this module is
for everything else the program writes that names or shows a person: the database, the
evaluation template cache, the error log, crops, event lists and annotated videos.

Modes are set explicitly rather than left to the umask: a umask of 022 (the usual one)
would otherwise make every one of them readable by every local user.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """Create ``path`` (and missing parents) 0700. An existing folder that others may enter
    is tightened to 0700 when ``tighten`` and this user owns it; a shared folder (sticky,
    such as /tmp, or another user's) is never changed, only reported."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if tighten:
        _tighten(path, PRIVATE_DIR)
    return path


def prepare_data_dir(data_dir: Path, db_url: str) -> None:
    """Make the data directory 0700 and, for a SQLite store, create its database file 0600
    before SQLite opens it (call before ``Database(db_url)``)."""
    private_dir(data_dir)
    prepare_sqlite_file(db_url)


def sqlite_path(db_url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL, or None (another database, or in memory)."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    if url.database.startswith("file:"):  # a URI filename: SQLite parses it itself
        return None
    return Path(url.database)


def prepare_sqlite_file(target: str | Path) -> None:
    """Create the SQLite database file ``target`` (a path or a ``sqlite:///`` URL) empty
    and 0600 if it does not exist, in a folder created 0700; tighten an existing database
    and its ``-wal``, ``-shm`` and ``-journal`` files to 0600. SQLite gives the journal files
    it creates later the database file's mode."""
    path = sqlite_path(target) if isinstance(target, str) else target
    if path is None:
        return
    if not path.parent.exists():
        private_dir(path.parent, tighten=False)
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, PRIVATE_FILE)
    except OSError as e:
        log.debug("could not pre-create %s (%s); SQLite will report it", path, e)
        return
    os.close(fd)
    for p in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        if p.exists():
            _tighten(p, PRIVATE_FILE)


def open_private(path: Path, *, append: bool = False) -> IO[str]:
    """Open ``path`` to write text (UTF-8), truncating it or, with ``append``, appending; a
    new file is created 0600 (an existing one keeps the mode its owner gave it)."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_APPEND if append else os.O_TRUNC
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        return os.fdopen(fd, "a" if append else "w", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def create_private(path: Path) -> None:
    """Create ``path`` empty and 0600 if it does not exist, for a writer (such as FFmpeg)
    that opens it itself and would otherwise create it with the umask's mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), PRIVATE_FILE)
    os.close(fd)


def _tighten(path: Path, mode: int) -> None:
    """Remove the group and other bits beyond ``mode`` from a file or folder this user
    owns; leave shared ones (sticky folders, other owners) as they are, with a warning."""
    if os.name != "posix":
        return
    try:
        st = path.stat()
    except OSError:
        return
    current = stat.S_IMODE(st.st_mode)
    if not current & ~mode & 0o077:
        return
    if st.st_uid != os.getuid() or (stat.S_ISDIR(st.st_mode) and current & stat.S_ISVTX):
        log.warning(
            "%s is shared (mode %o, owner uid %d): others may read personal data below it",
            path,
            current,
            st.st_uid,
        )
        return
    try:
        os.chmod(path, current & (mode | 0o7700))
    except OSError as e:
        log.warning("could not restrict %s to mode %o: %s", path, mode, e)
