"""``airside`` command line: the top-level app, its global options, and where each group of
commands is registered (one ``cli/*_cmds.py`` module per area)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from airside.cli import (
    access_cmds,
    audit_cmds,
    demo_cmds,
    enrolment_cmds,
    erasure_cmds,
    eval_cmds,
    events_cmds,
    fairness_cmds,
    gallery_cmds,
    keys_cmds,
    matching_cmds,
    models_cmds,
    receipt_cmds,
    report_cmds,
    review_cmds,
    serve_cmds,
    store_cmds,
    subject_cmds,
    track_cmds,
    watch_cmds,
    worker_cmds,
)
from airside.cli.guard import GuardedGroup
from airside.cli.render import err, esc, say
from airside.cli.state import State
from airside.config import Settings

app = typer.Typer(
    help="Airside: consent-first face enrolment, verification and identification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=GuardedGroup,  # an unexpected exception is a code and a logged incident (cli/guard.py)
)


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="AIRSIDE_DATA_DIR",
            help="Where the database, caches and keys live.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    # Check the configuration up front so that a bad AIRSIDE_* variable or a data directory
    # that is a file gives one clear line, not a traceback from deep inside a command.
    try:
        settings = Settings(data_dir=data_dir) if data_dir else Settings()
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in x['loc'])}: {x['msg']}" for x in e.errors()
        )
        say(err, f"[bold red]error[/] (bad_config): invalid AIRSIDE_* setting: {esc(problems)}")
        raise typer.Exit(2) from None
    if settings.data_dir.exists() and not settings.data_dir.is_dir():
        say(
            err,
            f"[bold red]error[/] (bad_config): data directory {esc(settings.data_dir)} "
            "exists but is not a directory",
        )
        raise typer.Exit(2)
    ctx.obj = State(data_dir, settings)


# Groups that several modules add commands to.
gallery_app = typer.Typer(help="Manage purpose-bound galleries.", no_args_is_help=True)
audit_app = typer.Typer(help="Inspect the tamper-evident audit log.", no_args_is_help=True)
eval_app = typer.Typer(help="Measure accuracy on labelled data.", no_args_is_help=True)
app.add_typer(gallery_app, name="gallery")
app.add_typer(audit_app, name="audit")
app.add_typer(eval_app, name="eval")

# The order of registration is the order of `airside --help` (commands, then groups).
gallery_cmds.register(app, gallery_app)  # gallery create; purge, galleries
subject_cmds.register(app)  # subjects
enrolment_cmds.register(app)  # enrol
matching_cmds.register(app)  # verify, identify
audit_cmds.register(audit_app)  # audit verify, export, checkpoint
review_cmds.register(app)  # review list, confirm, reject
report_cmds.register(app)  # report governance
erasure_cmds.register(app)  # subject erase, consent withdraw
demo_cmds.register(app)  # demo
eval_cmds.register(eval_app)  # eval verify, identify
access_cmds.register(app)  # principal ..., apikey ...
keys_cmds.register(app, gallery_app)  # keys rotate, gallery rekey
models_cmds.register(app, gallery_app)  # models ..., gallery migrate
track_cmds.register(eval_app)  # eval track
watch_cmds.register(app)  # watch
events_cmds.register(app)  # events list, events crop
fairness_cmds.register(app, eval_app)  # eval fairness; calibrate
receipt_cmds.register(app)  # receipt verify
serve_cmds.register(app)  # serve
store_cmds.register(app)  # store migrate; backup, restore
worker_cmds.register(app)  # worker
