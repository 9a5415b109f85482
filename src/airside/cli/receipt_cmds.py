"""``airside receipt verify``: check an erasure receipt offline (governance/receipts.py),
and the writing of receipts (``subject erase --receipt-out``, ``consent withdraw
--receipt-out``)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from airside.cli.options import JsonOpt
from airside.cli.render import emit_json, err, esc, fail, out, say
from airside.errors import AirsideError

ReceiptOut = Annotated[
    Path | None,
    typer.Option(
        "--receipt-out",
        metavar="FILE",
        help="Also write the signed receipt to FILE (mode 0600); `airside receipt verify` "
        "checks it.",
    ),
]


def check_receipt_out(path: Path | None) -> None:
    """Refuse, before anything is erased, a place a receipt could not be written to."""
    if path is None:
        return
    if path.is_dir():
        raise AirsideError(f"{path} is a directory", code="bad_request")
    if not path.parent.is_dir():
        raise AirsideError(f"directory {path.parent} does not exist", code="bad_request")


def write_receipt(path: Path, receipt: dict[str, Any]) -> None:
    """Write ``receipt`` as JSON to ``path``: 0600 (it names the subject), whole or not at all."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(receipt, indent=2, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def register(app: typer.Typer) -> None:
    """Add ``receipt verify`` to ``app``."""
    receipt_app = typer.Typer(help="Erasure receipts.", no_args_is_help=True)
    app.add_typer(receipt_app, name="receipt")

    @receipt_app.command("verify")
    def receipt_verify(
        file: Annotated[
            Path, typer.Argument(metavar="FILE", help="A receipt (JSON) that Airside wrote.")
        ],
        key: Annotated[
            str | None,
            typer.Option(
                "--key",
                metavar="FINGERPRINT",
                help="The installation's key fingerprint (`airside audit checkpoint` prints "
                "it): the receipt must be signed by that key.",
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Check an erasure or withdrawal receipt offline: its signature, that it is signed by
        the key it names, and with --key that this key is the installation's. No data
        directory is needed. Exits 3 when the receipt does not verify."""
        from airside.governance import receipts

        if key is not None and not receipts.valid_fingerprint(key):
            fail(
                AirsideError(
                    f"--key must be a key fingerprint (16 hex characters), not {key!r}",
                    code="bad_request",
                ),
                as_json,
                exit_code=2,
            )
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            fail(AirsideError(f"cannot read {file}: {e}", code="unreadable"), as_json)
        try:
            doc = json.loads(text)
        except ValueError as e:
            fail(receipts.ReceiptError(f"{file} is not JSON: {e}"), as_json, exit_code=3)
        try:
            ok = receipts.verify(doc, key)
        except receipts.ReceiptError as e:
            fail(e, as_json, exit_code=3)
        if as_json:
            emit_json({**ok.as_dict(), "key_pinned": key is not None})
            return
        c = ok.content
        say(
            out,
            f"[bold green]receipt valid[/]: {esc(c.get('kind'))} of {esc(c.get('subject'))} at "
            f"{esc(c.get('erased_at'))}, audit record {ok.audit_seq}, receipt "
            f"{esc(ok.receipt)}, signed by key {esc(ok.key_fingerprint)}",
        )
        if key is None:
            say(
                err,
                "[bold yellow]note[/]: the receipt is signed by the key it carries; give the "
                "installation's fingerprint with --key to know that the installation signed it",
            )
