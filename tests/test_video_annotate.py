"""Drawing, redaction and the H.264 writer, checked by reading the output back with PyAV."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest

from airside.video.annotate import (
    H264_ENCODERS,
    MATCHED_COLOUR,
    UNMATCHED_COLOUR,
    H264Writer,
    TrackDraw,
    annotate,
    draw,
    grow_box,
    pick_encoder,
    redact,
)
from airside.video.sources import Frame, open_source
from videos import FACE_CROPS, face_image, render

SRC = Path(__file__).resolve().parents[1] / "src"


def read_back(path: Path) -> tuple[str, list[av.VideoFrame]]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return stream.codec_context.name, list(c.decode(stream))


def laplacian_var(img: np.ndarray) -> float:
    g = img.astype(np.float64).mean(axis=2)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var())


@pytest.fixture(scope="module")
def astronaut_frame() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    from skimage import data

    return np.asarray(data.astronaut())[:256, :384].copy(), FACE_CROPS["astronaut"]


# ------------------------------------------------------------------------------------ writer


def test_writer_round_trip_h264(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    clip = render(20, (160, 120))
    with H264Writer(path, 25, 160, 120) as writer:
        for i, img in enumerate(clip.images):
            writer.write(img, pts=i / 25)
    codec, frames = read_back(path)
    assert len(frames) == 20
    assert {(f.width, f.height) for f in frames} == {(160, 120)}
    if pick_encoder() in H264_ENCODERS:
        assert codec == "h264" and writer.codec in H264_ENCODERS
    assert [f.time for f in frames] == pytest.approx([i / 25 for i in range(20)], abs=1e-3)
    first = frames[0].to_ndarray(format="rgb24").astype(int)
    assert np.abs(first - clip.images[0]).mean() < 6


def test_writer_keeps_source_timestamps_relative_to_the_first(tmp_path: Path) -> None:
    path = tmp_path / "vfr.mkv"
    pts = [100.0, 100.04, 100.08, 100.5, 100.54, 100.54, 100.6]  # a gap and a repeat
    with H264Writer(path, 25, 64, 48) as writer:
        for t in pts:
            writer.write(np.zeros((48, 64, 3), np.uint8), pts=t)
    times = [f.time for f in read_back(path)[1]]
    assert len(times) == len(pts)
    assert times[:5] == pytest.approx([0.0, 0.04, 0.08, 0.5, 0.54], abs=2e-3)
    assert all(b > a for a, b in itertools.pairwise(times))


def test_writer_pads_odd_sizes_and_letterboxes_other_sizes(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    with H264Writer(path, 10, 161, 121) as writer:
        writer.write(np.full((121, 161, 3), 200, np.uint8))
        writer.write(np.full((60, 160, 3), 200, np.uint8))  # the source changed resolution
    _, frames = read_back(path)
    assert [(f.width, f.height) for f in frames] == [(162, 122), (162, 122)]
    second = frames[1].to_ndarray(format="rgb24")
    assert second[60, 80].mean() > 150 and second[2, 80].mean() < 40  # bars top and bottom


def test_writer_falls_back_to_mpeg4(tmp_path: Path) -> None:
    path = tmp_path / "mpeg4.mp4"
    with H264Writer(path, 25, 64, 48, codec="mpeg4") as writer:
        for i in range(5):
            writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    codec, frames = read_back(path)
    assert codec == "mpeg4" and len(frames) == 5


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), 5000])
def test_writer_rejects_absurd_frame_rates(tmp_path: Path, bad: float) -> None:
    with pytest.raises(ValueError, match="fps"):
        H264Writer(tmp_path / "x.mp4", bad, 64, 48)


def test_writer_rejects_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extension"):
        H264Writer(tmp_path / "x.gif", 25, 64, 48)


def test_partial_file_from_a_crash_stays_readable(tmp_path: Path) -> None:
    path = tmp_path / "crash.mp4"
    script = textwrap.dedent(
        f"""
        import os, sys
        import numpy as np
        sys.path.insert(0, {str(SRC)!r})
        from airside.video.annotate import H264Writer
        w = H264Writer({str(path)!r}, 10, 96, 64)
        for i in range(40):
            w.write(np.full((64, 96, 3), (i * 6) % 256, np.uint8), pts=i / 10)
        os._exit(3)  # no close(): the process dies with the file open
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=60, check=False)
    assert done.returncode == 3
    source = open_source(path)  # a readable file, not an error
    frames = [i for i in source if isinstance(i, Frame)]
    assert len(frames) >= 10  # at least the first complete one-second fragment
    assert frames[0].pts == 0.0


