"""``airside report governance``: what an operator reads before switching on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from airside.cli.options import JsonOpt
from airside.cli.render import emit_json, esc, fail, out, say
from airside.cli.state import state
from airside.errors import AirsideError


def register(app: typer.Typer) -> None:
    """Add the ``report`` group (``governance``) to ``app``."""
    report_app = typer.Typer(
        help="Reports an operator reads before switching on.", no_args_is_help=True
    )
    app.add_typer(report_app, name="report")

    @report_app.command("governance")
    def report_governance(
        ctx: typer.Context,
        html: Annotated[
            Path | None, typer.Option(help="Also write the report as HTML here.")
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Each gallery's purpose, legal bases, retention, size, recent purges, audit state."""
        from airside.services.governance_report import build_report, render_html

        try:
            rep = build_report(state(ctx).airside, state(ctx).principal)
            if html is not None:
                html.parent.mkdir(parents=True, exist_ok=True)
                html.write_text(render_html(rep), encoding="utf-8")
        except (AirsideError, OSError) as e:
            fail(e, as_json)
        if as_json:
            emit_json(rep.as_dict())
            return
        t = Table("gallery", "purpose", "subjects", "templates", "bases in force", "retention")
        for g in rep.galleries:
            t.add_row(
                esc(g.name), esc(g.purpose), str(g.subjects), str(g.templates),
                esc(", ".join(f"{k}: {n}" for k, n in g.bases.items()) or "none"),
                esc(g.retention),
            )  # fmt: skip
        out.print(t)
        audit = "intact" if rep.audit["ok"] else f"BROKEN ({len(rep.audit['problems'])} problems)"
        say(out, f"audit chain {audit}, {rep.audit['records']} records")
        say(out, f"recent purges: {len(rep.recent_purges)}; erasures: {len(rep.recent_erasures)}")
