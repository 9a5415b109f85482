"""``airside verify`` (1:1) and ``airside identify`` (1:N): matching a photo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from airside.cli.options import JsonOpt
from airside.cli.render import emit_json, esc, fail, out, say
from airside.cli.state import state
from airside.errors import AirsideError

PurposeOpt = Annotated[
    str | None,
    typer.Option(help="The purpose of this search; refused unless it is the gallery's."),
]


def register(app: typer.Typer) -> None:
    """Add ``verify`` and ``identify`` to ``app``."""

    @app.command("verify")
    def verify(
        ctx: typer.Context,
        images: Annotated[list[Path], typer.Argument(help="Two photos, or one with --subject.")],
        gallery: Annotated[str | None, typer.Option(help="Gallery of --subject.")] = None,
        subject: Annotated[
            str | None, typer.Option(help="Compare with this enrolled subject.")
        ] = None,
        fmr: Annotated[float | None, typer.Option(help="Target false-match rate.")] = None,
        purpose: PurposeOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Verify 1:1: two photos of the same person? (or a photo against an enrolled subject)"""
        from airside.services.matching import verify_images, verify_subject

        try:
            if subject is not None:
                if gallery is None or len(images) != 1:
                    raise ValueError("with --subject give --gallery and exactly one image")
                res = verify_subject(
                    state(ctx).airside,
                    state(ctx).principal,
                    gallery,
                    subject,
                    images[0],
                    fmr=fmr,
                    purpose=purpose,
                )
            else:
                if len(images) != 2:
                    raise ValueError("give exactly two images (or one with --gallery/--subject)")
                res = verify_images(
                    state(ctx).airside, state(ctx).principal, images[0], images[1], fmr=fmr
                )
        except (AirsideError, ValueError) as e:
            fail(e, as_json)
        if as_json:
            emit_json(res.as_dict())
        else:
            verdict = "[bold green]MATCH[/]" if res.match else "[bold red]NO MATCH[/]"
            out.print(
                f"{verdict}  score {res.score:.4f}  threshold {res.threshold:.4f} "
                f"(FMR {res.fmr_target:g})"
            )

    @app.command("identify")
    def identify(
        ctx: typer.Context,
        image: Path,
        gallery: Annotated[str, typer.Option(help="Gallery to search.")] = ...,  # type: ignore[assignment]
        k: Annotated[int, typer.Option("--k", "--top", help="Candidates to return.")] = 5,
        fpir: Annotated[
            float | None, typer.Option(help="Target false-positive identification rate.")
        ] = None,
        purpose: PurposeOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Identify 1:N: who in the gallery is this, if anyone?"""
        from airside.services.matching import identify as do_identify

        try:
            st = state(ctx)
            res = do_identify(
                st.airside, st.principal, gallery, image, k=k, fpir=fpir, purpose=purpose
            )
        except (AirsideError, ValueError) as e:
            fail(e, as_json)
        if as_json:
            emit_json(res.as_dict())
            return
        if res.match and res.review_case is not None:
            say(
                out,
                f"[bold yellow]HIT, NOT ACTIONABLE[/] {esc(res.candidates[0].subject)}: review "
                f"case {res.review_case} needs two reviewers (airside review confirm "
                f"{res.review_case})",
            )
        elif res.match:
            say(out, f"[bold green]MATCH[/] {esc(res.candidates[0].subject)}")
        else:
            out.print("[bold red]NO MATCH[/]")
        t = Table("rank", "subject", "score")
        for i, c in enumerate(res.candidates, 1):
            t.add_row(str(i), esc(c.subject), f"{c.score:.4f}")
        out.print(t)
        out.print(f"threshold {res.threshold:.4f} for FPIR {res.fpir_target:g}")
