"""``airside principal ...`` and ``airside apikey ...``: who may call Airside, and their keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from airside.cli.options import JsonOpt, parse_duration
from airside.cli.render import emit_json, esc, fail, out, say
from airside.cli.state import state
from airside.errors import AirsideError


def _scope(text: str) -> tuple[str, str]:
    """'GALLERY' or 'GALLERY=PURPOSE' (shell patterns, e.g. 'boarding:*=boarding')."""
    gallery, _, purpose = text.partition("=")
    return gallery.strip(), (purpose.strip() or "*")


def register(app: typer.Typer) -> None:
    """Add the ``principal`` and ``apikey`` groups to ``app``."""
    principal_app = typer.Typer(
        help="Principals (people, cameras, services), their roles and gallery scopes.",
        no_args_is_help=True,
    )
    apikey_app = typer.Typer(
        help="API keys for remote callers and camera services.", no_args_is_help=True
    )
    app.add_typer(principal_app, name="principal")
    app.add_typer(apikey_app, name="apikey")

    @principal_app.command("roles")
    def principal_roles(as_json: JsonOpt = False) -> None:
        """The roles and what each may do."""
        from airside.governance.access import GLOBAL_ROLES, ROLES

        if as_json:
            emit_json({r: {"may": d, "all_galleries": r in GLOBAL_ROLES} for r, d in ROLES.items()})
            return
        t = Table("role", "may", "galleries")
        for r, d in ROLES.items():
            t.add_row(r, d, "all" if r in GLOBAL_ROLES else "its scopes")
        out.print(t)

    @principal_app.command("add")
    def principal_add(
        ctx: typer.Context,
        name: str,
        role: Annotated[str, typer.Option(help="admin, enrolment_officer, operator, ...")],
        scope: Annotated[
            list[str] | None,
            typer.Option(help="GALLERY or GALLERY=PURPOSE (shell patterns); repeatable."),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Register a principal with a role and the galleries it may use."""
        from airside.services.principal_admin import add_principal

        st = state(ctx)
        try:
            p = add_principal(
                st.airside, st.principal, name, role, [_scope(x) for x in scope or []]
            )
        except (AirsideError, ValueError) as e:
            fail(e, as_json)
        if as_json:
            emit_json({"principal": p.name, "role": p.role})
        else:
            say(out, f"added {esc(p.name)} as {esc(p.role)}")

    @principal_app.command("grant")
    def principal_grant(
        ctx: typer.Context,
        name: str,
        gallery: Annotated[str, typer.Argument(help="Gallery name or pattern, e.g. boarding:*")],
        purpose: Annotated[str, typer.Option(help="Purpose pattern the grant is for.")] = "*",
        as_json: JsonOpt = False,
    ) -> None:
        """Let a principal use the galleries matching GALLERY (for PURPOSE)."""
        from airside.services.principal_admin import grant

        st = state(ctx)
        try:
            grant(st.airside, st.principal, name, gallery, purpose)
        except (AirsideError, ValueError) as e:
            fail(e, as_json)
        _done(as_json, f"granted {name} {gallery} for {purpose}")

    @principal_app.command("revoke")
    def principal_revoke(
        ctx: typer.Context,
        name: str,
        gallery: str,
        purpose: Annotated[str, typer.Option(help="Purpose pattern of the grant.")] = "*",
        as_json: JsonOpt = False,
    ) -> None:
        """Take a gallery scope away from a principal."""
        from airside.services.principal_admin import revoke_scope

        st = state(ctx)
        try:
            revoke_scope(st.airside, st.principal, name, gallery, purpose)
        except (AirsideError, ValueError) as e:
            fail(e, as_json)
        _done(as_json, f"revoked {name} {gallery} for {purpose}")

    @principal_app.command("disable")
    def principal_disable(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
        """Disable a principal and revoke its API keys."""
        from airside.services.principal_admin import disable_principal

        st = state(ctx)
        try:
            disable_principal(st.airside, st.principal, name)
        except (AirsideError, ValueError) as e:
            fail(e, as_json)
        _done(as_json, f"disabled {name}")

    @principal_app.command("list")
    def principal_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
        """Principals, roles, scopes and keys (never the keys' secrets)."""
        from airside.services.principal_admin import list_principals

        st = state(ctx)
        try:
            rows = list_principals(st.airside, st.principal)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json([r.as_dict() for r in rows])
            return
        t = Table("principal", "role", "scopes", "keys", "state")
        for r in rows:
            scopes = ", ".join(f"{s['gallery']}={s['purpose']}" for s in r.scopes) or "-"
            live = [k["key_id"] for k in r.keys if not k["revoked"]]
            t.add_row(
                esc(r.name),
                r.role,
                esc(scopes),
                ", ".join(live) or "-",
                "disabled" if r.disabled else "active",
            )
        out.print(t)

    @apikey_app.command("issue")
    def apikey_issue(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="The principal the key acts as.")],
        expires: Annotated[
            str | None, typer.Option(help="Lifetime, e.g. 90d or 12h (default: none).")
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Issue an API key. It is printed once; only its hash is stored."""
        from airside.services.principal_admin import issue_key

        st = state(ctx)
        try:
            life = timedelta(seconds=parse_duration(expires)) if expires else None
            k = issue_key(st.airside, st.principal, name, expires_in=life)
        except (AirsideError, ValueError) as e:
            fail(e, as_json)
        if as_json:
            emit_json(
                {
                    "key_id": k.key_id,
                    "principal": k.principal,
                    "key": k.secret,
                    "expires_at": k.expires_at,
                }
            )
            return
        say(out, f"API key {k.key_id} for {esc(k.principal)} (expires {k.expires_at or 'never'}):")
        # Printed plain, so that it can be copied whole; it is not shown again.
        print(k.secret)

    @apikey_app.command("revoke")
    def apikey_revoke(ctx: typer.Context, key_id: str, as_json: JsonOpt = False) -> None:
        """Revoke an API key; any later use is refused and audited."""
        from airside.services.principal_admin import revoke_key

        st = state(ctx)
        try:
            revoke_key(st.airside, st.principal, key_id)
        except AirsideError as e:
            fail(e, as_json)
        _done(as_json, f"revoked API key {key_id}")


def _done(as_json: bool, message: str) -> None:
    if as_json:
        emit_json({"ok": True, "message": message})
    else:
        say(out, esc(message))
