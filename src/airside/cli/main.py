"""``airside`` command line."""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from airside.cli.guard import GuardedGroup
from airside.cli.options import JsonOpt, parse_duration
from airside.cli.receipt_cmds import ReceiptOut, check_receipt_out, write_receipt
from airside.cli.render import emit_json, err, esc, fail, out, progress, say
from airside.cli.state import State
from airside.cli.state import state as _state
from airside.config import Settings
from airside.errors import AirsideError
from airside.governance.consent import BasisInput

if TYPE_CHECKING:
    from airside.services.erasure import ErasureReceipt

app = typer.Typer(
    help="Airside: consent-first face enrolment, verification and identification.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=GuardedGroup,  # an unexpected exception is a code and a logged incident (cli/guard.py)
)
gallery_app = typer.Typer(help="Manage purpose-bound galleries.", no_args_is_help=True)
audit_app = typer.Typer(help="Inspect the tamper-evident audit log.", no_args_is_help=True)
eval_app = typer.Typer(help="Measure accuracy on labelled data.", no_args_is_help=True)
app.add_typer(gallery_app, name="gallery")
app.add_typer(audit_app, name="audit")
app.add_typer(eval_app, name="eval")
review_app = typer.Typer(help="Two-person review of watchlist hits.", no_args_is_help=True)
app.add_typer(review_app, name="review")
report_app = typer.Typer(
    help="Reports an operator reads before switching on.", no_args_is_help=True
)
app.add_typer(report_app, name="report")
subject_app = typer.Typer(help="Act on one subject's data (erasure).", no_args_is_help=True)
consent_app = typer.Typer(help="Consent and other legal bases.", no_args_is_help=True)
app.add_typer(subject_app, name="subject")
app.add_typer(consent_app, name="consent")


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


