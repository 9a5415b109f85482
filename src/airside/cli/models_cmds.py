"""``airside models ...`` (the model registry) and ``airside gallery migrate``.

Adding and removing models, and migrating a gallery, are administrator actions, audited.
Listing, verifying and benchmarking read the models directory only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from airside.cli.options import JsonOpt
from airside.cli.render import emit_json, err, esc, fail, out, say
from airside.cli.state import state
from airside.errors import AirsideError


def _triple(text: str | None, what: str) -> float | tuple[float, float, float] | None:
    """'127.5' or '123.7,116.3,103.5' (per channel, in the model's channel order)."""
    if text is None:
        return None
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"--{what} must be a number or three comma-separated numbers") from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 3:
        return (parts[0], parts[1], parts[2])
    raise ValueError(f"--{what} must be a number or three comma-separated numbers")


def _size(text: str | None) -> tuple[int, int] | None:
    """'112' or '640x480' (width x height)."""
    if text is None:
        return None
    w, _, h = text.lower().partition("x")
    try:
        size = (int(w), int(h or w))
    except ValueError:
        raise ValueError("--input-size must look like 112 or 640x480 (width x height)") from None
    if size[0] <= 0 or size[1] <= 0:
        raise ValueError("--input-size must be positive")
    return size


def _choice(value: str | None, allowed: tuple[str, ...], what: str) -> Any:
    if value is None:
        return None
    v = value.strip()
    for a in allowed:
        if v.lower() == a.lower():
            return a
    raise ValueError(f"--{what} must be one of {', '.join(allowed)}, not {value!r}")


