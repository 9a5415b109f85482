"""``airside eval ...``: accuracy on labelled data, and (re)building calibration tables."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any

import typer

from airside.cli.options import FaceOpt, WorkersOpt, face_policy
from airside.cli.render import emit_json, fail, out, progress
from airside.cli.state import state
from airside.config import Settings
from airside.errors import AirsideError


def _settings(ctx: typer.Context) -> Settings:
    st = ctx.obj
    return st.settings  # type: ignore[no-any-return]


def _contract(settings: Settings) -> Any:
    from airside.vision.factory import default_contract

    return default_contract(settings)


def register(eval_app: typer.Typer) -> None:
    @eval_app.command("verify")
    def eval_verify(
        ctx: typer.Context,
        pairs: Annotated[
            Path | None, typer.Option(help="CSV img_a,img_b,same[,fold] (paths relative to it).")
        ] = None,
        identities: Annotated[
            Path | None,
            typer.Option(help="CSV image,identity: score every pair (for --calibrate)."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
        html: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
        scores_out: Annotated[
            Path | None, typer.Option(help="Write every pair back with its score.")
        ] = None,
        do_calibrate: Annotated[
            bool,
            typer.Option("--calibrate", help="Fit the model's FMR->threshold table."),
        ] = False,
        calibration_out: Annotated[
            Path | None,
            typer.Option(help="Where to write the table (default: the data directory)."),
        ] = None,
        face: FaceOpt = "central",
        workers: WorkersOpt = None,
    ) -> None:
        """Verification accuracy on labelled pairs: accuracy, EER, TAR at FAR."""
        from airside.evaluation.datasets import read_identities, read_pairs
        from airside.evaluation.report import render_verification_report
        from airside.evaluation.verification import (
            all_pairs_scores,
            evaluate_pairs,
        )

        settings = _settings(ctx)
        try:
            policy = face_policy(face)
            if (pairs is None) == (identities is None):
                raise ValueError("give exactly one of --pairs or --identities")
            if scores_out is not None and pairs is None:
                raise ValueError("--scores-out writes pairs back, so it needs --pairs")
            contract = _contract(settings)
            if do_calibrate:
                from airside.services.calibration_service import may_fit_table

                may_fit_table(state(ctx).airside, state(ctx).principal)
            if pairs is not None:
                ps = read_pairs(pairs)
                n_images = len(set(ps.img_a + ps.img_b))
                with progress("embedding", n_images) as tick:
                    run = evaluate_pairs(
                        ps, settings, contract, policy=policy, workers=workers, progress=tick
                    )
                summary, genuine, impostor = run.summary, run.genuine, run.impostor
                source = str(pairs)
            else:
                assert identities is not None
                ids = read_identities(identities)
                with progress("embedding", len(set(ids.images))) as tick:
                    genuine, impostor, failed = all_pairs_scores(
                        ids, settings, contract, policy=policy, workers=workers, progress=tick
                    )
                from airside.evaluation import metrics

                summary = {
                    "images": len(set(ids.images)),
                    "failures_to_enrol": failed,
                    "genuine_pairs": int(genuine.size),
                    "impostor_pairs": int(impostor.size),
                    "eer": round(metrics.eer(genuine, impostor), 6),
                    "model": contract.fingerprint,
                }
                source = str(identities)
            if do_calibrate:
                from airside.services.calibration_service import fit_fmr_table

                st = state(ctx)
                _table, fitted = fit_fmr_table(
                    st.airside, st.principal, genuine, impostor, contract,
                    source=source, out=calibration_out,
                )  # fmt: skip
                summary["calibration"] = {
                    "path": fitted.path,
                    "impostors": fitted.impostors,
                    "finest_fmr": fitted.finest_fmr,
                }
            # Written after calibration, so a refused calibration leaves no scores file behind.
            if scores_out is not None and pairs is not None:
                _write_scores(scores_out, ps.rows, run.scores)
            if html is not None:
                report = render_verification_report(
                    genuine, impostor, summary, f"Verification: {source}"
                )
                html.write_text(report)
        except (ValueError, OSError, AirsideError) as e:
            fail(e, as_json)
        _emit_summary(summary, as_json)

    @eval_app.command("identify")
    def eval_identify(
        ctx: typer.Context,
        identities: Annotated[Path, typer.Option(help="CSV image,identity.")],
        as_json: Annotated[bool, typer.Option("--json")] = False,
        html: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
        face: FaceOpt = "central",
        workers: WorkersOpt = None,
    ) -> None:
        """Identification accuracy: rank-1 and FNIR at FPIR 0.01 / 0.003."""
        from airside.evaluation.datasets import read_identities
        from airside.evaluation.identification import evaluate_identification
        from airside.evaluation.report import render_identification_report

        settings = _settings(ctx)
        try:
            policy = face_policy(face)
            ids = read_identities(identities)
            contract = _contract(settings)
            with progress("embedding", len(set(ids.images))) as tick:
                summary = evaluate_identification(
                    ids, settings, contract, policy=policy, workers=workers, progress=tick
                )
            if html is not None:
                html.write_text(
                    render_identification_report(summary, f"Identification: {identities}")
                )
        except (ValueError, OSError) as e:
            fail(e, as_json)
        _emit_summary(summary, as_json)

    @eval_app.command("in-domain")
    def eval_in_domain(
        ctx: typer.Context,
        identities: Annotated[Path, typer.Option(help="CSV image,identity.")],
        splits: Annotated[int, typer.Option(min=1, help="Random enrol/test splits.")] = 5,
        as_json: Annotated[bool, typer.Option("--json")] = False,
        face: FaceOpt = "central",
        workers: WorkersOpt = None,
    ) -> None:
        """FMR and FNMR of a table fitted on half of each person's images (label-free, as a
        gallery's own) against the shipped table's, on the other half (docs/thresholds.md)."""
        from airside.evaluation.datasets import read_identities
        from airside.evaluation.in_domain import run

        settings = _settings(ctx)
        try:
            contract = _contract(settings)
            n = len(set(read_identities(identities).images))
            with progress("embedding", n) as tick:
                report = run(identities, settings, contract, splits=splits,
                             policy=face_policy(face), workers=workers, progress=tick)  # fmt: skip
        except (ValueError, OSError, AirsideError) as e:
            fail(e, as_json)
        summary = report.as_dict()
        if as_json:
            emit_json(summary)
            return
        results = summary.pop("results")
        _emit_summary(summary, False)
        for r in results:
            for name in ("in_domain", "shipped"):
                m = r[name]
                if m is not None:
                    out.print(
                        f"FMR label {r['label']:g}, {name:>9} table: FMR {m['fmr']:.3g} "
                        f"({m['fmr_over_label']:.2f}x, worst split "
                        f"{m['worst_fmr_over_label']:.2f}x), FNMR {m['fnmr']:.4f}",
                        highlight=False, markup=False,
                    )  # fmt: skip


def _emit_summary(summary: dict[str, Any], as_json: bool) -> None:
    """The summary as JSON, or one ``key: value`` line each."""
    if as_json:
        emit_json(summary)
    else:
        for k, v in summary.items():
            out.print(f"{k:>20}: {v}", highlight=False, markup=False)


def _write_scores(path: Path, rows: list[dict[str, str]], scores: list[float | None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = [*rows[0].keys(), "score"]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r, s in zip(rows, scores, strict=True):
            w.writerow({**r, "score": "" if s is None else f"{s:.6f}"})
    tmp.replace(path)
