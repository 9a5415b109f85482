"""Output helpers shared by the CLI commands: JSON for scripts, Rich for people."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from airside.errors import AirsideError

out = Console()
err = Console(stderr=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def fail(error: Exception, as_json: bool, exit_code: int = 1) -> NoReturn:
    code = error.code if isinstance(error, AirsideError) else "bad_input"
    details: dict[str, Any] = {"error": code, "message": str(error)}
    refusals = getattr(error, "refusals", None)
    if refusals:
        details["refused"] = [r.as_dict() for r in refusals]
    reasons = getattr(error, "reasons", None)
    if reasons:
        details["reasons"] = reasons
    structured = getattr(error, "details", None)
    if structured:
        details["details"] = structured
    if as_json:
        emit_json(details)
    # User data (paths, subject references, purposes) is escaped: a "[/]" in a file name must
    # neither crash Rich nor vanish as markup. soft_wrap keeps a message on one line so that
    # paths in it can be copied and grepped.
    say(err, f"[bold red]error[/] ({esc(code)}): {esc(str(error))}")
    lines = [r.message for r in refusals or []]
    if lines != [str(error)]:  # a single refusal is already the message itself
        for line in lines:
            say(err, f"  - {esc(line)}")
    hint = cli_hint(structured or {})
    if hint:
        say(err, f"  ({esc(hint)})")
    raise typer.Exit(exit_code)


# How the CLI spells the inputs and use-cases that service errors name in ``details``.
OPTION_OF = {
    "basis": "--basis", "basis_ref": "--basis-ref", "departs": "--departs",
    "retain_until": "--retain-until", "since": "--since", "skip_refused": "--skip-refused",
    "into": "--into", "force": "--force", "retire_old": "--retire-old",
    "replace": "--replace", "keys_to": "--keys-to", "to": "--to",
}  # fmt: skip
COMMAND_OF = {
    "gallery.create": "airside gallery create", "calibration.fit":
    "airside eval verify --identities IDENTITIES.csv --calibrate", "principal.add":
    "airside principal add", "audit.verify": "airside audit verify", "keys.rotate":
    "airside keys rotate", "gallery.migrate": "airside gallery migrate",
}  # fmt: skip


def cli_hint(details: dict[str, Any]) -> str:
    """The error's ``details`` in the CLI's words: the options and the command concerned."""
    fields = details.get("fields") or ([details["field"]] if "field" in details else [])
    parts = [f"option {OPTION_OF[f]}" for f in fields if f in OPTION_OF]
    nxt = details.get("next")
    if isinstance(nxt, str) and nxt in COMMAND_OF:
        parts.append(f"see `{COMMAND_OF[nxt]}`")
    return "; ".join(parts)


def esc(value: object) -> str:
    """``value`` as text that Rich prints literally (no markup interpretation)."""
    return escape(str(value))


def say(console: Console, markup: str) -> None:
    """Print one logical line: not re-highlighted and not hard-wrapped at the console width."""
    console.print(markup, highlight=False, soft_wrap=True)


def _bars() -> Progress:
    """Rich progress bars on stderr (so --json output on stdout stays clean)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


@contextmanager
def progress(label: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """One progress bar: call the function with how many more are done."""
    if not enabled:
        yield lambda _n: None
        return
    with _bars() as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@contextmanager
def stage_progress(enabled: bool, min_total: int = 0) -> Iterator[Callable[[str, int, int], None]]:
    """One bar per stage of a long job (a table, "snapshot", "checking templates"): call
    the function with (stage, done, total); stages smaller than ``min_total`` get none."""
    if not enabled:
        yield lambda _stage, _done, _total: None
        return
    with _bars() as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if total < min_total:
                return
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update
