"""``airside enrol``: enrol a subject, or a CSV batch, with a recorded legal basis."""

from __future__ import annotations

import csv
import hashlib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from airside.cli.options import JsonOpt, local_time
from airside.cli.render import emit_json, esc, fail, out, progress, say
from airside.cli.state import state
from airside.errors import AirsideError
from airside.governance.consent import BasisInput


def register(app: typer.Typer) -> None:
    """Add ``enrol`` to ``app``."""

    @app.command("enrol")
    def enrol(
        ctx: typer.Context,
        images: Annotated[list[Path] | None, typer.Argument(help="Photos of the subject.")] = None,
        gallery: Annotated[str, typer.Option(help="Gallery to enrol into.")] = ...,  # type: ignore[assignment]
        subject: Annotated[
            str | None, typer.Option(help="The subject's reference (not needed with --csv).")
        ] = None,
        basis: Annotated[
            str | None,
            typer.Option(
                help="Legal basis recorded for the gallery's purpose: consent, contract, "
                "legal_obligation, vital_interests or public_task."
            ),
        ] = None,
        basis_ref: Annotated[
            str | None, typer.Option(help="Reference of the law, mandate or form.")
        ] = None,
        evidence: Annotated[
            Path | None, typer.Option(help="File proving the basis (its SHA-256 is recorded).")
        ] = None,
        expires: Annotated[
            datetime | None, typer.Option(help="When the basis expires (ISO date/time).")
        ] = None,
        csv_file: Annotated[
            Path | None,
            typer.Option("--csv", help="Batch: CSV with columns subject,image[,basis,basis_ref]."),
        ] = None,
        skip_refused: Annotated[
            bool,
            typer.Option(help="Batch: enrol the good rows and list refused ones (default: none)."),
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Enrol a subject (or a CSV batch) with a recorded consent or legal basis."""
        from airside.services.enrolment import enrol as do_enrol
        from airside.services.enrolment import enrol_batch

        try:
            b = _basis(basis, basis_ref, evidence, local_time(expires))
            if csv_file is not None:
                if images or subject is not None:
                    raise ValueError("give either --csv FILE or --subject with IMAGEs, not both")
                rows = _read_enrol_csv(csv_file, b, basis_ref)
                with progress("enrolling", len(rows), enabled=True) as tick:
                    res = enrol_batch(
                        state(ctx).airside,
                        state(ctx).principal,
                        gallery,
                        rows,
                        skip_refused=skip_refused,
                        progress=tick,
                    )
                if as_json:
                    emit_json(res.as_dict())
                else:
                    say(
                        out,
                        f"enrolled {len(res.enrolled)} subjects; refused {len(res.refused)} rows",
                    )
                    for n, s, r in res.refused:
                        say(out, f"  row {n} ({esc(s)}): {esc(r.message)}")
                return
            if subject is None or not images:
                raise ValueError("give --subject and at least one IMAGE (or --csv FILE)")
            if b is None:
                raise AirsideError(
                    "enrolment needs a recorded legal basis: add --basis consent (or another "
                    "basis)",
                    code="no_legal_basis",
                )
            result = do_enrol(state(ctx).airside, state(ctx).principal, gallery, subject, images, b)
        except (AirsideError, ValueError, OSError) as e:
            fail(e, as_json)
        if as_json:
            emit_json(result.as_dict())
        else:
            say(
                out,
                f"enrolled [bold]{esc(result.subject)}[/] in {esc(result.gallery)}: "
                f"{result.added} new, {result.already_enrolled} already enrolled, "
                f"{result.templates} templates in all",
            )


def _basis(
    kind: str | None, ref: str | None, evidence: Path | None, expires: datetime | None
) -> BasisInput | None:
    if kind is None:
        return None
    digest = None
    if evidence is not None:
        digest = hashlib.sha256(evidence.read_bytes()).hexdigest()
    return BasisInput(kind=kind, reference=ref, evidence_sha256=digest, expires_at=expires)


def _read_enrol_csv(path: Path, default: BasisInput | None, default_ref: str | None) -> list[Any]:
    """The rows of an enrolment CSV; a file that is not one is refused as ``bad_csv``
    (an over-long field, a stray quote, bytes that are not UTF-8), naming the line."""
    from airside.services.enrolment import EnrolRow

    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        try:
            cols = set(reader.fieldnames or [])
            if not {"subject", "image"} <= cols:
                raise ValueError(f"{path}: needs columns subject,image (found {sorted(cols)})")
            rows = []
            for rec in reader:
                kind = (rec.get("basis") or "").strip()
                b = (
                    BasisInput(kind=kind, reference=(rec.get("basis_ref") or default_ref or None))
                    if kind
                    else default
                )
                img = Path(rec["image"] or "")
                if not img.is_absolute():
                    img = path.parent / img
                rows.append(EnrolRow(rec["subject"] or "", img, b))
        except UnicodeDecodeError:
            raise AirsideError(
                f"{path}: after line {reader.reader.line_num}: not UTF-8 text", code="bad_csv"
            ) from None
        except csv.Error as e:  # e.g. a field over csv.field_size_limit() (131,072)
            raise AirsideError(
                f"{path}: line {reader.reader.line_num}: not a valid CSV file ({e})", code="bad_csv"
            ) from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows
