"""``airside audit export`` and ``airside audit checkpoint``: the audit log for regulators."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from airside.cli.options import JsonOpt
from airside.cli.render import emit_json, err, esc, fail, out, say
from airside.cli.state import state
from airside.errors import AirsideError


def register(audit_app: typer.Typer) -> None:
    """Add ``export`` and ``checkpoint`` to ``audit_app``."""

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
