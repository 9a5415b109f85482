"""``airside review ...``: the two-person review of watchlist hits."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from airside.cli.options import JsonOpt
from airside.cli.render import emit_json, esc, fail, out, say
from airside.cli.state import state
from airside.errors import AirsideError


def register(app: typer.Typer) -> None:
    """Add the ``review`` group (``list``, ``confirm``, ``reject``) to ``app``."""
    review_app = typer.Typer(help="Two-person review of watchlist hits.", no_args_is_help=True)
    app.add_typer(review_app, name="review")

    @review_app.command("list")
    def review_list(
        ctx: typer.Context,
        all_cases: Annotated[bool, typer.Option("--all", help="Include closed cases.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Open review cases (watchlist hits awaiting two confirmations)."""
        from airside.services.review import list_cases

        try:
            cases = list_cases(
                state(ctx).airside, state(ctx).principal, None if all_cases else "open"
            )
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json([c.as_dict() for c in cases])
            return
        for c in cases:
            _show_case(c, False)
        if not cases:
            say(out, "no cases")

    @review_app.command("confirm")
    def review_confirm(
        ctx: typer.Context,
        case: int,
        note: Annotated[str | None, typer.Option()] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Confirm a hit; it becomes actionable after a second, different reviewer confirms."""
        _vote(ctx, case, "confirm", note, as_json)

    @review_app.command("reject")
    def review_reject(
        ctx: typer.Context,
        case: int,
        note: Annotated[str | None, typer.Option()] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Reject a hit: the case closes and nobody may act on it."""
        _vote(ctx, case, "reject", note, as_json)


def _show_case(case: Any, as_json: bool) -> None:
    if as_json:
        emit_json(case.as_dict())
        return
    status = "[bold green]ACTIONABLE[/]" if case.actionable else esc(case.status)
    say(
        out,
        f"case {case.id}: {status} — {esc(case.subject)} in {esc(case.gallery)} "
        f"(score {case.score:.4f}), opened by {esc(case.opened_by)} at {case.opened_at}, "
        f"deadline {case.deadline}",
    )
    for v in case.votes:
        say(out, f"  {esc(v['reviewer'])}: {v['decision']} {esc(v['note'])}")


def _vote(
    ctx: typer.Context,
    case: int,
    decision: str,
    note: str | None,
    as_json: bool,
) -> None:
    from airside.services.review import vote

    try:
        view = vote(state(ctx).airside, state(ctx).principal, case, decision, note)
    except (AirsideError, ValueError) as e:
        fail(e, as_json)
    _show_case(view, as_json)
