"""``airside subjects``: who is enrolled, where, and on what legal basis."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from airside.cli.options import JsonOpt
from airside.cli.render import emit_json, esc, fail, out
from airside.cli.state import state
from airside.errors import AirsideError


def register(app: typer.Typer) -> None:
    """Add ``subjects`` to ``app``."""

    @app.command("subjects")
    def subjects(
        ctx: typer.Context,
        gallery: Annotated[str | None, typer.Option(help="Only this gallery.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """List enrolled subjects and the legal bases recorded for them."""
        from airside.services.subjects import list_subjects

        try:
            rows = list_subjects(state(ctx).airside, state(ctx).principal, gallery)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json([r.as_dict() for r in rows])
            return
        t = Table("subject", "galleries (templates)", "legal bases")
        for r in rows:
            t.add_row(
                esc(r.subject),
                esc(", ".join(f"{g} ({n})" for g, n in r.galleries.items())),
                esc(", ".join(f"{b['kind']}:{b['purpose']}" for b in r.bases)),
            )
        out.print(t)
