"""The audit log and the governance report for people outside the system: verification,
the JSON-lines export (streamed), signed checkpoints, and the report (JSON, or HTML when
the client prefers it)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.background import BackgroundTask

from airside.errors import AirsideError
from airside.server.auth import Caller, Service
from airside.server.routes import ROW_ID_MAX
from airside.server.work import Pool
from airside.services import audit_service, governance_report, published_reports

router = APIRouter(tags=["audit"])

JSONL = "application/x-ndjson"


@router.get("/audit/verify", summary="Check the audit chain, its signatures and its witness")
async def verify(app: Service, who: Caller, pool: Pool) -> dict[str, Any]:
    report = await pool.run(audit_service.verify_chain, app, who)
    result: dict[str, Any] = report.as_dict()
    return result


@router.get(
    "/audit/export", response_class=FileResponse,
    summary="The audit records and signed checkpoints as JSON lines, for a regulator",
    responses={200: {"content": {JSONL: {}}}},
)  # fmt: skip
async def export(
    app: Service,
    who: Caller,
    pool: Pool,
    since: Annotated[int, Query(ge=1, le=ROW_ID_MAX, description="First record to export")] = 1,
) -> FileResponse:
    # A private directory (0700) of our own: the export holds personal data, and goes
    # when the response is sent (or at once, when the export is refused).
    folder = Path(tempfile.mkdtemp(prefix="airside-export-"))
    try:
        out = folder / "audit.jsonl"
        try:
            summary = await pool.run(audit_service.export, app, who, out, since)
        except OSError as e:
            raise AirsideError(
                f"the export could not be written: {e.strerror or type(e).__name__}",
                code="cannot_write",
            ) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(
        out, media_type=JSONL, filename="audit.jsonl",
        headers={"X-Airside-Records": str(summary.records),
                 "X-Airside-Checkpoints": str(summary.checkpoints),
                 "X-Airside-Head-Signed": "true" if summary.head_signed else "false"},
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )  # fmt: skip


@router.post("/audit/checkpoint", summary="Sign the head of the audit chain")
async def checkpoint(app: Service, who: Caller, pool: Pool) -> dict[str, Any]:
    return await pool.run(audit_service.make_checkpoint, app, who)


def prefers_html(accept: str | None) -> bool:
    """Whether an Accept header ranks text/html above JSON (q-values; ties go to JSON)."""
    if not accept:
        return False
    html = json_q = 0.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            key, _, value = p.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media in ("text/html", "application/xhtml+xml"):
            html = max(html, q)
        elif media in ("application/json", "application/*", "*/*"):
            json_q = max(json_q, q)
    return html > json_q


@router.get(
    "/reports/governance", response_model=None,
    summary="Galleries, legal bases, retention, purges, erasures and the audit chain's state",
    responses={200: {"content": {"application/json": {}, "text/html": {}}}},
)  # fmt: skip
async def governance(
    request: Request, app: Service, who: Caller, pool: Pool
) -> JSONResponse | HTMLResponse:
    report = await pool.run(governance_report.build_report, app, who)
    if prefers_html(request.headers.get("accept")):
        return HTMLResponse(governance_report.render_html(report))
    return JSONResponse(report.as_dict())


@router.get("/reports", summary="Fairness and accuracy reports produced into the data directory")
async def list_reports(app: Service, who: Caller, pool: Pool) -> dict[str, Any]:
    items = await pool.run(published_reports.list_reports, app, who)
    return {"total": len(items), "items": items}


@router.get("/reports/files/{name}", summary="One report (HTML, shown sandboxed; audited)")
async def read_report(name: str, app: Service, who: Caller, pool: Pool) -> HTMLResponse:
    html: str = await pool.run(published_reports.read_report, app, who, name)
    # Shown as a document of its own: no script runs, nothing is fetched, it cannot frame.
    csp = ("sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
           "frame-ancestors 'self'")  # fmt: skip
    return HTMLResponse(html, headers={"Content-Security-Policy": csp, "Cache-Control": "no-store"})
