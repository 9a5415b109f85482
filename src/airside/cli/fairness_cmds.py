"""``airside eval fairness`` (demographic differentials) and ``airside calibrate`` (the
label-free fair calibration of the model in use). See docs/fairness.md.

Demographic labels enter Airside here, through ``eval fairness --group``, and go only to
``airside.evaluation.fairness`` (and its HTML report): they are read to *measure*, never
stored and never passed to a service. ``calibrate`` has no way to take one.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from airside.cli.options import FaceOpt, WorkersOpt, face_policy
from airside.cli.render import emit_json, esc, fail, out, progress, say
from airside.errors import AirsideError

if TYPE_CHECKING:
    from airside.biometrics.fair_calibration import FitParams
    from airside.governance.principals import Principal
    from airside.services.app import Airside


def _group_column(path: Path, column: str) -> list[str]:
    """One value of ``column`` per data row of a CSV (a missing column is refused)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        try:
            cols = list(reader.fieldnames or [])
            if column not in cols:
                raise ValueError(
                    f"{path}: no group column {column!r} (columns: {', '.join(cols) or 'none'})"
                )
            return [(row.get(column) or "").strip() for row in reader]
        except UnicodeDecodeError:
            raise ValueError(
                f"{path}, after line {reader.reader.line_num}: not UTF-8 text"
            ) from None
        except csv.Error as e:  # a field over csv.field_size_limit(), a stray quote...
            raise ValueError(
                f"{path}, line {reader.reader.line_num}: not a valid CSV file ({e})"
            ) from None


def _fmt_rate(rate: float | None, ci: list[float] | None, k: int, n: int) -> str:
    """A rate is never printed without its count."""
    if rate is None or ci is None:
        return "- (0 pairs)"
    return f"{rate:.4g} ({k}/{n}) [{ci[0]:.3g}, {ci[1]:.3g}]"


def _print_summary(title: str, summary: dict[str, Any]) -> None:
    from rich.table import Table

    ov = summary["overall"]
    fmr = _fmt_rate(ov["fmr"], ov["fmr_ci"], ov["false_matches"], ov["impostors"])
    fnmr = _fmt_rate(ov["fnmr"], ov["fnmr_ci"], ov["false_non_matches"], ov["genuines"])
    say(
        out,
        f"[bold]{esc(title)}[/]: in-domain threshold {summary['threshold']:.6g} (FMR "
        f"{summary['fmr_target']:g} over {ov['impostors']} impostor pairs); overall FMR "
        f"{esc(fmr)}, FNMR {esc(fnmr)}",
    )
    dep = summary.get("deployment")
    dep_groups: dict[str, Any] = {}
    if dep is not None and dep["threshold"] is None:
        say(out, f"deployment threshold: none ({esc(dep['source'])}: {esc(dep['note'])})")
    elif dep is not None:
        dov = dep["overall"]
        dep_groups = dep["groups"]
        dfmr = _fmt_rate(dov["fmr"], dov["fmr_ci"], dov["false_matches"], dov["impostors"])
        dfnmr = _fmt_rate(dov["fnmr"], dov["fnmr_ci"], dov["false_non_matches"], dov["genuines"])
        say(
            out,
            f"deployment threshold {dep['threshold']:.6g} ({esc(dep['source'])}); overall FMR "
            f"{esc(dfmr)}, FNMR {esc(dfnmr)}",
        )
    t = Table("group", "FMR (errors/pairs) [95% CI]", "FNMR (errors/pairs) [95% CI]")
    if dep_groups:
        t.add_column("FMR at deployment threshold")
        t.add_column("FNMR at deployment threshold")
    t.add_column("status")
    for name, g in summary["groups"].items():
        cells = [
            esc(name),
            esc(_fmt_rate(g["fmr"], g["fmr_ci"], g["false_matches"], g["impostors"])),
            esc(_fmt_rate(g["fnmr"], g["fnmr_ci"], g["false_non_matches"], g["genuines"])),
        ]
        if dep_groups:
            d = dep_groups[name]
            cells += [
                esc(_fmt_rate(d["fmr"], d["fmr_ci"], d["false_matches"], d["impostors"])),
                esc(_fmt_rate(d["fnmr"], d["fnmr_ci"], d["false_non_matches"], d["genuines"])),
            ]
        cells.append(
            esc(g["status"] + (": " + "; ".join(g["too_small"]) if g["too_small"] else ""))
        )
        t.add_row(*cells)
    out.print(t)
    for key in ("fmr", "fnmr"):
        detail = summary[f"{key}_differential_detail"]
        if detail["value"] is not None:
            say(
                out,
                f"{key.upper()} differential {detail['value']:.3g} "
                f"({esc(detail['max_group'])} / {esc(detail['min_group'])})",
            )
        else:
            say(out, f"{key.upper()} differential not measurable: {esc(detail['note'])}")


