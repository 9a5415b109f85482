"""``airside subject erase`` and ``airside consent withdraw``: erasure with a signed receipt."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from airside.cli.options import JsonOpt
from airside.cli.receipt_cmds import ReceiptOut, check_receipt_out, write_receipt
from airside.cli.render import emit_json, err, esc, fail, out, say
from airside.cli.state import state
from airside.errors import AirsideError

if TYPE_CHECKING:
    from airside.services.erasure import ErasureReceipt


def register(app: typer.Typer) -> None:
    """Add the ``subject`` group (``erase``) and the ``consent`` group (``withdraw``)."""
    subject_app = typer.Typer(help="Act on one subject's data (erasure).", no_args_is_help=True)
    consent_app = typer.Typer(help="Consent and other legal bases.", no_args_is_help=True)
    app.add_typer(subject_app, name="subject")
    app.add_typer(consent_app, name="consent")

    @subject_app.command("erase")
    def subject_erase(
        ctx: typer.Context,
        subject: Annotated[str, typer.Argument(help="The subject's reference.")],
        reason: Annotated[
            str, typer.Option(help="Why (recorded in the receipt).")
        ] = "erasure request",
        receipt_out: ReceiptOut = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Erase a subject's templates, legal bases and index entries; prints a signed receipt."""
        from airside.services.erasure import erase_subject

        app_ = state(ctx).airside
        _erasure(
            lambda: erase_subject(app_, state(ctx).principal, subject, reason),
            as_json,
            f"erased subject {esc(subject)}",
            receipt_out,
        )

    @consent_app.command("withdraw")
    def consent_withdraw(
        ctx: typer.Context,
        subject: Annotated[str, typer.Argument(help="The subject's reference.")],
        purpose: Annotated[str, typer.Option(help="The purpose the consent was given for.")],
        receipt_out: ReceiptOut = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Withdraw consent for a purpose: erases the subject from that purpose's galleries."""
        from airside.services.erasure import withdraw_basis

        app_ = state(ctx).airside
        _erasure(
            lambda: withdraw_basis(app_, state(ctx).principal, subject, purpose),
            as_json,
            f"withdrawn {esc(subject)} for {esc(purpose)}",
            receipt_out,
        )


def _erasure(
    action: Callable[[], ErasureReceipt],
    as_json: bool,
    headline: str,
    receipt_out: Path | None = None,
) -> None:
    """Run an erasing service call and print its signed receipt (also to ``receipt_out``)."""
    try:
        check_receipt_out(receipt_out)
        receipt = action()
    except AirsideError as e:
        fail(e, as_json)
    doc = receipt.as_dict()
    if receipt_out is not None:
        try:
            write_receipt(receipt_out, doc)
        except OSError as e:
            emit_json(doc)  # the erasure is done: its receipt must not be lost
            say(err, f"[bold red]error[/] (receipt_not_written): {esc(e)}")
            raise typer.Exit(1) from None
    if as_json:
        emit_json(doc)
        return
    say(
        out,
        f"{headline}: erased {receipt.templates} templates from "
        f"{esc(', '.join(receipt.galleries) or 'no gallery')}, {receipt.legal_bases} legal "
        f"bases; receipt {receipt.receipt} (audit record {receipt.audit_seq}), signed by "
        f"key {receipt.key_fingerprint}"
        + (f", written to {esc(receipt_out)}" if receipt_out is not None else ""),
    )
