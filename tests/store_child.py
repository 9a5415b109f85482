"""Processes that the store tests run beside themselves (``python -m tests.store_child``):

- ``migrate DATA_DIR SOURCE_URL TARGET_URL KILL_AT``: migrate the installation's store
  (SOURCE_URL) into TARGET_URL one row per INSERT, and SIGKILL itself at its KILL_AT-th
  INSERT into the target: the copy's transaction is then open, half written.
- ``enrol DATA_DIR GALLERY``: enrol the astronaut (a pixel changed each time, so each photo
  is new) as PNR-0, PNR-1, ... until killed, printing ``enrolled N`` after each commit.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
from skimage import data
from sqlalchemy import Engine, event
from tests.conftest import png_bytes

from airside.config import Settings
from airside.governance.consent import BasisInput
from airside.services import enrolment, principal_admin
from airside.services.app import Airside
from airside.services.store_transfer import migrate_store


def migrate(data_dir: Path, source: str, target: str, kill_at: int) -> None:
    app = Airside(Settings(data_dir=data_dir, database_url=source))
    admin = principal_admin.ensure_local_admin(app)
    target_db = target.rsplit("/", 1)[-1].split("?")[0]
    inserts = 0

    def on_statement(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal inserts
        if statement.lstrip().upper().startswith("INSERT") and (
            str(conn.engine.url.database or "").endswith(target_db)
        ):
            inserts += 1
            if inserts == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    event.listen(Engine, "before_cursor_execute", on_statement)
    rep = migrate_store(app, admin, target, batch_rows=1)
    print(f"copied={rep.rows} inserts={inserts}", flush=True)


def enrol(data_dir: Path, gallery: str) -> None:
    app = Airside(Settings(data_dir=data_dir))
    admin = principal_admin.ensure_local_admin(app)
    face = np.asarray(data.astronaut())
    app.analyzer  # noqa: B018 - load the models before the first enrolment
    for i in range(10_000):
        img = face.copy()
        img[0, 0] = (i % 256, i // 256, 11)
        enrolment.enrol(app, admin, gallery, f"PNR-{i}", [png_bytes(img)], BasisInput("consent"))
        print(f"enrolled {i}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "migrate":
        migrate(Path(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif sys.argv[1] == "enrol":
        enrol(Path(sys.argv[2]), sys.argv[3])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