def _comparison_row(method: str, summary: dict[str, Any]) -> dict[str, Any]:
    ov = summary["overall"]
    dep = summary.get("deployment") or {}
    dov = dep.get("overall") or {}
    return {
        "method": method,
        "threshold": summary["threshold"],
        "fmr_differential": summary["fmr_differential"],
        "fnmr_differential": summary["fnmr_differential"],
        "tar": ov["tar"],
        "genuines": ov["genuines"],
        "false_non_matches": ov["false_non_matches"],
        "deployment_threshold": dep.get("threshold"),
        "deployment_fmr": dov.get("fmr"),
        "deployment_tar": dov.get("tar"),
        "groups": {
            name: {
                "false_matches": g["false_matches"],
                "impostors": g["impostors"],
                "fmr": g["fmr"],
            }
            for name, g in summary["groups"].items()
            if g["kind"] == "within"
        },
    }


def register(app: typer.Typer, eval_app: typer.Typer) -> None:
    """Add ``eval fairness`` to ``eval_app`` and ``calibrate`` to ``app``."""

    @eval_app.command("fairness")
    def eval_fairness(
        ctx: typer.Context,
        group: Annotated[
            str,
            typer.Option(
                "--group",
                help="CSV column naming each pair's group (pairs: 'a' within, 'a|b' across; "
                "identities: each image's group). Used to measure only.",
            ),
        ],
        pairs: Annotated[
            Path | None, typer.Option(help="CSV img_a,img_b,same,GROUP (paths relative to it).")
        ] = None,
        identities: Annotated[
            Path | None, typer.Option(help="CSV image,identity,GROUP: every pair is scored.")
        ] = None,
        fmr: Annotated[
            float, typer.Option(help="Target FMR over all pairs that sets the threshold.")
        ] = 1e-3,
        compare: Annotated[
            bool,
            typer.Option(
                "--compare",
                help="Also the fair calibration, Z-norm and nearest-impostor cohort "
                "normalisation, each fitted on other identities (needs --identities).",
            ),
        ] = False,
        installed: Annotated[
            bool,
            typer.Option("--installed", help="Also with the fair calibration installed now."),
        ] = False,
        folds: Annotated[int, typer.Option(help="Identity folds for --compare.")] = 5,
        min_genuines: Annotated[
            int, typer.Option(help="Genuine pairs a group needs for its FNMR to count.")
        ] = 20,
        as_json: Annotated[bool, typer.Option("--json")] = False,
        html: Annotated[Path | None, typer.Option(help="Write an HTML report here.")] = None,
        face: FaceOpt = "central",
        workers: WorkersOpt = None,
    ) -> None:
        """Per-group FMR and FNMR at the in-domain and the deployment threshold, and the
        differentials."""
        from airside.biometrics.calibration import deployed_calibration_path, load_calibration
        from airside.biometrics.fair_calibration import ImageStats, load_fair_calibration
        from airside.evaluation.datasets import read_identities, read_pairs
        from airside.evaluation.fairness import (
            METHOD_TITLES,
            DeploymentThreshold,
            GroupedScores,
            all_pairs,
            crossfit_scores,
            deployment_threshold,
            fairness_summary,
            group_names_of_pairs,
        )
        from airside.evaluation.fairness_report import render_fairness_report
        from airside.evaluation.verification import (
            identity_templates,
            pair_templates,
            row_scores,
        )
        from airside.vision.factory import default_contract

        settings = ctx.obj.settings
        try:
            policy = face_policy(face)
            if (pairs is None) == (identities is None):
                raise ValueError("give exactly one of --pairs or --identities")
            if compare and identities is None:
                raise ValueError(
                    "--compare fits normalisations on other people's images, so it needs "
                    "--identities (who is who)"
                )
            if not (0.0 < fmr < 1.0):
                raise ValueError("--fmr must be in (0, 1)")
            contract = default_contract(settings)
            runs: dict[str, tuple[GroupedScores, dict[str, Any]]] = {}
            meta: dict[str, Any] = {"group_column": group, "model": contract.fingerprint}
            fair = load_fair_calibration(contract, settings.data_dir) if installed else None
            if installed and fair is None:
                raise ValueError(
                    "no fair calibration is installed for this model (airside calibrate)"
                )
            if pairs is not None:
                ps = read_pairs(pairs)
                labels = _group_column(pairs, group)
                with progress("embedding", len(set(ps.img_a + ps.img_b))) as tick:
                    pt = pair_templates(
                        ps, settings, contract, policy=policy, workers=workers, progress=tick
                    )
                keep = pt.scorable
                va, vb = pt.vectors()
                raw = row_scores(va, vb)
                data = GroupedScores.from_labels(
                    raw, [ps.same[k] for k in keep], [labels[k] for k in keep]
                )
                runs["raw"] = (data, {})
                if fair is not None:
                    runs["installed"] = (
                        data.with_scores(
                            fair.normalise(raw, fair.image_stats(va), fair.image_stats(vb))
                        ),
                        {},
                    )
                meta.update(
                    pairs=len(ps.same),
                    scored_pairs=len(keep),
                    images=len(pt.images),
                    failures_to_enrol=pt.failures,
                )
                source = str(pairs)
            else:
                assert identities is not None
                ids = read_identities(identities)
                image_groups = _group_column(identities, group)
                with progress("embedding", len(set(ids.images))) as tick:
                    it = identity_templates(
                        ids, settings, contract, policy=policy, workers=workers, progress=tick
                    )
                if len(it.kept) < 2:
                    raise ValueError("fewer than two images with a usable face")
                x = it.unit_vectors()
                who = it.identities
                names, _, pair_codes = group_names_of_pairs([image_groups[k] for k in it.kept])
                i, j, raw, same = all_pairs(x, who)
                base = GroupedScores(raw, same, pair_codes(i, j), names)
                runs["raw"] = (base, {})
                if fair is not None:
                    st = fair.image_stats(x)
                    runs["installed"] = (
                        base.with_scores(
                            fair.normalise(
                                raw,
                                ImageStats(st.mu[i], st.sigma[i]),
                                ImageStats(st.mu[j], st.sigma[j]),
                            )
                        ),
                        {},
                    )
                if compare:
                    for method in ("fair", "znorm", "cohort"):
                        with progress(f"cross-fitting {method}", 1) as tick:
                            scores = crossfit_scores(x, who, i, j, raw, method, folds=folds)
                            tick(1)
                        runs[method] = (base.with_scores(scores), {})
                meta.update(
                    images=len(set(ids.images)),
                    failures_to_enrol=it.failures,
                    identities=len(set(who)),
                    pairs=int(raw.size),
                )
                if compare:
                    meta["protocol"] = (
                        f"each normalisation fitted on {folds - 2} of {folds} identity folds "
                        "(the pair's own identities left out); the threshold is set on all "
                        "pairs for each method"
                    )
                source = str(identities)
            deployments: dict[str, DeploymentThreshold] = {}
            try:
                table = load_calibration(contract, settings.data_dir)
                deployed = deployed_calibration_path(contract, settings.data_dir)
                origin = (
                    f"the deployment's table {deployed}"
                    if deployed.is_file()
                    else f"the table shipped for the model, fitted on {table.source}"
                )
                deployments["raw"] = deployment_threshold(table, fmr, origin)
            except AirsideError as e:  # no table for this model: nothing to deploy with
                deployments["raw"] = deployment_threshold(None, fmr, "no table", str(e))
            if fair is not None:
                deployments["installed"] = deployment_threshold(
                    fair.table, fmr, f"the installed fair calibration's table ({fair.name})"
                )
            for method, (data, _) in list(runs.items()):
                runs[method] = (
                    data,
                    fairness_summary(
                        data,
                        fmr_target=fmr,
                        min_genuines=min_genuines,
                        deployment=deployments.get(method)
                        or deployment_threshold(
                            None,
                            fmr,
                            "no table",
                            "a cross-fitted normalisation has no deployed FMR table",
                        ),
                    ),
                )
            first = next(iter(runs))
            summary: dict[str, Any] = {**runs[first][1], **meta, "method": first}
            if len(runs) > 1:
                summary["methods"] = {m: s for m, (_, s) in runs.items() if m != first}
                summary["comparison"] = [_comparison_row(m, s) for m, (_, s) in runs.items()]
            if html is not None:
                html.write_text(
                    render_fairness_report(
                        {METHOD_TITLES.get(m, m): r for m, r in runs.items()},
                        f"Fairness: {source} by {group}",
                    )
                )
        except (ValueError, OSError, AirsideError) as e:
            fail(e, as_json)
        if as_json:
            emit_json(summary)
            return
        for method, (_, s) in runs.items():
            _print_summary(METHOD_TITLES.get(method, method), s)
        if len(runs) > 1:
            say(out, "[bold]compared[/]:")
            for row in summary["comparison"]:
                fd, tar = row["fmr_differential"], row["tar"]
                accepted = row["genuines"] - row["false_non_matches"]
                say(
                    out,
                    f"  {esc(row['method']):>9}: FMR differential "
                    f"{'not measurable' if fd is None else f'{fd:.3g}'}; TAR "
                    f"{'-' if tar is None else f'{tar:.4f}'} ({accepted}/{row['genuines']})",
                )

    @app.command("calibrate")
    def calibrate(
        ctx: typer.Context,
        identities: Annotated[
            Path | None,
            typer.Option(help="CSV image,identity (or one image per person): fit on these."),
        ] = None,
        gallery: Annotated[
            str | None, typer.Option(help="Fit on this gallery's enrolled subjects.")
        ] = None,
        remove: Annotated[
            bool, typer.Option("--remove", help="Stop applying the fair calibration.")
        ] = False,
        show: Annotated[bool, typer.Option("--show", help="Describe the installed one.")] = False,
        table: Annotated[
            bool,
            typer.Option(
                "--table",
                help="With --gallery: the gallery's own FMR table, fitted on its subjects "
                "(with --remove / --show: remove or describe it) instead of the fair "
                "calibration.",
            ),
        ] = False,
        own: Annotated[
            bool,
            typer.Option(
                "--own",
                help="With --gallery: the gallery's own fair calibration, used by decisions "
                "against that gallery only (with --remove / --show: remove or describe it), "
                "instead of the one for every gallery of the model.",
            ),
        ] = False,
        local_clusters: Annotated[
            int, typer.Option(help="Stage 1: regions of the embedding (k-means).")
        ] = 40,
        clusters: Annotated[
            int, typer.Option(help="Stage 2: regions of the principal components.")
        ] = 40,
        dims: Annotated[int, typer.Option(help="Stage 2: principal components used.")] = 4,
        restarts: Annotated[int, typer.Option(help="k-means restarts averaged.")] = 4,
        as_json: Annotated[bool, typer.Option("--json")] = False,
        face: FaceOpt = "central",
        workers: WorkersOpt = None,
    ) -> None:
        """Build the model's label-free fair calibration (docs/fairness.md), with --gallery
        NAME --own the gallery's own, or with --gallery NAME --table the gallery's own FMR
        table (docs/thresholds.md); admin only."""
        from airside.biometrics.fair_calibration import FitParams
        from airside.cli.state import state
        from airside.services import calibration_service as svc

        st = state(ctx)
        result: dict[str, Any]
        try:
            chosen = sum([identities is not None, gallery is not None, remove, show])
            if chosen != 1 and not (table or own):
                raise ValueError("give exactly one of --identities, --gallery, --remove, --show")
            if table and own:
                raise ValueError("give at most one of --table, --own")
            params = FitParams(
                local_clusters=local_clusters, dims=dims, clusters=clusters, restarts=restarts
            )
            app_, principal = st.airside, st.principal
            if table:
                result = _gallery_table(app_, principal, gallery, identities, remove, show)
            elif own:
                result = _gallery_fair(app_, principal, gallery, identities, remove, show, params)
            elif remove:
                result = {"removed": svc.remove(app_, principal)}
            elif show:
                found = svc.installed(app_, principal)
                result = {"installed": None if found is None else found.as_dict()}
            elif gallery is not None:
                result = svc.build_from_gallery(app_, principal, gallery, params=params).as_dict()
            else:
                assert identities is not None
                from airside.evaluation.datasets import read_identities
                from airside.evaluation.verification import identity_templates

                policy = face_policy(face)
                ids = read_identities(identities)
                contract = app_.analyzer.contract
                with progress("embedding", len(set(ids.images))) as tick:
                    it = identity_templates(
                        ids, st.settings, contract, policy=policy, workers=workers,
                        progress=tick,
                    )  # fmt: skip
                if not it.kept:
                    raise ValueError(f"{identities}: no image has a usable face")
                summary = svc.build_from_templates(
                    app_,
                    principal,
                    it.vectors,
                    it.identities,
                    contract=contract,
                    source=str(identities),
                    params=params,
                )
                result = {**summary.as_dict(), "failures_to_enrol": it.failures}
        except (ValueError, OSError, AirsideError) as e:
            fail(e, as_json)
        if as_json:
            emit_json(result)
            return
        if table and "removed" in result:
            say(out, "gallery table removed" if result["removed"] else "the gallery had none")
        elif table and "installed" in result and result["installed"] is None:
            say(out, "the gallery has no table of its own: it decides with the model's")
        elif own and "removed" in result:
            say(out, "the gallery's own fair calibration removed" if result["removed"]
                else "the gallery had none")  # fmt: skip
        elif own and "installed" in result and result["installed"] is None:
            say(out, "the gallery has no fair calibration of its own: it decides with the "
                "model's, if one is installed")  # fmt: skip
        elif "removed" in result:
            say(out, "fair calibration removed" if result["removed"] else "none was installed")
        elif "installed" in result and result["installed"] is None:
            say(out, "no fair calibration installed: scores are raw similarities")
        else:
            body = result.get("installed", result)
            for k, v in body.items():
                say(out, f"{k:>18}: {esc(json.dumps(v) if isinstance(v, list) else v)}")


