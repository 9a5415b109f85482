"""A batch enrolment in its own process, SIGKILLed at its ``KILL_AT``-th SQL statement.

Run by tests/test_batch_atomicity.py: ``python -m tests.batch_child DATA_DIR MODE KILL_AT``.
MODE is ``all`` (all or nothing) or ``skip`` (``skip_refused``: each subject its own unit).
KILL_AT 0 runs to the end and prints how many statements the call executed.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
from skimage import data
from sqlalchemy import event
from tests.conftest import png_bytes

from airside.config import Settings
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment
from airside.services.app import Airside

OFFICER = Principal("officer-7", "admin")
GALLERY = "boarding-KE123"
ROWS = 8


def rows() -> list[enrolment.EnrolRow]:
    face = np.asarray(data.astronaut())
    out = []
    for i in range(ROWS):
        img = face.copy()
        img[0, 0] = (i, 3, 7)  # the same face, different bytes
        basis = BasisInput("consent", evidence_sha256=f"{i:064x}")
        out.append(enrolment.EnrolRow(f"PNR-{i:03d}", png_bytes(img), basis))
    # one row without a face: refused, so ``skip`` really enrols row by row
    blank = np.full((200, 200, 3), 90, dtype=np.uint8)
    out.append(enrolment.EnrolRow("PNR-blank", png_bytes(blank), BasisInput("consent")))
    return out


def main() -> None:
    data_dir, mode, kill_at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    app = Airside(Settings(data_dir=data_dir))
    batch = rows()
    app.analyzer  # noqa: B018 - load the models before counting statements
    count = 0

    def on_statement(*_args: Any) -> None:
        nonlocal count
        count += 1
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    event.listen(app.db.engine, "before_cursor_execute", on_statement)
    if mode == "all":
        batch = batch[:-1]
    try:
        enrolment.enrol_batch(app, OFFICER, GALLERY, batch, skip_refused=mode == "skip")
    finally:
        print(f"statements={count}", flush=True)


if __name__ == "__main__":
    main()
