"""``airside store migrate``, ``airside backup`` and ``airside restore``: moving and keeping the
store (docs/backup.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from airside.cli.options import JsonOpt
from airside.cli.render import emit_json, err, esc, fail, out, say, stage_progress
from airside.cli.state import state
from airside.errors import AirsideError

# Tables this small are copied without a bar of their own.
_BAR_FROM_ROWS = 1000


def register(app: typer.Typer) -> None:
    """Add the ``store`` group (``migrate``), ``backup`` and ``restore`` to ``app``."""

    store_app = typer.Typer(
        help="Move the store to another database (docs/backup.md).", no_args_is_help=True
    )
    app.add_typer(store_app, name="store")

    @store_app.command("migrate")
    def store_migrate(
        ctx: typer.Context,
        to: Annotated[
            str,
            typer.Option(
                "--to",
                metavar="URL",
                help="The empty target database, e.g. postgresql+psycopg://airside@db/airside "
                "(leave the password out and set PGPASSWORD instead), or sqlite:////PATH.",
            ),
        ],
        as_json: JsonOpt = False,
    ) -> None:
        """Copy this installation's store into an empty database, check it there (rows,
        digests, audit chain) and say how to point the installation at it. Stop every
        other airside process on this installation first."""
        from airside.services.store_transfer import migrate_store

        st = state(ctx)
        try:
            with stage_progress(not as_json, _BAR_FROM_ROWS) as update:
                rep = migrate_store(st.airside, st.principal, to, on_progress=update)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json(rep.as_dict())
            return
        say(
            out,
            f"[bold green]copied[/] {rep.rows} rows in {len(rep.tables)} tables "
            f"to {esc(rep.target)} in {rep.seconds:.1f} s",
        )
        for check in rep.checks:
            say(out, f"  checked: {esc(check)}")
        hidden = " (with its password where *** stands, or in PGPASSWORD)"
        say(
            out,
            "Point the installation at the new store"
            f"{hidden if '***' in rep.setting else ''} and restart it:",
        )
        say(out, f"  export {esc(rep.setting)}")
        say(out, "The old store is left as it was; keep it until the new one has run a while.")

    @app.command("backup")
    def backup_cmd(
        ctx: typer.Context,
        dest: Annotated[
            Path, typer.Argument(metavar="DEST_DIR", help="A new (or empty) folder for it.")
        ],
        keys_to: Annotated[
            Path | None,
            typer.Option(
                "--keys-to",
                metavar="KEYS_DIR",
                help="Also write the installation's keys to this separate new folder (0700, "
                "files 0600). Keep it apart from the backup: offline, or in a secrets "
                "manager.",
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Snapshot the store while Airside runs: a consistent copy and its manifest. The
        keys are not in it (see --keys-to)."""
        from airside.services.backup import backup

        st = state(ctx)
        try:
            with stage_progress(not as_json) as update:
                rep = backup(st.airside, st.principal, dest, keys_to=keys_to, on_progress=update)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json(rep.as_dict())
            return
        say(
            out,
            f"[bold green]backed up[/] {sum(rep.tables.values())} rows "
            f"({rep.engine}, schema {esc(rep.revision)}, audit record {rep.audit_head_seq}) "
            f"to {esc(rep.path)}: {rep.bytes / 1e6:.1f} MB, sha256 {rep.sha256[:16]}…",
        )
        if rep.keys_to:
            say(
                out,
                f"keys written to {esc(rep.keys_to)} ({esc(', '.join(rep.key_files))}): "
                "store them apart from the backup, offline or in a secrets manager",
            )
        else:
            say(
                err,
                "[bold yellow]note[/]: the keys are not in the backup, and it cannot be "
                "restored without them; keep a copy of them apart from it "
                "(`airside backup DEST --keys-to KEYS_DIR`, or `airside keys export`)",
            )

    @app.command("restore")
    def restore_cmd(
        ctx: typer.Context,
        src: Annotated[
            Path, typer.Argument(metavar="SRC_DIR", help="A folder written by airside backup.")
        ],
        replace: Annotated[
            bool,
            typer.Option(
                "--replace",
                help="Replace a store that holds data (a copy of it is kept aside first).",
            ),
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Restore a backup into this installation's store, then verify it: the audit
        chain, the row counts, and every template decrypting with the keys present. Put
        the backup's keys in place first; stop every other airside process."""
        from airside.services.backup import restore

        st = state(ctx)
        try:
            with stage_progress(not as_json, _BAR_FROM_ROWS) as update:
                rep = restore(st.airside, st.principal, src, replace=replace, on_progress=update)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json(rep.as_dict())
            return
        say(
            out,
            f"[bold green]restored[/] the backup of {esc(rep.backup_created_at)}: "
            f"{sum(rep.tables.values())} rows",
        )
        say(
            out,
            f"  checked: audit chain intact ({rep.audit_records} records); row counts "
            f"equal the manifest's; {rep.templates} templates, {rep.gallery_seeds} gallery "
            f"seeds, {rep.event_crops} event crops and {rep.webhook_secrets} webhook "
            "secrets decrypt with this installation's keys",
        )
        if rep.kept_aside:
            say(
                out,
                f"  the store it replaced is kept at {esc(rep.kept_aside)} (a backup: "
                "restore it the same way, or delete it once it is not needed)",
            )
        for w in rep.warnings:
            say(err, f"[bold yellow]warning[/]: {esc(w)}")
