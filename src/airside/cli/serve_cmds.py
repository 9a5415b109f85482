"""``airside serve``: the HTTP API (and, with ``--cameras``, the camera workers) on one data
directory, beside which the CLI keeps working."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from airside.cli.render import err, esc, fail, say
from airside.cli.state import state
from airside.errors import AirsideError


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        ctx: typer.Context,
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8080,
        cameras: Annotated[
            Path | None,
            typer.Option(
                help="cameras.toml: cameras to run, each in its own worker process "
                "(docs/cameras.md). Cameras added over the API are written to it."
            ),
        ] = None,
        tls_cert: Annotated[
            Path | None, typer.Option(help="Serve HTTPS: the certificate (PEM, chain first).")
        ] = None,
        tls_key: Annotated[
            Path | None,
            typer.Option(help="The certificate's private key (PEM; mode 0600, its owner's)."),
        ] = None,
    ) -> None:
        """Serve the HTTP API (docs/api.md): /api/v1, /api/docs, /healthz, /metrics."""
        import uvicorn

        from airside.server.app import create_app
        from airside.server.serving import uvicorn_options

        st = state(ctx)
        try:
            options = uvicorn_options(st.airside.settings, tls_cert=tls_cert, tls_key=tls_key)
            # The server's operator provisions the cameras' principals and keys.
            api = create_app(
                st.airside,
                cameras_file=cameras,
                camera_actor=st.principal if cameras is not None else None,
            )
        except AirsideError as e:  # a bad cameras file or TLS key: refused before serving
            fail(e, False)
        scheme = "https" if tls_cert is not None else "http"
        say(err, f"Airside API on {scheme}://{esc(host)}:{port}/api/docs (Ctrl-C stops)")
        if cameras is not None:
            n = len(api.state.cameras.names())
            say(err, f"{n} camera(s) from {esc(str(cameras))}")
        uvicorn.run(api, host=host, port=port, **options)
