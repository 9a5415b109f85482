"""The synthetic crowd clip (airside.synthetic.crowd): its truth must match its pixels, since
the people-counting measurements trust it.  Needs ../shared/data (TUD ground truth and the
street_night video); skips without it."""

from __future__ import annotations

import configparser
import csv
from pathlib import Path

import av
import numpy as np
import pytest
from tests.conftest import shared_data

from airside.synthetic.crowd import (
    CrowdClip,
    build_crowd_clip,
    line_crossing_events,
    line_crossings,
    person_crops,
    write_clip,
    write_truth_csv,
    zone_counts,
)

LABELS = Path(__file__).parent / "data" / "people_counts.csv"


@pytest.fixture(scope="module")
def tud_dir() -> Path:
    tud = shared_data("video", "tud")
    for name in ("TUD-Campus", "TUD-Stadtmitte"):
        if not (tud / name / "gt" / "gt.txt").exists():
            pytest.skip(f"TUD ground truth {tud / name} is absent")
    return tud


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    street = shared_data("video", "street_night", "demo.mp4")
    return person_crops(street, LABELS)


@pytest.fixture(scope="module")
def clip(tud_dir: Path, crops: list[np.ndarray]) -> CrowdClip:
    return build_crowd_clip(tud_dir, crops)


def _cell(clip: CrowdClip, track: str) -> tuple[int, int, int, int]:
    return clip.cells[int(track.split("-")[0][1:])].box


def test_crops_are_the_tall_unclipped_labels(crops: list[np.ndarray]) -> None:
    assert len(crops) >= 20
    for c in crops:
        assert c.dtype == np.uint8 and c.ndim == 3 and c.shape[2] == 3
        assert c.shape[0] >= 60


def test_length_and_size(clip: CrowdClip, tud_dir: Path) -> None:
    lengths = []
    for name in ("TUD-Campus", "TUD-Stadtmitte"):
        ini = configparser.ConfigParser()
        ini.read(tud_dir / name / "seqinfo.ini")
        lengths.append(ini.getint("Sequence", "seqLength"))
    assert clip.frames == min(lengths) == 71
    assert clip.size == (1280, 720) and clip.fps == 25.0
    img = clip.frame(clip.frames - 1)
    assert img.shape == (720, 1280, 3) and img.dtype == np.uint8
    with pytest.raises(IndexError):
        clip.frame(clip.frames)


def test_frame0_boxes_inside_their_cells(clip: CrowdClip) -> None:
    truth = clip.truth(0)
    assert len(truth) > 20
    for t in truth:
        x0, y0, x1, y1 = _cell(clip, t.track)
        assert x0 <= t.box[0] < t.box[2] <= x1
        assert y0 <= t.box[1] < t.box[3] <= y1
    assert len({t.track for t in truth}) == len(truth)


def test_people_are_painted_where_the_truth_says(clip: CrowdClip) -> None:
    img = clip.frame(0).astype(np.int16)
    bg = clip.background().astype(np.int16)
    mask = np.zeros(img.shape[:2], dtype=bool)
    for t in clip.truth(0):
        x0, y0, x1, y1 = (int(v) for v in t.box)
        mask[y0:y1, x0:x1] = True
        if t.occluded == 0:
            assert np.array_equal(img[y0:y1, x0:x1], clip.patch(0, t.track))
            assert np.abs(img[y0:y1, x0:x1] - bg[y0:y1, x0:x1]).mean() > 10
    # Outside every box the frame is the people-free floor.
    assert np.array_equal(img[~mask], bg[~mask])


