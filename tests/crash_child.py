"""One state-changing operation in its own process, SIGKILLed at its ``KILL_AT``-th step.

Run by tests/test_crash_consistency.py: ``python -m tests.crash_child DATA_DIR OP KILL_AT``.
A step is an SQL statement, or the moment before or after the key ring file is written
(rotation writes it outside the database's transaction). KILL_AT 0 runs to the end and
prints ``steps=N``: the parent then picks its kill points among 1..N.

OP is one of ``enrol-batch``, ``erase``, ``withdraw``, ``purge``, ``rotate``, ``rekey``.
The installation (built by the parent) is described in the test module's docstring.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from skimage import data
from sqlalchemy import Engine, event
from tests.conftest import png_bytes

from airside.config import DetectorSettings, Settings
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, erasure, retention, template_keys
from airside.services.app import Airside

OFFICER = Principal("officer-7", "admin")
BOARDING = "boarding-KE123"
WATCH = "lounge-LH"
WATCH_PURPOSE = "lounge:access"
NEW_ROWS = 4


def batch_rows() -> list[enrolment.EnrolRow]:
    face = np.asarray(data.astronaut())
    out = []
    for i in range(NEW_ROWS):
        img = face.copy()
        img[0, 0] = (i, 200, 7)  # the same face, new bytes
        basis = BasisInput("consent", evidence_sha256=f"{i + 100:064x}")
        out.append(enrolment.EnrolRow(f"PNR-NEW-{i}", png_bytes(img), basis))
    return out


def operation(app: Airside, op: str) -> Callable[[], Any]:
    if op == "enrol-batch":
        rows = batch_rows()
        app.analyzer  # noqa: B018 - load the models before counting steps
        return lambda: enrolment.enrol_batch(app, OFFICER, BOARDING, rows)
    if op == "erase":
        return lambda: erasure.erase_subject(app, OFFICER, "PNR-0")
    if op == "withdraw":
        return lambda: erasure.withdraw_basis(app, OFFICER, "PNR-1", WATCH_PURPOSE)
    if op == "purge":
        later = datetime.now(UTC) + timedelta(days=30)  # past the boarding gallery's end
        return lambda: retention.purge(app, OFFICER, now=later)
    if op == "rotate":
        return lambda: template_keys.rotate_keys(app, OFFICER, retire_old=True)
    if op == "rekey":
        return lambda: template_keys.rekey_gallery(app, OFFICER, BOARDING)
    raise SystemExit(f"unknown operation {op!r}")


def main() -> None:
    data_dir, op, kill_at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    app = Airside(Settings(data_dir=data_dir, detector=DetectorSettings(fallback="none")))
    run = operation(app, op)
    steps = 0

    def step(*_args: Any) -> None:
        nonlocal steps
        steps += 1
        if steps == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    event.listen(Engine, "before_cursor_execute", step)
    write_keyring = template_keys.write_keyring

    def counted_write(*args: Any, **kwargs: Any) -> None:
        step()
        write_keyring(*args, **kwargs)
        step()

    template_keys.write_keyring = counted_write  # type: ignore[assignment]
    run()
    app.close()
    print(f"steps={steps}", flush=True)


if __name__ == "__main__":
    main()