# --------------------------------------------------------------------------------- redaction


def test_redaction_destroys_face_detail_and_nothing_else(
    astronaut_frame: tuple[np.ndarray, tuple[int, int, int, int]],
) -> None:
    frame, box = astronaut_frame
    out = redact(frame, [box], grow=0.15)
    x0, y0, x1, y1 = box
    assert laplacian_var(out[y0:y1, x0:x1]) * 10 < laplacian_var(frame[y0:y1, x0:x1])
    gx0, gy0, gx1, gy1 = grow_box(box, 0.15)
    gx0, gy0, gx1, gy1 = math.floor(gx0), math.floor(gy0), math.ceil(gx1), math.ceil(gy1)
    outside = np.ones(frame.shape[:2], bool)
    outside[max(gy0, 0) : gy1, max(gx0, 0) : gx1] = False
    assert np.array_equal(out[outside], frame[outside])
    assert np.array_equal(frame, astronaut_frame[0])  # the input is untouched


def test_annotate_redacts_only_unmatched_faces(tmp_path: Path) -> None:
    face = face_image("astronaut")
    fh, fw = face.shape[:2]
    frame = np.full((fh + 20, 2 * fw + 40, 3), 128, np.uint8)
    frame[10 : 10 + fh, 10 : 10 + fw] = face
    frame[10 : 10 + fh, 30 + fw : 30 + 2 * fw] = face
    known = TrackDraw((10, 10, 10 + fw, 10 + fh), 1, "Eileen Collins", matched=True)
    stranger = TrackDraw((30 + fw, 10, 30 + 2 * fw, 10 + fh), 2)
    out = annotate(frame, [known, stranger], redact_unmatched=True)
    inner = (slice(50, fh), slice(20, fw))  # below the label, inside the box outline
    assert np.array_equal(out[inner], frame[inner])  # matched face kept
    s = (slice(50, fh), slice(40 + fw, 20 + 2 * fw))
    assert laplacian_var(out[s]) * 10 < laplacian_var(frame[s])  # stranger blurred


# ----------------------------------------------------------------------------------- drawing


def test_draw_boxes_ids_and_names_without_touching_the_input() -> None:
    frame = np.full((120, 160, 3), 128, np.uint8)
    before = frame.copy()
    tracks = [
        TrackDraw((20, 40, 70, 100), 7, "Grace Hopper", matched=True),
        TrackDraw((90, 30, 150, 110), 8),
        TrackDraw((500, 500, 600, 600), 9),  # wholly outside: skipped
        TrackDraw((-20, -20, 10, 10), 10, "Łukasz 王"),  # partly outside, non-Latin name
    ]
    out = draw(frame, tracks, thickness=2)
    assert np.array_equal(frame, before)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert tuple(out[70, 20]) == MATCHED_COLOUR  # left edge of the matched box
    assert tuple(out[70, 91]) == UNMATCHED_COLOUR
    assert tuple(out[70, 45]) == (128, 128, 128)  # inside the box: untouched
    label = out[25:39, 20:70]  # the label sits above the matched box
    assert (label == MATCHED_COLOUR).all(axis=2).any() and (label.max(axis=2) < 60).any()


def test_draw_rejects_non_rgb_input() -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        draw(np.zeros((10, 10), np.uint8), [])
