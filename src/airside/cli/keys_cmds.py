"""``airside keys rotate`` and ``airside gallery rekey``: template protection for operators;
``airside keys init`` and ``airside keys export``: key sets for several machines
(docs/deployment.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from airside.cli.options import JsonOpt
from airside.cli.render import emit_json, esc, fail, out, say
from airside.cli.state import state
from airside.errors import AirsideError

if TYPE_CHECKING:
    from airside.services.key_sets import KeySetReport

ToDir = Annotated[
    Path,
    typer.Option(
        "--to",
        metavar="DIR",
        help="A new or empty directory: created 0700, one 0600 file per key.",
    ),
]


def register(app: typer.Typer, gallery_app: typer.Typer) -> None:
    """Add the ``keys`` group (``rotate``, ``init``, ``export``) to ``app`` and ``rekey`` to
    ``gallery_app``."""

    keys_app = typer.Typer(
        help="Installation keys: template encryption (docs/template_protection.md) and key "
        "sets shared by several machines (docs/deployment.md).",
        no_args_is_help=True,
    )
    app.add_typer(keys_app, name="keys")

    def say_set(rep: KeySetReport, what: str) -> None:
        say(out, f"{what} in {esc(rep.directory)}: {esc(', '.join(rep.files))}")
        say(out, f"signing key fingerprint {esc(rep.key_fingerprint)}")
        say(
            out,
            "hand the directory to your secrets manager and point AIRSIDE_SECRETS_DIR at it "
            "on every machine (docs/deployment.md)",
        )

    @keys_app.command("init")
    def keys_init(to: ToDir, as_json: JsonOpt = False) -> None:
        """Write a fresh, complete key set for a new installation of several machines
        (signing, registry, probe digest and template keys). Refuses a directory that
        already holds keys."""
        from airside.services.key_sets import init_key_set

        try:
            rep = init_key_set(to)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json(rep.as_dict())
            return
        say_set(rep, "new key set")

    @keys_app.command("export")
    def keys_export(ctx: typer.Context, to: ToDir, as_json: JsonOpt = False) -> None:
        """Copy this installation's keys to a directory (audited), so that its first
        machine's keys can be handed to a secrets manager. Refuses a directory that
        already holds keys."""
        from airside.services.key_sets import export_key_set

        try:
            rep = export_key_set(state(ctx).airside, state(ctx).principal, to)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json(rep.as_dict())
            return
        say_set(rep, "this installation's keys")

    @keys_app.command("rotate")
    def keys_rotate(
        ctx: typer.Context,
        retire_old: Annotated[
            bool,
            typer.Option(
                "--retire-old",
                help="After re-encrypting, remove the previous keys from the key ring.",
            ),
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Re-encrypt every template under a new key (the first run creates the key ring
        and encrypts existing templates). Scores do not change."""
        from airside.services.template_keys import rotate_keys

        try:
            rep = rotate_keys(state(ctx).airside, state(ctx).principal, retire_old=retire_old)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json(rep.as_dict())
            return
        say(
            out,
            f"{'new key' if rep.created else 'key'} {esc(rep.key_id)}: re-encrypted "
            f"{rep.templates} templates, {rep.galleries} gallery seeds and "
            f"{rep.event_crops} event crops ({esc(rep.source)})",
        )
        if rep.retired:
            say(out, f"retired {esc(', '.join(rep.retired))}")
        elif rep.previous:
            say(
                out,
                f"previous keys {esc(', '.join(rep.previous))} are still in the ring; "
                "remove them with `airside keys rotate --retire-old`",
            )

    @gallery_app.command("rekey")
    def gallery_rekey(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="The gallery to re-key.")],
        as_json: JsonOpt = False,
    ) -> None:
        """Give a gallery a new secret transform: its stored templates can no longer be
        linked to earlier copies or to other galleries. Scores do not change."""
        from airside.services.template_keys import rekey_gallery

        try:
            rep = rekey_gallery(state(ctx).airside, state(ctx).principal, name)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json(rep.as_dict())
            return
        say(
            out,
            f"re-keyed gallery [bold]{esc(rep.gallery)}[/]: {rep.templates} templates "
            f"under key {esc(rep.key_id)}",
        )