def register(app: typer.Typer, gallery_app: typer.Typer) -> None:
    """Add the ``models`` group to ``app`` and ``migrate`` to ``gallery_app``."""
    models_app = typer.Typer(
        help="Face models you obtained yourself, with manifests (nothing is downloaded).",
        no_args_is_help=True,
    )
    app.add_typer(models_app, name="models")

    @models_app.command("list")
    def models_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
        """Registered models: kind, family, digest, licence, the provider each would run on."""
        from airside.services.model_admin import describe_models

        settings = state(ctx).settings
        try:
            rows = describe_models(settings)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json([r.as_dict() for r in rows])
            return
        if not rows:
            say(out, f"no models in {esc(settings.model_registry)} (add one: airside models add)")
            return
        t = Table("name", "kind", "family", "sha256", "licence", "provider", "in use")
        for r in rows:
            m = r.manifest
            t.add_row(
                esc(m.name),
                m.kind,
                esc(m.family),
                m.sha256[:12],
                esc(m.licence),
                esc(r.provider),
                r.in_use or "-",
            )
        out.print(t)
        say(out, f"models directory {esc(settings.model_registry)}, device {settings.device}")

    @models_app.command("add")
    def models_add(
        ctx: typer.Context,
        file: Annotated[Path, typer.Argument(help="The ONNX file, obtained by you.")],
        family: Annotated[
            str,
            typer.Option(
                help="yunet, scrfd, retinaface, centerface, ultraface (face detectors); "
                "arcface, sface, generic (embedders); yolo, yolox (person detectors)."
            ),
        ],
        licence: Annotated[
            str | None, typer.Option(help="The model's licence: an SPDX id or its text.")
        ] = None,
        name: Annotated[
            str | None, typer.Option(help="Registry name (default: file stem).")
        ] = None,
        kind: Annotated[
            str | None, typer.Option(help="face-detector, face-embedder, ... (from family).")
        ] = None,
        source: Annotated[str | None, typer.Option(help="Where the file came from.")] = None,
        version: Annotated[str, typer.Option(help="The model's version.")] = "1",
        mean: Annotated[str | None, typer.Option(help="Embedders: per-channel mean.")] = None,
        std: Annotated[str | None, typer.Option(help="Embedders: per-channel std.")] = None,
        scale: Annotated[float | None, typer.Option(help="Pixels x scale before mean.")] = None,
        channels: Annotated[str | None, typer.Option(help="RGB or BGR.")] = None,
        layout: Annotated[str | None, typer.Option(help="NCHW or NHWC.")] = None,
        input_size: Annotated[
            str | None, typer.Option(help="112 or WIDTHxHEIGHT for dynamic models.")
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Copy a model into the registry once it loads and fits its family (admin, audited).

        Its sha256 is recorded: a changed file is refused from then on."""
        from airside.services.model_admin import register_model

        st = state(ctx)
        try:
            m = register_model(
                st.airside,
                st.principal,
                file,
                family,
                licence=licence,
                name=name,
                kind=_choice(
                    kind, ("face-detector", "face-embedder", "person-detector", "pose"), "kind"
                ),
                source=source,
                version=version,
                input_size=_size(input_size),
                mean=_triple(mean, "mean"),
                std=_triple(std, "std"),
                scale=scale,
                channels=_choice(channels, ("RGB", "BGR"), "channels"),
                layout=_choice(layout, ("NCHW", "NHWC"), "layout"),
            )
        except (AirsideError, ValueError) as e:
            fail(e, as_json)
        if as_json:
            emit_json(m.model_dump(mode="json"))
        else:
            say(
                out,
                f"added [bold]{esc(m.name)}[/] ({m.kind}, {esc(m.family)}) "
                f"sha256 {m.sha256[:16]}..., licence {esc(m.licence)}",
            )

    @models_app.command("verify")
    def models_verify(ctx: typer.Context, as_json: JsonOpt = False) -> None:
        """Re-hash every model against its manifest (the default ones against their
        publisher's sha256); exit 1 if any is changed or missing."""
        from airside.model_registry import verify_models
        from airside.vision.bundled import verify_bundled

        folder = state(ctx).settings.model_registry
        checks = verify_bundled(folder) + (verify_models(folder) if folder.exists() else [])
        bad = [c for c in checks if not c.ok]
        if as_json:
            emit_json(
                {
                    "ok": not bad,
                    "models": [
                        {
                            "name": c.manifest.name if c.manifest else None,
                            "ok": c.ok,
                            "problem": c.problem,
                        }
                        for c in checks
                    ],
                }
            )
        else:
            for c in checks:
                label = esc(c.manifest.name) if c.manifest else "(unreadable manifest)"
                if c.ok:
                    say(out, f"[green]ok[/]      {label}")
                else:
                    say(err, f"[bold red]refused[/] {label}: {esc(c.problem)}")
            if not checks:
                say(out, f"no models in {esc(folder)}")
        if bad:
            raise typer.Exit(1)

    @models_app.command("remove")
    def models_remove(
        ctx: typer.Context,
        name: str,
        force: Annotated[
            bool, typer.Option(help="Remove even when galleries are bound to it.")
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Remove a model and its manifest (administrators; audited)."""
        from airside.services.model_admin import unregister_model

        st = state(ctx)
        try:
            m = unregister_model(st.airside, st.principal, name, force=force)
        except AirsideError as e:
            fail(e, as_json)
        if as_json:
            emit_json({"removed": m.name, "sha256": m.sha256})
        else:
            say(out, f"removed {esc(m.name)}")

    @models_app.command("bench")
    def models_bench(
        ctx: typer.Context,
        images: Annotated[
            int | None, typer.Option(min=1, help="Images per dataset (default: all).")
        ] = None,
        frames: Annotated[int, typer.Option(min=1, help="640x480 frames timed.")] = 30,
        repeats: Annotated[int, typer.Option(min=1, help="Timed calls per frame.")] = 3,
        as_json: JsonOpt = False,
    ) -> None:
        """Each registered face detector beside dlib HOG: latency and recall.

        One thread; latency per 640x480 frame (p50/p99) and recall of the labelled face on
        LFW development images and Yale faces (the rule is in docs/models.md)."""
        from airside.evaluation.detector_bench import (
            hog_baselines,
            registered_detectors,
            result_table,
            run_bench,
            verdict,
        )

        folder = state(ctx).settings.model_registry
        try:
            found, refused = registered_detectors(folder) if folder.exists() else ([], {})
            for n, why in refused.items():
                say(err, f"[bold red]refused[/] {esc(n)}: {esc(why)}")
            if not found:
                say(err, f"no usable face detector in {esc(folder)}: timing dlib HOG alone")
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
            ) as bar:
                task = bar.add_task("detector bench", total=None)
                result = run_bench(
                    hog_baselines() + found,
                    images=images,
                    frames=frames,
                    repeats=repeats,
                    progress=lambda n: bar.advance(task, n),
                    on_total=lambda n: bar.update(task, total=n),
                )
        except (AirsideError, ValueError) as e:
            fail(e, as_json)
        data = result.as_dict()
        data["refused"] = refused
        data["verdict"] = verdict(data)
        for name, why in result.skipped.items():
            say(err, f"[yellow]skipped[/] {esc(name)}: {esc(why)}")
        if as_json:
            emit_json(data)
            return
        say(
            out,
            f"latency per {data['frame']} frame, one thread, {data['frames']} frames x "
            f"{data['repeats']} calls; recall: {esc(data['rule'])}",
        )
        out.print(result_table(data))
        for line in data["verdict"]:
            say(out, esc(line))

    @gallery_app.command("migrate")
    def gallery_migrate(
        ctx: typer.Context,
        gallery: str,
        to: Annotated[str, typer.Option("--to", help="A registered face embedder, or dlib.")],
        images: Annotated[
            Path | None,
            typer.Option(help="Fresh images: DIR/SUBJECT/*.jpg or DIR/SUBJECT.jpg."),
        ] = None,
        csv_file: Annotated[
            Path | None, typer.Option("--csv", help="Fresh images: CSV with subject,image.")
        ] = None,
        into: Annotated[
            str | None, typer.Option(help="The new gallery (default GALLERY@MODEL).")
        ] = None,
        dry_run: Annotated[
            bool, typer.Option(help="Report who would be re-enrolled; change nothing.")
        ] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Move a gallery to another model (admin, audited).

        Re-enrols the subjects you supply fresh images of into a new gallery bound to that
        model, and lists who must be captured again: Airside keeps no source images."""
        from airside.services.migration import images_from_csv, images_from_dir, migrate_gallery

        st = state(ctx)
        try:
            if images is not None and csv_file is not None:
                raise ValueError("give --images DIR or --csv FILE, not both")
            supplied: dict[str, list[Path]] = {}
            if images is not None:
                supplied = images_from_dir(images)
            elif csv_file is not None:
                supplied = images_from_csv(csv_file)
            rep = migrate_gallery(
                st.airside,
                st.principal,
                gallery,
                to,
                images={k: list(v) for k, v in supplied.items()},
                into=into,
                dry_run=dry_run,
            )
        except (AirsideError, ValueError, OSError) as e:
            fail(e, as_json)
        if as_json:
            emit_json(rep.as_dict())
            return
        verb = "would re-enrol" if rep.dry_run else "re-enrolled"
        say(
            out,
            f"{esc(rep.source)} -> [bold]{esc(rep.target)}[/] ({esc(rep.contract)}): "
            f"{verb} {len(rep.reenrolled)} subjects; {len(rep.recapture)} must be captured "
            "again",
        )
        for r in rep.recapture:
            say(out, f"  capture again: {esc(r['subject'])} ({esc(r['reason'])})")
        for s in rep.not_in_gallery:
            say(out, f"  not enrolled in {esc(rep.source)}, ignored: {esc(s)}")