def test_occlusion_and_painter_order(clip: CrowdClip) -> None:
    i = next(i for i in range(clip.frames) if any(t.occluded > 0 for t in clip.truth(i)))
    truth = clip.truth(i)
    # Far (smaller bottom) first, within each cell.
    for cell in clip.cells:
        bottoms = [t.box[3] for t in truth if _cell(clip, t.track) == cell.box]
        assert bottoms == sorted(bottoms)
    # Occluded fraction = share of the box under people painted after it.
    covered = np.zeros((720, 1280), dtype=bool)
    for t in reversed(truth):
        x0, y0, x1, y1 = (int(v) for v in t.box)
        assert t.occluded == pytest.approx(covered[y0:y1, x0:x1].mean())
        covered[y0:y1, x0:x1] = True
    # The pixels of an overlap belong to the nearer person.
    img = clip.frame(i)
    k, far = next((k, t) for k, t in enumerate(truth) if t.occluded > 0)
    near = [
        u
        for u in truth[k + 1 :]
        if min(u.box[2], far.box[2]) > max(u.box[0], far.box[0])
        and min(u.box[3], far.box[3]) > max(u.box[1], far.box[1])
    ][-1]  # the last one over `far`: nothing painted later covers their overlap
    ox0, oy0 = int(max(near.box[0], far.box[0])), int(max(near.box[1], far.box[1]))
    ox1, oy1 = int(min(near.box[2], far.box[2])), int(min(near.box[3], far.box[3]))
    nx0, ny0 = int(near.box[0]), int(near.box[1])
    pasted = clip.patch(i, near.track)[oy0 - ny0 : oy1 - ny0, ox0 - nx0 : ox1 - nx0]
    assert np.array_equal(img[oy0:oy1, ox0:ox1], pasted)
    occluded = [t.occluded for j in range(clip.frames) for t in clip.truth(j)]
    assert max(occluded) > 0.5


def test_visible_filters_height_and_occlusion(clip: CrowdClip) -> None:
    for i in (0, 35, 70):
        vis = clip.visible(i)
        assert vis and all(t.height >= 60 and t.occluded <= 0.5 for t in vis)
        assert len(vis) < len(clip.truth(i))


def test_zone_covering_the_frame_counts_every_visible_person(clip: CrowdClip) -> None:
    whole = [(0.0, 0.0), (1280.0, 0.0), (1280.0, 720.0), (0.0, 720.0)]
    assert zone_counts(clip, whole) == [len(clip.visible(i)) for i in range(clip.frames)]
    left_half = [(0.0, 0.0), (640.0, 0.0), (640.0, 720.0), (0.0, 720.0)]
    assert all(
        n == sum(t.foot[0] < 640 for t in clip.visible(i))
        for i, n in enumerate(zone_counts(clip, left_half))
    )


def test_line_crossings_match_foot_point_side_changes(clip: CrowdClip) -> None:
    x = 640.25  # foot points lie on half pixels: never exactly on the line
    expected = 0
    last: dict[str, bool] = {}
    for i in range(clip.frames):
        for t in clip.truth(i):
            right = t.foot[0] > x
            if t.track in last and last[t.track] != right:
                expected += 1
            last[t.track] = right
    assert expected > 0
    assert line_crossings(clip, (x, 0.0), (x, 720.0)) == expected
    events = line_crossing_events(clip, (x, 0.0), (x, 720.0))
    assert {d for _, _, d in events} <= {1, -1}
    # Outside the segment's extent nothing counts.
    assert line_crossings(clip, (x, -100.0), (x, -10.0)) == 0


def test_written_mp4_decodes_to_the_clip(
    tud_dir: Path, crops: list[np.ndarray], tmp_path: Path
) -> None:
    short = build_crowd_clip(tud_dir, crops, frames=5)
    path = tmp_path / "crowd.mp4"
    write_clip(short, path)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 5
    assert decoded[0].shape == (720, 1280, 3)
    err = np.abs(decoded[2].astype(np.int16) - short.frame(2).astype(np.int16)).mean()
    assert err < 4.0
    truth_csv = tmp_path / "truth.csv"
    write_truth_csv(short, truth_csv)
    with truth_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(short.truth(i)) for i in range(5))
    assert list(rows[0]) == ["frame", "track", "x0", "y0", "x1", "y1", "occluded"]


def test_deterministic(tud_dir: Path, crops: list[np.ndarray], clip: CrowdClip) -> None:
    again = build_crowd_clip(tud_dir, crops, seed=0)
    assert again.frame(10).tobytes() == clip.frame(10).tobytes()
    assert again.truth(10) == clip.truth(10)
    other = build_crowd_clip(tud_dir, crops, seed=1)
    assert other.frame(10).tobytes() != clip.frame(10).tobytes()
