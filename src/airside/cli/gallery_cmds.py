"""``airside gallery create``, ``airside galleries`` and ``airside purge``: galleries and
the retention they are created with."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from airside.cli.options import JsonOpt, local_time, parse_duration
from airside.cli.render import emit_json, esc, fail, out, say
from airside.cli.state import state
from airside.errors import AirsideError


def register(app: typer.Typer, gallery_app: typer.Typer) -> None:
    """Add ``create`` to ``gallery_app``, and ``purge`` and ``galleries`` to ``app``."""

    @gallery_app.command("create")
    def gallery_create(
        ctx: typer.Context,
        name: str,
        purpose: Annotated[str, typer.Option(help="The one purpose this gallery serves.")],
        quality_bar: Annotated[
            float | None, typer.Option(help="Minimum capture quality (0-100) to enrol.")
        ] = None,
        fmr: Annotated[
            float | None, typer.Option(help="Target false-match rate, e.g. 1e-3.")
        ] = None,
        retain_for: Annotated[
            str | None, typer.Option(help="Purge templates older than this (e.g. 12h, 30d).")
        ] = None,
        retain_until: Annotated[
            datetime | None, typer.Option(help="Purge the whole gallery at this time.")
        ] = None,
        departs: Annotated[
            datetime | None,
            typer.Option(help="Flight departure: purge the gallery 12 h after it (boarding)."),
        ] = None,
        embedder: Annotated[
            str | None,
            typer.Option(
                help="The embedding model it is bound to: sface (default), dlib, fused "
                "(dlib + SFace, high-assurance 1:1) or a registered model."
            ),
        ] = None,
        index: Annotated[
            str | None,
            typer.Option(
                help="What answers its searches: exact, pq (approximate, for millions), "
                "hnsw or milvus (AIRSIDE_MILVUS_URI). Default: AIRSIDE_INDEX, auto by size."
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Create a gallery bound to a purpose, a retention and an embedding model."""
        from airside.services.galleries import create_gallery

        try:
            info = create_gallery(
                state(ctx).airside,
                state(ctx).principal,
                name,
                purpose,
                quality_bar=quality_bar,
                fmr_target=fmr,
                retain_seconds=parse_duration(retain_for) if retain_for else None,
                retain_until=local_time(retain_until),
                departs=local_time(departs),
                embedder=embedder,
                index=index,
            )
        except (AirsideError, ValueError) as e:
            fail(e, as_json)
        if as_json:
            emit_json(info.as_dict())
        else:
            say(
                out,
                f"created gallery [bold]{esc(info.name)}[/] for purpose '{esc(info.purpose)}'",
            )

    @app.command("purge")
    def purge_cmd(
        ctx: typer.Context,
        dry_run: Annotated[bool, typer.Option(help="Report what is due without deleting.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Delete every template past its gallery's retention, and audit records past theirs
        (cut at a signed checkpoint); everything deleted is recorded in the audit log."""
        from airside.services.retention import purge

        try:
            rep = purge(state(ctx).airside, state(ctx).principal, dry_run=dry_run)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json(rep.as_dict())
            return
        verb = "due" if dry_run else "purged"
        say(out, f"{rep.templates} templates {verb}")
        for g, n in rep.galleries.items():
            say(out, f"  {esc(g)}: {n}")
        say(out, f"{rep.audit_records} audit records past retention {verb}")

    @app.command("galleries")
    def galleries(ctx: typer.Context, as_json: JsonOpt = False) -> None:
        """List galleries with their purpose, model and size."""
        from airside.services.galleries import list_galleries

        try:
            rows = list_galleries(state(ctx).airside, state(ctx).principal)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json([r.as_dict() for r in rows])
            return
        t = Table(
            "gallery", "purpose", "subjects", "templates", "quality bar", "FMR", "model", "index"
        )
        for r in rows:
            t.add_row(
                esc(r.name),
                esc(r.purpose),
                str(r.subjects),
                str(r.templates),
                f"{r.quality_bar:g}",
                f"{r.fmr_target:g}",
                esc(r.contract),
                esc(r.index),
            )
        out.print(t)