def _gallery_table(
    app_: Airside, principal: Principal, gallery: str | None, identities: Path | None,
    remove: bool, show: bool,
) -> dict[str, Any]:  # fmt: skip
    """``calibrate --gallery NAME --table [--remove | --show]``."""
    from airside.services import gallery_calibration as gsvc

    if gallery is None or identities is not None or (remove and show):
        raise ValueError("--table needs --gallery, and at most one of --remove, --show")
    if remove:
        return {"removed": gsvc.remove_gallery_table(app_, principal, gallery)}
    if show:
        found = gsvc.gallery_table(app_, principal, gallery)
        return {"installed": None if found is None else found.as_dict()}
    return gsvc.fit_gallery_table(app_, principal, gallery).as_dict()


def _gallery_fair(
    app_: Airside, principal: Principal, gallery: str | None, identities: Path | None,
    remove: bool, show: bool, params: FitParams,
) -> dict[str, Any]:  # fmt: skip
    """``calibrate --gallery NAME --own [--remove | --show]``."""
    from airside.services import calibration_service as svc

    if gallery is None or identities is not None or (remove and show):
        raise ValueError("--own needs --gallery, and at most one of --remove, --show")
    if remove:
        return {"removed": svc.remove_own(app_, principal, gallery)}
    if show:
        found = svc.installed_own(app_, principal, gallery)
        return {"installed": None if found is None else found.as_dict()}
    return svc.build_from_gallery(app_, principal, gallery, params=params, own=True).as_dict()