@gallery_app.command("create")
def gallery_create(
    ctx: typer.Context,
    name: str,
    purpose: Annotated[str, typer.Option(help="The one purpose this gallery serves.")],
    quality_bar: Annotated[
        float | None, typer.Option(help="Minimum capture quality (0-100) to enrol.")
    ] = None,
    fmr: Annotated[float | None, typer.Option(help="Target false-match rate, e.g. 1e-3.")] = None,
    retain_for: Annotated[
        str | None, typer.Option(help="Purge templates older than this (e.g. 12h, 30d).")
    ] = None,
    retain_until: Annotated[
        datetime | None, typer.Option(help="Purge the whole gallery at this time.")
    ] = None,
    departs: Annotated[
        datetime | None,
        typer.Option(help="Flight departure: purge the gallery 12 h after it (boarding)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a gallery bound to a purpose, a retention and the current embedding model."""
    from airside.services.galleries import create_gallery

    try:
        info = create_gallery(
            _state(ctx).airside,
            _state(ctx).principal,
            name,
            purpose,
            quality_bar=quality_bar,
            fmr_target=fmr,
            retain_seconds=parse_duration(retain_for) if retain_for else None,
            retain_until=_aware(retain_until),
            departs=_aware(departs),
        )
    except (AirsideError, ValueError) as e:
        fail(e, as_json)
    if as_json:
        emit_json(info.as_dict())
    else:
        say(out, f"created gallery [bold]{esc(info.name)}[/] for purpose '{esc(info.purpose)}'")


@app.command("purge")
def purge_cmd(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option(help="Report what is due without deleting.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete every template past its gallery's retention, and audit records past theirs
    (cut at a signed checkpoint); everything deleted is recorded in the audit log."""
    from airside.services.retention import purge

    try:
        rep = purge(_state(ctx).airside, _state(ctx).principal, dry_run=dry_run)
    except AirsideError as e:
        fail(e, as_json)
    if as_json:
        emit_json(rep.as_dict())
        return
    verb = "due" if dry_run else "purged"
    say(out, f"{rep.templates} templates {verb}")
    for g, n in rep.galleries.items():
        say(out, f"  {esc(g)}: {n}")
    say(out, f"{rep.audit_records} audit records past retention {verb}")


@app.command("galleries")
def galleries(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List galleries with their purpose, model and size."""
    from airside.services.galleries import list_galleries

    try:
        rows = list_galleries(_state(ctx).airside, _state(ctx).principal)
    except AirsideError as e:
        fail(e, as_json)
    if as_json:
        emit_json([r.as_dict() for r in rows])
        return
    t = Table("gallery", "purpose", "subjects", "templates", "quality bar", "FMR", "model")
    for r in rows:
        t.add_row(
            esc(r.name),
            esc(r.purpose),
            str(r.subjects),
            str(r.templates),
            f"{r.quality_bar:g}",
            f"{r.fmr_target:g}",
            esc(r.contract),
        )
    out.print(t)


@app.command("subjects")
def subjects(
    ctx: typer.Context,
    gallery: Annotated[str | None, typer.Option(help="Only this gallery.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List enrolled subjects and the legal bases recorded for them."""
    from airside.services.subjects import list_subjects

    try:
        rows = list_subjects(_state(ctx).airside, _state(ctx).principal, gallery)
    except AirsideError as e:
        fail(e, as_json)
    if as_json:
        emit_json([r.as_dict() for r in rows])
        return
    t = Table("subject", "galleries (templates)", "legal bases")
    for r in rows:
        t.add_row(
            esc(r.subject),
            esc(", ".join(f"{g} ({n})" for g, n in r.galleries.items())),
            esc(", ".join(f"{b['kind']}:{b['purpose']}" for b in r.bases)),
        )
    out.print(t)


def _basis(
    kind: str | None, ref: str | None, evidence: Path | None, expires: datetime | None
) -> BasisInput | None:
    if kind is None:
        return None
    digest = None
    if evidence is not None:
        digest = hashlib.sha256(evidence.read_bytes()).hexdigest()
    return BasisInput(kind=kind, reference=ref, evidence_sha256=digest, expires_at=expires)


def _aware(t: datetime | None) -> datetime | None:
    return t.astimezone() if t is not None else None


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
        b = _basis(basis, basis_ref, evidence, _aware(expires))
        if csv_file is not None:
            if images or subject is not None:
                raise ValueError("give either --csv FILE or --subject with IMAGEs, not both")
            rows = _read_enrol_csv(csv_file, b, basis_ref)
            with progress("enrolling", len(rows), enabled=True) as tick:
                res = enrol_batch(
                    _state(ctx).airside,
                    _state(ctx).principal,
                    gallery,
                    rows,
                    skip_refused=skip_refused,
                    progress=tick,
                )
            if as_json:
                emit_json(res.as_dict())
            else:
                say(out, f"enrolled {len(res.enrolled)} subjects; refused {len(res.refused)} rows")
                for n, s, r in res.refused:
                    say(out, f"  row {n} ({esc(s)}): {esc(r.message)}")
            return
        if subject is None or not images:
            raise ValueError("give --subject and at least one IMAGE (or --csv FILE)")
        if b is None:
            raise AirsideError(
                "enrolment needs a recorded legal basis: add --basis consent (or another basis)",
                code="no_legal_basis",
            )
        result = do_enrol(_state(ctx).airside, _state(ctx).principal, gallery, subject, images, b)
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
            raise AirsideError(f"{path}: not UTF-8 text", code="bad_csv") from None
        except csv.Error as e:  # e.g. a field over csv.field_size_limit() (131,072)
            raise AirsideError(
                f"{path}: line {reader.reader.line_num}: not a valid CSV file ({e})", code="bad_csv"
            ) from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


@app.command("verify")
def verify(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="Two photos, or one with --subject.")],
    gallery: Annotated[str | None, typer.Option(help="Gallery of --subject.")] = None,
    subject: Annotated[str | None, typer.Option(help="Compare with this enrolled subject.")] = None,
    fmr: Annotated[float | None, typer.Option(help="Target false-match rate.")] = None,
    purpose: Annotated[
        str | None,
        typer.Option(help="The purpose of this search; refused unless it is the gallery's."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify 1:1: two photos of the same person? (or a photo against an enrolled subject)"""
    from airside.services.matching import verify_images, verify_subject

    try:
        if subject is not None:
            if gallery is None or len(images) != 1:
                raise ValueError("with --subject give --gallery and exactly one image")
            res = verify_subject(
                _state(ctx).airside,
                _state(ctx).principal,
                gallery,
                subject,
                images[0],
                fmr=fmr,
                purpose=purpose,
            )
        else:
            if len(images) != 2:
                raise ValueError("give exactly two images (or one with --gallery/--subject)")
            res = verify_images(
                _state(ctx).airside, _state(ctx).principal, images[0], images[1], fmr=fmr
            )
    except (AirsideError, ValueError) as e:
        fail(e, as_json)
    if as_json:
        emit_json(res.as_dict())
    else:
        verdict = "[bold green]MATCH[/]" if res.match else "[bold red]NO MATCH[/]"
        out.print(
            f"{verdict}  score {res.score:.4f}  threshold {res.threshold:.4f} "
            f"(FMR {res.fmr_target:g})"
        )


@app.command("identify")
def identify(
    ctx: typer.Context,
    image: Path,
    gallery: Annotated[str, typer.Option(help="Gallery to search.")] = ...,  # type: ignore[assignment]
    k: Annotated[int, typer.Option("--k", "--top", help="Candidates to return.")] = 5,
    fpir: Annotated[
        float | None, typer.Option(help="Target false-positive identification rate.")
    ] = None,
    purpose: Annotated[
        str | None,
        typer.Option(help="The purpose of this search; refused unless it is the gallery's."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Identify 1:N: who in the gallery is this, if anyone?"""
    from airside.services.matching import identify as do_identify

    try:
        st = _state(ctx)
        res = do_identify(st.airside, st.principal, gallery, image, k=k, fpir=fpir, purpose=purpose)
    except (AirsideError, ValueError) as e:
        fail(e, as_json)
    if as_json:
        emit_json(res.as_dict())
        return
    if res.match and res.review_case is not None:
        say(
            out,
            f"[bold yellow]HIT, NOT ACTIONABLE[/] {esc(res.candidates[0].subject)}: review case "
            f"{res.review_case} needs two reviewers (airside review confirm {res.review_case})",
        )
    elif res.match:
        say(out, f"[bold green]MATCH[/] {esc(res.candidates[0].subject)}")
    else:
        out.print("[bold red]NO MATCH[/]")
    t = Table("rank", "subject", "score")
    for i, c in enumerate(res.candidates, 1):
        t.add_row(str(i), esc(c.subject), f"{c.score:.4f}")
    out.print(t)
    out.print(f"threshold {res.threshold:.4f} for FPIR {res.fpir_target:g}")


@audit_app.command("verify")
def audit_verify(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Check the audit chain; names every altered, deleted, inserted or reordered record."""
    from airside.services.audit_service import verify_chain

    try:
        rep = verify_chain(_state(ctx).airside, _state(ctx).principal)
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


@subject_app.command("erase")
def subject_erase(
    ctx: typer.Context,
    subject: Annotated[str, typer.Argument(help="The subject's reference.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the receipt).")] = "erasure request",
    receipt_out: ReceiptOut = None,
    as_json: JsonOpt = False,
) -> None:
    """Erase a subject's templates, legal bases and index entries; prints a signed receipt."""
    from airside.services.erasure import erase_subject

    app_ = _state(ctx).airside
    _erasure(
        lambda: erase_subject(app_, _state(ctx).principal, subject, reason),
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

    app_ = _state(ctx).airside
    _erasure(
        lambda: withdraw_basis(app_, _state(ctx).principal, subject, purpose),
        as_json,
        f"withdrawn {esc(subject)} for {esc(purpose)}",
        receipt_out,
    )


def _show_case(case: Any, as_json: bool) -> None:
    if as_json:
        emit_json(case.as_dict())
        return
    state = "[bold green]ACTIONABLE[/]" if case.actionable else esc(case.status)
    say(
        out,
        f"case {case.id}: {state} — {esc(case.subject)} in {esc(case.gallery)} "
        f"(score {case.score:.4f}), opened by {esc(case.opened_by)} at {case.opened_at}, "
        f"deadline {case.deadline}",
    )
    for v in case.votes:
        say(out, f"  {esc(v['reviewer'])}: {v['decision']} {esc(v['note'])}")


@review_app.command("list")
def review_list(
    ctx: typer.Context,
    all_cases: Annotated[bool, typer.Option("--all", help="Include closed cases.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Open review cases (watchlist hits awaiting two confirmations)."""
    from airside.services.review import list_cases

    try:
        cases = list_cases(
            _state(ctx).airside, _state(ctx).principal, None if all_cases else "open"
        )
    except AirsideError as e:
        fail(e, as_json)
    if as_json:
        emit_json([c.as_dict() for c in cases])
        return
    for c in cases:
        _show_case(c, False)
    if not cases:
        say(out, "no cases")


def _vote(
    ctx: typer.Context,
    case: int,
    decision: str,
    note: str | None,
    as_json: bool,
) -> None:
    from airside.services.review import vote

    try:
        view = vote(_state(ctx).airside, _state(ctx).principal, case, decision, note)
    except (AirsideError, ValueError) as e:
        fail(e, as_json)
    _show_case(view, as_json)


@review_app.command("confirm")
def review_confirm(
    ctx: typer.Context,
    case: int,
    note: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Confirm a hit; it becomes actionable after a second, different reviewer confirms."""
    _vote(ctx, case, "confirm", note, as_json)


@review_app.command("reject")
def review_reject(
    ctx: typer.Context,
    case: int,
    note: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject a hit: the case closes and nobody may act on it."""
    _vote(ctx, case, "reject", note, as_json)


@report_app.command("governance")
def report_governance(
    ctx: typer.Context,
    html: Annotated[Path | None, typer.Option(help="Also write the report as HTML here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Each gallery's purpose, legal bases, retention, size, recent purges, audit state."""
    from airside.services.governance_report import build_report, render_html

    try:
        rep = build_report(_state(ctx).airside, _state(ctx).principal)
        if html is not None:
            html.parent.mkdir(parents=True, exist_ok=True)
            html.write_text(render_html(rep), encoding="utf-8")
    except (AirsideError, OSError) as e:
        fail(e, as_json)
    if as_json:
        emit_json(rep.as_dict())
        return
    t = Table("gallery", "purpose", "subjects", "templates", "bases in force", "retention")
    for g in rep.galleries:
        t.add_row(
            esc(g.name), esc(g.purpose), str(g.subjects), str(g.templates),
            esc(", ".join(f"{k}: {n}" for k, n in g.bases.items()) or "none"),
            esc(g.retention),
        )  # fmt: skip
    out.print(t)
    state = "intact" if rep.audit["ok"] else f"BROKEN ({len(rep.audit['problems'])} problems)"
    say(out, f"audit chain {state}, {rep.audit['records']} records")
    say(out, f"recent purges: {len(rep.recent_purges)}; erasures: {len(rep.recent_erasures)}")


@app.command("demo")
def demo(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Run the end-to-end demonstration on images shipped by registry packages."""
    from airside.demo import run_demo

    code = run_demo(as_json=as_json)
    raise typer.Exit(code)


from airside.cli import eval_cmds  # noqa: E402  (registers the eval sub-commands)

eval_cmds.register(eval_app)

from airside.cli import access_cmds, audit_cmds  # noqa: E402  (register their commands)

audit_cmds.register(audit_app)
access_cmds.register(app)

from airside.cli import keys_cmds  # noqa: E402  (registers keys rotate, gallery rekey)

keys_cmds.register(app, gallery_app)

from airside.cli import models_cmds  # noqa: E402  (registers models ..., gallery migrate)

models_cmds.register(app, gallery_app)

from airside.cli import track_cmds, watch_cmds  # noqa: E402  (eval track; watch)

track_cmds.register(eval_app)
watch_cmds.register(app)

from airside.cli import events_cmds  # noqa: E402  (registers events list, events crop)

events_cmds.register(app)

from airside.cli import fairness_cmds  # noqa: E402  (eval fairness; calibrate)

fairness_cmds.register(app, eval_app)

from airside.cli import receipt_cmds  # noqa: E402  (registers receipt verify)

receipt_cmds.register(app)
