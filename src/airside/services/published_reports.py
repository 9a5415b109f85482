"""Fairness and accuracy reports where they have been produced: the HTML files that
``airside evaluate ... --html`` and ``airside fairness ... --html`` write, when written into
``<data_dir>/reports/``, listed and shown to those who may read the governance report.

Reading one is audited (a report holds error rates per demographic group, which is the
installation's own measurement, not personal data, but who looked is part of oversight).
Names are plain file names in that one folder: a path, a link or anything but ``.html`` is
refused, so a request cannot read another file of the server.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from airside.errors import NotFoundError
from airside.governance import audit
from airside.governance.principals import Principal
from airside.services.app import Airside
from airside.services.authz import authorize

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}\.html$")


def reports_dir(app: Airside) -> Path:
    return app.settings.data_dir / "reports"


def list_reports(app: Airside, principal: Principal) -> list[dict[str, object]]:
    """The reports there, newest first."""
    authorize(app, principal, "report.governance")
    folder = reports_dir(app)
    found = []
    for p in folder.glob("*.html") if folder.is_dir() else ():
        if _NAME.match(p.name) and p.is_file() and not p.is_symlink():
            st = p.stat()
            when = datetime.fromtimestamp(st.st_mtime, UTC).isoformat(timespec="seconds")
            found.append({"name": p.name, "bytes": st.st_size, "modified": when})
    return sorted(found, key=lambda r: str(r["modified"]), reverse=True)


def read_report(app: Airside, principal: Principal, name: str) -> str:
    """One report's HTML (audited)."""
    authorize(app, principal, "report.governance")
    path = reports_dir(app) / name
    if not _NAME.match(name) or not path.is_file() or path.is_symlink():
        raise NotFoundError(f"no report {name!r} in the reports folder")
    text = path.read_text(encoding="utf-8", errors="replace")
    with app.session() as s:
        audit.append(s, principal, "report.read", decision="read", result={"report": name})
    return text
