"""``airside demo``: the end-to-end demonstration."""

from __future__ import annotations

from typing import Annotated

import typer

from airside.cli.options import JsonOpt


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""

    @app.command("demo")
    def demo(
        ctx: typer.Context,
        embedder: Annotated[
            str, typer.Option(help="sface (the default), dlib or fused: the models to show.")
        ] = "sface",
        as_json: JsonOpt = False,
    ) -> None:
        """Run the end-to-end demonstration on images shipped by registry packages."""
        from airside.demo import run_demo

        code = run_demo(as_json=as_json, embedder=embedder)
        raise typer.Exit(code)
