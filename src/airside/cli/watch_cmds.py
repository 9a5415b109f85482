"""``airside watch SOURCE``: identify tracked faces in a video file, stream or camera."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from airside.cli.options import JsonOpt
from airside.cli.render import emit_json, err, esc, fail, out, say
from airside.cli.state import state
from airside.errors import AirsideError


def _status_table(stats: Any) -> Table:
    fps_in, fps_done = stats.rates()
    t = Table("fps in", "fps processed", "lag s", "skipped", "tracks", "embeddings", "events")
    t.add_row(
        f"{fps_in:.1f}",
        f"{fps_done:.1f}",
        f"{stats.lag_s:.2f}",
        str(stats.frames_skipped),
        f"{stats.active_tracks} ({stats.tracks})",
        str(stats.embedding_calls),
        str(stats.events),
    )
    return t


def register(app: typer.Typer) -> None:
    @app.command("watch")
    def watch_cmd(
        ctx: typer.Context,
        source: Annotated[
            str, typer.Argument(help="Video file, rtsp:// or http(s):// URL, camera:0, or folder.")
        ],
        gallery: Annotated[
            list[str] | None,
            typer.Option("--gallery", help="Gallery to search (identity); repeatable."),
        ] = None,
        scene: Annotated[
            Path | None,
            typer.Option(
                help="Scene file (TOML): zones, lines and safety rules (docs/analytics.md)."
            ),
        ] = None,
        person_detector: Annotated[
            str | None,
            typer.Option(
                help="nanodet (default), nanodet-tiled (crowd mode), movenet, motion or a "
                "registered YOLO model."
            ),
        ] = None,
        people_every: Annotated[
            float | None,
            typer.Option(
                min=0,
                help="Detect people every this many seconds, tracking them in between "
                "(default: 0.32 for nanodet, every frame for the others).",
            ),
        ] = None,
        people_gate: Annotated[
            bool,
            typer.Option(help="Look for people again only where the view changed (nanodet)."),
        ] = True,
        abandoned_after: Annotated[
            float | None,
            typer.Option(help="Report objects left unattended this many seconds (needs --scene)."),
        ] = None,
        camera: Annotated[str | None, typer.Option(help="Camera name in events.")] = None,
        purpose: Annotated[
            str | None, typer.Option(help="Purpose of the searches (must be the galleries').")
        ] = None,
        out_path: Annotated[
            Path | None, typer.Option("--out", help="Write an annotated H.264 video here.")
        ] = None,
        events_path: Annotated[
            Path | None, typer.Option("--events", help="Append identity events as JSON lines.")
        ] = None,
        redact: Annotated[
            bool, typer.Option(help="Blur every face that is not matched in --out.")
        ] = False,
        detect_every: Annotated[int, typer.Option(help="Detect on every n-th frame.")] = 1,
        cut_threshold: Annotated[
            float,
            typer.Option(
                min=0,
                max=255,
                help="End every track where the picture cuts to another view, at this "
                "content change (0-255; 0: never).",
            ),
        ] = 27.0,
        realtime: Annotated[
            bool | None,
            typer.Option(
                "--realtime/--every-frame",
                help="Skip frames under load (default for streams and cameras).",
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Track every face, identify each track a few times at most, store nothing unknown;
        with --scene, also people and the scene's safety rules (either alone, or both)."""
        from airside.services.watch import WatchRequest, watch
        from airside.video.sources import open_source

        st = state(ctx)
        name = camera or source
        try:
            src = open_source(source)
        except AirsideError as e:
            fail(e, as_json)
        request = WatchRequest(
            galleries=list(gallery or []),
            scene=scene,
            person_detector=person_detector,
            abandoned_after_s=abandoned_after,
            people_every_s=people_every,
            people_gate=people_gate,
            camera=name,
            purpose=purpose,
            out=out_path,
            events_path=events_path,
            redact=redact,
            detect_every=detect_every,
            realtime=realtime,
            cut_threshold=cut_threshold or None,
        )
        # Ctrl-C stops the pipeline cleanly: open tracks are closed and their events kept.
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, lambda *_: src.stop())
        live = Live(console=err, auto_refresh=False) if err.is_terminal and not as_json else None
        try:
            if live is not None:
                live.start()

            def show(stats: Any) -> None:
                if live is not None:
                    live.update(_status_table(stats), refresh=True)

            summary = watch(st.airside, st.principal, src, request, on_status=show)
        except (AirsideError, ValueError) as e:
            fail(e, as_json)
        finally:
            if live is not None:
                live.stop()
            signal.signal(signal.SIGINT, previous)
        if as_json:
            emit_json(summary.as_dict())
            return
        d = summary.as_dict()
        say(
            out,
            f"{d['frames_processed']}/{d['frames_read']} frames, {d['tracks']} tracks, "
            f"{d['embedding_calls']} embeddings, {len(summary.events)} identity events, "
            f"{len(summary.safety_events)} safety events "
            f"({d['realtime_factor']}x real time)",
        )
        people = d.get("people")
        if isinstance(people, dict):
            zones = ", ".join(
                f"{esc(z)} {v['mean']} (max {v['max']})" for z, v in people["zones"].items()
            )
            lines = ", ".join(
                f"{esc(n)} in {c['in']} out {c['out']}" for n, c in people["lines"].items()
            )
            say(
                out,
                f"  people per frame {people['mean']} (max {people['max']})"
                + (f"; zones: {zones}" if zones else "")
                + (f"; lines: {lines}" if lines else ""),
            )
        for ev_ in summary.events:
            say(
                out,
                f"  track {ev_.track}: {esc(ev_.subject)} in {esc(ev_.gallery)} "
                f"({ev_.score:.3f}) {ev_.first_seen:.1f}-{ev_.last_seen:.1f} s",
            )
        for sev in summary.safety_events:
            say(out, f"  [red]{sev.type}[/] {esc(sev.zone or sev.line or '')} tracks "
                     f"{list(sev.tracks)} at {sev.at:.1f} s")  # fmt: skip
        for ev in summary.system_events:
            if ev.type != "stream_ended":
                say(out, f"  [yellow]{ev.type}[/] at {ev.at:.1f} s: {esc(ev.detail)}")
        sys.stdout.flush()
