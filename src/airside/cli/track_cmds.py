"""``airside eval track``: tracker accuracy (MOTA, IDF1, id switches) on MOTChallenge data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from airside.cli.options import JsonOpt
from airside.cli.render import emit_json, esc, fail, out

TRACKER_CHOICES = ("bytetrack", "iou", "both")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.1f}"
    return str(v)


def render_table(result: dict[str, Any]) -> Table:
    t = Table(
        "sequence", "tracker", "MOTA", "IDF1", "IDsw", "MOTP", "prec", "rec", "tracks/gt",
        title="Tracking (percent; MOTP = mean IoU of matched boxes)",
    )  # fmt: skip
    rows = [*result["sequences"].items(), ("overall", result["overall"])]
    for seq, by_tracker in rows:
        for name, m in by_tracker.items():
            t.add_row(
                esc(seq), name, _fmt(m["mota"]), _fmt(m["idf1"]), _fmt(m["id_switches"]),
                _fmt(m["motp"]), _fmt(m["precision"]), _fmt(m["recall"]),
                f"{m['tracks']}/{m['gt_tracks']}",
            )  # fmt: skip
    return t


def register(eval_app: typer.Typer) -> None:
    @eval_app.command("track")
    def eval_track(
        gt: Annotated[
            Path | None, typer.Option(help="Ground truth, MOTChallenge gt.txt (with --det).")
        ] = None,
        det: Annotated[
            Path | None, typer.Option(help="Public detections, MOTChallenge det.txt (with --gt).")
        ] = None,
        tud: Annotated[
            Path | None,
            typer.Option(
                "--tud",
                help="A folder of sequences NAME/gt/gt.txt + NAME/det/det.txt (e.g. TUD).",
            ),
        ] = None,
        tracker: Annotated[
            str, typer.Option(help="bytetrack, iou, or both (measured in the same run).")
        ] = "both",
        min_score: Annotated[
            float, typer.Option(help="Drop detections scoring below this before tracking.")
        ] = 0.0,
        gt_format: Annotated[
            str,
            typer.Option(
                help="mot15 (TUD: conf-0 rows ignored, no classes) or mot16 (class column, "
                "distractors removed)."
            ),
        ] = "mot15",
        boxes: Annotated[
            str,
            typer.Option(
                help="Score the matched detection boxes (detection) or ByteTrack's Kalman "
                "boxes (track)."
            ),
        ] = "detection",
        high_thresh: Annotated[
            float | None, typer.Option(help="ByteTrack: first-association score threshold.")
        ] = None,
        new_track_thresh: Annotated[
            float | None, typer.Option(help="ByteTrack: score needed to start a track.")
        ] = None,
        match_thresh: Annotated[
            float | None, typer.Option(help="ByteTrack: maximum first-association cost.")
        ] = None,
        lost_buffer: Annotated[
            int | None, typer.Option(help="ByteTrack: frames a lost track is kept.")
        ] = None,
        iou_threshold: Annotated[
            float | None, typer.Option(help="IoU tracker: minimum IoU to continue a track.")
        ] = None,
        max_lost: Annotated[
            int | None, typer.Option(help="IoU tracker: frames a track survives unmatched.")
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Tracker accuracy on MOTChallenge ground truth and public detections: MOTA, IDF1,
        id switches, MOTP, precision/recall, ByteTrack beside the plain IoU tracker."""
        from dataclasses import replace

        from airside.evaluation.tracking import (
            TUD_BYTETRACK,
            default_trackers,
            evaluate_tracking,
            sequence,
            sequences_in,
        )
        from airside.video.tracking import IouTracker

        try:
            if tracker not in TRACKER_CHOICES:
                raise ValueError("--tracker must be bytetrack, iou or both")
            if gt_format not in ("mot15", "mot16"):
                raise ValueError("--gt-format must be mot15 or mot16")
            if boxes not in ("detection", "track"):
                raise ValueError("--boxes must be detection or track")
            if tud is not None and (gt is not None or det is not None):
                raise ValueError("give either --tud or --gt with --det, not both")
            if tud is None and (gt is None or det is None):
                raise ValueError("give --gt and --det (or --tud DIR)")
            seqs = sequences_in(tud) if tud is not None else [sequence(gt, det)]  # type: ignore[arg-type]
            bt_params = {
                k: v
                for k, v in (
                    ("high_thresh", high_thresh),
                    ("new_track_thresh", new_track_thresh),
                    ("match_thresh", match_thresh),
                    ("lost_buffer", lost_buffer),
                )
                if v is not None
            }
            base = IouTracker()
            iou = IouTracker(
                base.iou_threshold if iou_threshold is None else iou_threshold,
                base.max_lost if max_lost is None else max_lost,
            )
            factories = default_trackers(replace(TUD_BYTETRACK, **bt_params), iou)  # type: ignore[arg-type]
            chosen = ("bytetrack", "iou") if tracker == "both" else (tracker,)
            result = evaluate_tracking(
                seqs,
                {k: factories[k] for k in chosen},
                min_score=min_score,
                gt_format=gt_format,  # type: ignore[arg-type]
                boxes=boxes,  # type: ignore[arg-type]
            )
        except (ValueError, OSError) as e:
            fail(e, as_json)
        if as_json:
            emit_json(result)
        else:
            out.print(render_table(result))
