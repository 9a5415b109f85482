"""``airside eval track``: MOTA/IDF1 on hand-made MOTChallenge files with known answers, bad
input, and the TUD sequences (when ../shared/data is there)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from tests.conftest import shared_data
from typer.testing import CliRunner

from airside.cli import track_cmds
from airside.evaluation.tracking import (
    TUD_BYTETRACK,
    default_trackers,
    evaluate_tracking,
    read_mot,
    sequence,
    sequences_in,
)
from airside.video.tracking import IouTracker

# Two people standing still for 4 frames; the detector misses person 2 in frame 3 and has
# one false alarm in frame 2. A ground-truth row with conf 0 (MOT15: "ignore") has no
# detection and must not count as a miss.
GT = """\
1,1,0,0,10,10,1,-1,-1,-1
1,2,100,0,10,10,1,-1,-1,-1
1,3,300,100,10,10,0,-1,-1,-1
2,1,0,0,10,10,1,-1,-1,-1
2,2,100,0,10,10,1,-1,-1,-1
3,1,0,0,10,10,1,-1,-1,-1
3,2,100,0,10,10,1,-1,-1,-1
4,1,0,0,10,10,1,-1,-1,-1
4,2,100,0,10,10,1,-1,-1,-1
"""
DET = """\
1,-1,0,0,10,10,0.9,-1,-1,-1
1,-1,100,0,10,10,0.9,-1,-1,-1
2,-1,0,0,10,10,0.9,-1,-1,-1
2,-1,100,0,10,10,0.9,-1,-1,-1
2,-1,300,300,10,10,0.9,-1,-1,-1
3,-1,0,0,10,10,0.9,-1,-1,-1
4,-1,0,0,10,10,0.9,-1,-1,-1
4,-1,100,0,10,10,0.9,-1,-1,-1
"""


def write_seq(root: Path, name: str = "HAND-1", gt: str = GT, det: str = DET) -> Path:
    d = root / name
    (d / "gt").mkdir(parents=True)
    (d / "det").mkdir()
    (d / "gt" / "gt.txt").write_text(gt)
    (d / "det" / "det.txt").write_text(det)
    (d / "seqinfo.ini").write_text(f"[Sequence]\nname={name}\nseqLength=4\n")
    return d


def cli() -> typer.Typer:
    app = typer.Typer()
    eval_app = typer.Typer()
    app.add_typer(eval_app, name="eval")
    track_cmds.register(eval_app)

    @app.callback()
    def main() -> None: ...

    return app


def test_hand_made_sequence_gives_the_metrics_worked_out_by_hand(tmp_path: Path) -> None:
    d = write_seq(tmp_path)
    trackers = default_trackers(TUD_BYTETRACK, IouTracker(iou_threshold=0.3, max_lost=0))
    r = evaluate_tracking([sequence(d / "gt" / "gt.txt", d / "det" / "det.txt")], trackers)
    iou, bt = r["overall"]["iou"], r["overall"]["bytetrack"]
    # 8 ground-truth boxes. IoU tracker: person 2's track dies at the miss and comes back
    # with a new id (1 switch), the false alarm is reported: MOTA = 1 - (1 FN + 1 FP + 1
    # IDSW) / 8; IDF1 = 2 * 6 / (8 + 8), tracks 1 (4 boxes), 2 (2), 3 (1), 4 (1).
    assert (iou["misses"], iou["false_positives"], iou["id_switches"]) == (1, 1, 1)
    assert iou["mota"] == pytest.approx(5 / 8) and iou["idf1"] == pytest.approx(0.75)
    assert iou["tracks"] == 4 and iou["gt_tracks"] == 2 and iou["motp"] == pytest.approx(1.0)
    # ByteTrack keeps person 2's id through the miss and never confirms the one-frame false
    # alarm: MOTA = 1 - 1/8; IDF1 = 2 * 7 / (8 + 7).
    assert (bt["misses"], bt["false_positives"], bt["id_switches"]) == (1, 0, 0)
    assert bt["mota"] == pytest.approx(7 / 8) and bt["idf1"] == pytest.approx(14 / 15, abs=1e-4)
    assert bt["tracks"] == 2


def test_cli_reports_both_trackers_per_sequence_and_overall_as_json(tmp_path: Path) -> None:
    write_seq(tmp_path, "HAND-1")
    write_seq(tmp_path, "HAND-2")
    res = CliRunner().invoke(cli(), ["eval", "track", "--tud", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data["sequences"]) == {"HAND-1", "HAND-2"}
    assert set(data["sequences"]["HAND-1"]) == {"bytetrack", "iou"}
    assert data["overall"]["bytetrack"]["gt_boxes"] == 16


def test_malformed_line_is_reported_with_its_line_number(tmp_path: Path) -> None:
    bad = GT.splitlines()
    bad[2] = "1,3,300,abc,10,10,1,-1,-1,-1"
    p = tmp_path / "gt.txt"
    p.write_text("\n".join(bad) + "\n")
    with pytest.raises(ValueError, match=r"line 3: y 'abc' is not a number"):
        read_mot(p, "gt")


def test_short_line_and_empty_file_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "det.txt"
    p.write_text("1,-1,0,0,10,10,0.9\n2,-1,0,0,10\n")
    with pytest.raises(ValueError, match=r"line 2: expected at least 7"):
        read_mot(p, "det")
    p.write_text("\n\n")
    with pytest.raises(ValueError, match="no rows"):
        read_mot(p, "det")


def test_cli_names_a_missing_file_and_fails(tmp_path: Path) -> None:
    d = write_seq(tmp_path)
    missing = tmp_path / "nope" / "det.txt"
    res = CliRunner().invoke(
        cli(), ["eval", "track", "--gt", str(d / "gt" / "gt.txt"), "--det", str(missing)]
    )
    assert res.exit_code == 1
    assert "no such file" in res.output and "det.txt" in res.output


def test_mot16_ground_truth_drops_boxes_on_distractors(tmp_path: Path) -> None:
    # A static person (class 7) at x=100 is detected and tracked: not a false positive.
    gt = "".join(f"{f},1,0,0,10,10,1,1,1\n{f},2,100,0,10,10,1,7,1\n" for f in range(1, 5))
    det = "".join(f"{f},-1,0,0,10,10,0.9\n{f},-1,100,0,10,10,0.9\n" for f in range(1, 5))
    d = write_seq(tmp_path, gt=gt, det=det)
    seq = [sequence(d / "gt" / "gt.txt", d / "det" / "det.txt")]
    m16 = evaluate_tracking(seq, gt_format="mot16")["overall"]["bytetrack"]
    assert (m16["false_positives"], m16["misses"], m16["gt_tracks"]) == (0, 0, 1)
    m15 = evaluate_tracking(seq, gt_format="mot15")["overall"]["bytetrack"]
    assert m15["gt_tracks"] == 2  # read as MOT15, column 8 is a world coordinate


def test_tud_bytetrack_beats_or_equals_the_iou_tracker_on_idf1() -> None:
    tud = shared_data("video", "tud")
    r = evaluate_tracking(sequences_in(tud))
    for seq, by in [*r["sequences"].items(), ("overall", r["overall"])]:
        print(
            f"{seq:>15}: ByteTrack MOTA {by['bytetrack']['mota']:.3f} IDF1 "
            f"{by['bytetrack']['idf1']:.3f} IDsw {by['bytetrack']['id_switches']} | IoU "
            f"MOTA {by['iou']['mota']:.3f} IDF1 {by['iou']['idf1']:.3f} "
            f"IDsw {by['iou']['id_switches']}"
        )
    assert set(r["sequences"]) == {"TUD-Campus", "TUD-Stadtmitte"}
    assert r["overall"]["bytetrack"]["idf1"] >= r["overall"]["iou"]["idf1"]
