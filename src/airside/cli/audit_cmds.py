"""``airside audit verify``, ``audit export`` and ``audit checkpoint``: check the audit log,
and hand it to regulators."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from airside.cli.options import JsonOpt
from airside.cli.render import emit_json, err, esc, fail, out, say
from airside.cli.state import state
from airside.errors import AirsideError


def register(audit_app: typer.Typer) -> None:
    """Add ``verify``, ``export`` and ``checkpoint`` to ``audit_app``."""

    @audit_app.command("verify")
    def audit_verify(ctx: typer.Context, as_json: JsonOpt = False) -> None:
        """Check the audit chain; names every altered, deleted, inserted or reordered record."""
        from airside.services.audit_service import verify_chain

        try:
            rep = verify_chain(state(ctx).airside, state(ctx).principal)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json(rep.as_dict())
        elif rep.ok:
            out.print(f"[bold green]audit chain intact[/]: {rep.records} records")
            say(out, _coverage(rep))
        else:
            err.print(f"[bold red]audit chain broken[/]: {len(rep.problems)} problems")
            for p in rep.problems:
                say(err, f"  record {p['seq']}: {esc(p['problem'])} — {esc(p['detail'])}")
        if not rep.ok:
            raise typer.Exit(3)

    @audit_app.command("export")
    def audit_export(
        ctx: typer.Context,
        dest: Annotated[
            Path, typer.Argument(metavar="OUT.jsonl", help="Where to write the JSON lines.")
        ],
        since: Annotated[
            int, typer.Option("--since", help="First record to export (sequence number).")
        ] = 1,
        as_json: JsonOpt = False,
    ) -> None:
        """Write the audit records and signed checkpoints as JSON lines for a regulator.

        The export is itself logged, and the file ends with a checkpoint signed over its
        last record, so it can be verified offline (docs/audit.md)."""
        from airside.services.audit_service import export

        try:
            summary = export(state(ctx).airside, state(ctx).principal, dest, since_seq=since)
        except AirsideError as e:
            fail(e, as_json)
        except OSError as e:  # a place that cannot be written: no file, nothing half-written
            fail(
                AirsideError(f"cannot write {dest}: {e.strerror or e}", code="cannot_write"),
                as_json,
            )
        if as_json:
            emit_json(summary.as_dict())
            return
        say(
            out,
            f"exported {summary.records} records and {summary.checkpoints} checkpoints "
            f"to {esc(summary.path)}",
        )
        if not summary.head_signed:
            say(
                err,
                "[bold yellow]warning[/]: the audit chain does not verify, so no checkpoint "
                "was signed over the exported head; run `airside audit verify`",
            )

    @audit_app.command("checkpoint")
    def audit_checkpoint(ctx: typer.Context, as_json: JsonOpt = False) -> None:
        """Sign the current head of the audit chain with this installation's Ed25519 key."""
        from airside.services.audit_service import make_checkpoint

        try:
            cp = make_checkpoint(state(ctx).airside, state(ctx).principal)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json(cp)
            return
        say(
            out,
            f"signed audit record {cp['seq']} (head {esc(cp['head_hash'][:16])}…) "
            f"with key {esc(cp['key_fingerprint'])}",
        )


def _coverage(rep: Any) -> str:
    """How much of the log a signature covers, in words."""
    if rep.records == 0:
        return "  the log is empty"
    keys = ", ".join(rep.keys) or "none"
    line = f"  {rep.signed_records} of {rep.records} records signed (key {keys})"
    if rep.checkpoints:
        line += f"; {rep.checkpoints} checkpoints, newest at record {rep.signed_seq}"
    if rep.witness_seq is None:
        line += "\n  no signed head is kept outside the database yet: a rollback would not show"
    else:
        line += f"\n  the log reaches the signed head kept outside it (record {rep.witness_seq})"
    return line
