"""``airside events list`` and ``airside events crop``: what the cameras recorded."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from airside.cli.options import JsonOpt, parse_duration
from airside.cli.render import emit_json, esc, fail, out, say
from airside.cli.state import state
from airside.errors import AirsideError


def parse_since(text: str) -> datetime:
    """'24h', '30m', '7d' (that long ago) or an ISO date/time (local time unless it says)."""
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).astimezone()
    except ValueError:
        raise ValueError(
            f"--since {text!r} must be a duration (90s, 30m, 12h, 7d) or an ISO date/time"
        ) from None


def _what(detail: dict[str, object], subject: str | None) -> str:
    if subject is not None:
        return subject
    kind, message = detail.get("kind"), detail.get("message")
    return " ".join(str(x) for x in (kind, message) if x) or "-"


def register(app: typer.Typer) -> None:
    """Add the ``events`` group to ``app``."""
    events_app = typer.Typer(
        help="Identity, watchlist and system events from the cameras.", no_args_is_help=True
    )
    app.add_typer(events_app, name="events")

    @events_app.command("list")
    def events_list(
        ctx: typer.Context,
        camera: Annotated[str | None, typer.Option(help="Only this camera's events.")] = None,
        subject: Annotated[str | None, typer.Option(help="Only events about this subject.")] = None,
        gallery: Annotated[str | None, typer.Option(help="Only matches in this gallery.")] = None,
        kind: Annotated[
            str | None,
            typer.Option(
                "--type", help="Only events of this type (identity, watchlist_hit, system)."
            ),
        ] = None,
        since: Annotated[
            str | None,
            typer.Option(help="Only events since then: 24h, 7d, or an ISO date/time."),
        ] = None,
        limit: Annotated[int, typer.Option(help="At most this many (newest first).")] = 100,
        as_json: JsonOpt = False,
        jsonl: Annotated[
            bool, typer.Option("--jsonl", help="Print one JSON object per line on stdout.")
        ] = False,
    ) -> None:
        """The newest events your scopes reach (the listing is audited; crops are not shown:
        use `airside events crop`)."""
        from airside.services.events import list_events

        try:
            rows = list_events(
                state(ctx).airside,
                state(ctx).principal,
                camera=camera,
                subject=subject,
                gallery=gallery,
                type_=kind,
                since=parse_since(since) if since else None,
                limit=limit,
            )
        except (AirsideError, ValueError) as e:
            fail(e, as_json)
        if jsonl:
            for r in rows:
                typer.echo(r.json_line())
            return
        if as_json:
            emit_json([r.as_dict() for r in rows])
            return
        t = Table("id", "started", "camera", "type", "track", "subject / detail", "gallery",
                  "score", "crop")  # fmt: skip
        for r in rows:
            t.add_row(
                str(r.id), esc(r.started_at), esc(r.camera), esc(r.type),
                "-" if r.track is None else str(r.track), esc(_what(r.detail, r.subject)),
                esc(r.gallery or "-"), "-" if r.score is None else f"{r.score:.3f}",
                "yes" if r.crop else "-",
            )  # fmt: skip
        out.print(t)

    @events_app.command("crop")
    def events_crop(
        ctx: typer.Context,
        event_id: Annotated[int, typer.Argument(metavar="ID", help="The event.")],
        dest: Annotated[
            Path, typer.Argument(metavar="OUT.jpg", help="Where to write the face crop.")
        ],
        as_json: JsonOpt = False,
    ) -> None:
        """Write an event's face crop (JPEG) to OUT.jpg, readable by you only. Audited; an
        event whose crop was not kept, or is past its retention, has none."""
        from airside.services.events import event_crop

        try:
            crop = event_crop(state(ctx).airside, state(ctx).principal, event_id)
            if crop is None:
                raise AirsideError(
                    f"event {event_id} keeps no face crop (none was allowed, or it is past "
                    "its retention)",
                    code="no_crop",
                )
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(crop)
        except (AirsideError, OSError) as e:
            fail(e, as_json)
        if as_json:
            emit_json({"event": event_id, "path": str(dest), "bytes": len(crop)})
            return
        say(out, f"wrote the crop of event {event_id} ({len(crop)} bytes) to {esc(dest)}")
