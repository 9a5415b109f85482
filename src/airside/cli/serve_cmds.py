"""``airside serve``: the HTTP API (and, with ``--cameras``, the camera workers) on one data
directory, beside which the CLI keeps working."""

from __future__ import annotations

from typing import Annotated

import typer

from airside.cli.render import err, esc, say
from airside.cli.state import state


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        ctx: typer.Context,
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8080,
    ) -> None:
        """Serve the HTTP API (docs/api.md): /api/v1, /api/docs, /healthz, /metrics."""
        import uvicorn

        from airside.server.app import create_app

        st = state(ctx)
        api = create_app(st.airside)
        say(err, f"Airside API on http://{esc(host)}:{port}/api/docs (Ctrl-C stops)")
        uvicorn.run(api, host=host, port=port, log_level="warning", access_log=False)
