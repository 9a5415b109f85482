"""Video sources against real files, real damage and a real (local) HTTP stream server."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from airside.errors import AirsideError
from airside.video.sources import (
    Frame,
    SourceError,
    SystemEvent,
    VideoSource,
    open_source,
    safe_spec,
)
from videos import Sprite, Step, StreamServer, encode, make_video, render, ts_bytes

SMALL = (160, 120)


def drain(source: object, limit_s: float = 20.0) -> list[Frame | SystemEvent]:
    """Every item of ``source``; fails (instead of hanging) if it takes over ``limit_s``."""
    items: list[Frame | SystemEvent] = []
    start = time.monotonic()
    for item in source:  # type: ignore[attr-defined]
        items.append(item)
        assert time.monotonic() - start < limit_s, "source did not end"
    return items


def frames_of(items: list[Frame | SystemEvent]) -> list[Frame]:
    return [i for i in items if isinstance(i, Frame)]


def events_of(items: list[Frame | SystemEvent], kind: str | None = None) -> list[SystemEvent]:
    return [i for i in items if isinstance(i, SystemEvent) and (kind is None or i.type == kind)]


def assert_increasing(frames: list[Frame]) -> None:
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(pts)), pts


# ------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("ext", ["mp4", "mkv", "avi"])
def test_file_decodes_every_frame_in_order_then_ends(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"clip.{ext}"
    make_video(path, frames=12, size=SMALL, fps=25)
    items = drain(open_source(path))
    frames = frames_of(items)
    assert len(frames) == 12
    assert [f.index for f in frames] == list(range(12))
    assert frames[0].pts == pytest.approx(0.0)
    assert [f.pts for f in frames] == pytest.approx([i / 25 for i in range(12)], abs=1e-3)
    assert all(f.image.shape == (120, 160, 3) and f.image.dtype == np.uint8 for f in frames)
    assert (frames[0].width, frames[0].height) == SMALL
    assert isinstance(items[-1], SystemEvent) and items[-1].type == "stream_ended"
    assert events_of(items) == [items[-1]]


def test_generated_video_has_the_faces_where_the_truth_says(tmp_path: Path) -> None:
    sprites = [
        Sprite("a", face="astronaut", size=(48, 58), path=[(-30, 60), (190, 60)]),
        Sprite("h", face="hopper", size=(50, 50), path=[(80, 60)], turn=True, tilt_deg=6),
    ]
    truth = make_video(tmp_path / "faces.mp4", frames=10, size=SMALL, sprites=sprites)
    clip = render(10, SMALL, sprites)
    assert truth[0]["a"] is None and truth[-1]["a"] is None  # enters, then leaves
    assert any(t["a"] is not None for t in truth)
    frames = frames_of(drain(open_source(tmp_path / "faces.mp4")))
    for frame, boxes, original in zip(frames, truth, clip.images, strict=True):
        x0, y0, x1, y1 = boxes["h"]  # type: ignore[misc]
        decoded = frame.image[y0:y1, x0:x1].astype(int)
        assert np.abs(decoded - original[y0:y1, x0:x1]).mean() < 12  # lossy, but the face


def test_image_folder_natural_order_fps_and_unreadable_images(tmp_path: Path) -> None:
    from PIL import Image

    clip = render(11, SMALL)
    for i, img in enumerate(clip.images):
        Image.fromarray(img).save(tmp_path / f"f{i}.png")  # f10 sorts after f9
    (tmp_path / "f5.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    items = drain(open_source(tmp_path, fps=10))
    frames = frames_of(items)
    assert len(frames) == 10
    expected = [i for i in range(11) if i != 5]
    for frame, i in zip(frames, expected, strict=True):
        assert np.array_equal(frame.image, clip.images[i])
        assert frame.pts == pytest.approx(i / 10)
    corrupt = events_of(items, "corrupt_data")
    assert len(corrupt) == 1 and "f5.png" in corrupt[0].detail
    assert items[-1].type == "stream_ended"  # type: ignore[union-attr]


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no images"):
        open_source(tmp_path)


@pytest.mark.parametrize("kind", ["random", "text", "empty", "missing"])
def test_unreadable_file_raises_before_any_frame(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "clip.mp4"
    if kind == "random":
        path.write_bytes(np.random.default_rng(1).bytes(50_000))
    elif kind == "text":
        path.write_text("this is not a video\n" * 200)
    elif kind == "empty":
        path.write_bytes(b"")
    with pytest.raises(AirsideError) as info:
        open_source(path)
    assert info.value.code in {"source_unreadable", "source_unsupported"}
    assert str(path) in str(info.value)


def test_audio_only_file_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        for p in stream.encode(frame):
            out.mux(p)
    with pytest.raises(SourceError, match="no video stream") as info:
        open_source(path)
    assert info.value.code == "source_unsupported"


def test_truncated_mkv_yields_the_frames_before_the_damage(tmp_path: Path) -> None:
    full = tmp_path / "full.mkv"
    make_video(full, frames=30, size=SMALL, gop=5)
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    items = drain(open_source(cut), limit_s=10)
    frames = frames_of(items)
    assert 3 <= len(frames) < 30
    assert_increasing(frames)
    assert items[-1].type == "stream_ended"  # type: ignore[union-attr]


def test_truncated_mp4_without_its_index_is_a_clear_error(tmp_path: Path) -> None:
    full = tmp_path / "full.mp4"  # a plain mp4 keeps its index (moov) at the end
    make_video(full, frames=20, size=SMALL)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(SourceError, match="truncated"):
        open_source(cut)


@pytest.mark.parametrize("damage", ["garbage", "lost_packets"])
def test_corrupt_middle_of_mpegts_is_skipped_and_reported(tmp_path: Path, damage: str) -> None:
    data = bytearray(ts_bytes(40, SMALL, gop=10))
    middle = (len(data) // 2) // 188 * 188
    if damage == "garbage":
        data[middle : middle + 188 * 12] = np.random.default_rng(2).bytes(188 * 12)
    else:
        del data[middle : middle + 188 * 12]
    path = tmp_path / "damaged.ts"
    path.write_bytes(bytes(data))
    source = open_source(path)
    items = drain(source)
    frames = frames_of(items)
    corrupt = events_of(items, "corrupt_data")
    assert corrupt, "damage went unreported"
    assert source.stats.corrupt >= 1
    assert 30 <= len(frames) < 40
    assert_increasing(frames)
    after = [f for f in frames if f.pts > corrupt[-1].at]
    assert len(after) >= 5, "decoding did not carry on after the damage"
    assert items[-1].type == "stream_ended"  # type: ignore[union-attr]


def test_resolution_change_mid_stream(tmp_path: Path) -> None:
    path = tmp_path / "spliced.ts"
    path.write_bytes(ts_bytes(8, (160, 120)) + ts_bytes(8, (96, 64), seed=1))
    items = drain(open_source(path))
    changes = events_of(items, "resolution_changed")
    assert len(changes) == 1 and "160x120 -> 96x64" in changes[0].detail
    k = items.index(changes[0])
    before, after = frames_of(items[:k]), frames_of(items[k:])
    assert len(before) == 8 and len(after) == 8
    assert {(f.width, f.height) for f in before} == {(160, 120)}
    assert {(f.width, f.height) for f in after} == {(96, 64)}
    # the second segment's clock restarts at 0: stream time must still go forward
    assert_increasing(before + after)
    assert after[0].pts == pytest.approx(before[-1].pts + 0.04, abs=1e-6)


def test_absurd_declared_frame_rate_falls_back_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "fast.mp4"  # declares 5000 fps; timestamps 0.2 ms apart
    encode(path, render(10, SMALL).images, fps=5000, container="mp4", codec="libx264")
    source = open_source(path)
    items = drain(source)
    assert events_of(items, "bad_frame_rate")
    assert source.fps is None
    frames = frames_of(items)
    assert len(frames) == 10
    assert [f.pts for f in frames] == pytest.approx([i / 25 for i in range(10)])


def test_stream_without_timestamps_uses_index_over_fps(tmp_path: Path) -> None:
    path = tmp_path / "raw.h264"  # an elementary stream carries no timestamps
    encode(path, render(6, SMALL).images, fps=10, container="h264", codec="libx264")
    frames = frames_of(drain(open_source(path)))  # FFmpeg's raw H.264 reader assumes 25 fps
    assert all(f.source_pts is None for f in frames)
    assert [f.pts for f in frames] == pytest.approx([i / 25 for i in range(6)])
    # ... and the real rate can be given as a demuxer option
    frames = frames_of(drain(open_source(path, options={"framerate": "10"})))
    assert [f.pts for f in frames] == pytest.approx([i / 10 for i in range(6)])


def test_max_frames_and_stop_end_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    make_video(path, frames=15, size=SMALL)
    items = drain(open_source(path, max_frames=4))
    assert len(frames_of(items)) == 4
    assert items[-1].type == "stream_ended" and "max_frames" in items[-1].detail  # type: ignore[union-attr]

    source = open_source(path)
    first = next(iter(source))
    assert isinstance(first, Frame)
    source.stop()
    rest = drain(source)
    assert [i.type for i in rest if isinstance(i, SystemEvent)] == ["stream_ended"]
    assert rest[-1].detail == "stopped"  # type: ignore[union-attr]


# ----------------------------------------------------------------------------------- streams


def test_stream_reconnects_after_the_server_drops_it() -> None:
    clip = ts_bytes(40, SMALL, gop=5)
    second = ts_bytes(40, SMALL, gop=5, seed=7)
    script = [Step(clip[: len(clip) // 2], then="close"), Step(second, then="stall")]
    with StreamServer(script) as server:
        source = open_source(
            server.url,
            initial_backoff_s=0.05,
            max_backoff_s=0.2,
            open_timeout_s=3,
            read_timeout_s=3,
        )
        items: list[Frame | SystemEvent] = []
        start = time.monotonic()
        for item in source:
            items.append(item)
            restored = events_of(items, "stream_restored")
            if restored and len(frames_of(items[items.index(restored[0]) :])) >= 20:
                source.stop()
            assert time.monotonic() - start < 15
        source.close()
    kinds = [i.type for i in events_of(items)]
    assert kinds == ["stream_lost", "stream_restored", "stream_ended"], kinds
    lost, restored = events_of(items, "stream_lost")[0], events_of(items, "stream_restored")[0]
    before = frames_of(items[: items.index(lost)])
    after = frames_of(items[items.index(restored) :])
    assert len(before) >= 10 and len(after) >= 20
    assert len(server.connections) >= 2
    assert_increasing(before + after)
    assert restored.at == after[0].pts and after[0].pts > before[-1].pts
    assert [f.index for f in before + after] == list(range(len(before) + len(after)))
    assert source.stats.outages == 1


def test_stream_that_stalls_is_lost_then_restored() -> None:
    # enough frames before the stall for FFmpeg to finish probing the stream on open
    clip = ts_bytes(60, SMALL, gop=5)
    script = [Step(clip[: len(clip) * 2 // 3], then="stall"), Step(clip, then="stall")]
    with StreamServer(script) as server:
        source = open_source(
            server.url, initial_backoff_s=0.05, open_timeout_s=3, read_timeout_s=0.5
        )
        items: list[Frame | SystemEvent] = []
        start = time.monotonic()
        for item in source:
            items.append(item)
            if isinstance(item, SystemEvent) and item.type == "stream_restored":
                source.stop()
            assert time.monotonic() - start < 10
        source.close()
    lost = events_of(items, "stream_lost")
    assert len(lost) == 1 and "stalled" in lost[0].detail
    assert events_of(items, "stream_restored")


def test_stream_that_never_answers_is_lost_without_hanging() -> None:
    with StreamServer([], default=Step(silent=True)) as server:
        start = time.monotonic()
        source = open_source(server.url, open_timeout_s=0.5, initial_backoff_s=0.05)
        first = next(source)
        assert isinstance(first, SystemEvent) and first.type == "stream_lost"
        assert "did not answer" in first.detail
        assert time.monotonic() - start < 3
        source.stop()
        rest = drain(source, limit_s=3)
        source.close()
    assert [i.type for i in rest] == ["stream_ended"]  # type: ignore[union-attr]
    assert time.monotonic() - start < 6


def test_max_frames_ends_a_live_stream_whose_last_frames_come_from_the_decoder_flush() -> None:
    """The 40th frame is flushed out of the decoder when the second connection closes:
    the source ends there instead of reporting an outage and retrying forever."""
    clip = ts_bytes(20, SMALL, gop=5)
    script = [Step(clip, then="close"), Step(clip, then="close")]
    with StreamServer(script) as server:
        source = open_source(server.url, initial_backoff_s=0.05, max_backoff_s=0.2, max_frames=40)
        watchdog = threading.Timer(10.0, source.stop)
        watchdog.start()
        start = time.monotonic()
        items = drain(source)
        watchdog.cancel()
        source.close()
    assert time.monotonic() - start < 5.0
    assert len(frames_of(items)) == 40
    assert [e.type for e in events_of(items)] == ["stream_lost", "stream_restored", "stream_ended"]


def test_unreachable_stream_without_reconnect_raises() -> None:
    with StreamServer([], default=Step(silent=True)) as server:
        url = server.url.replace("http://", "http://cam:secret@")
        start = time.monotonic()
        with pytest.raises(SourceError) as info:
            open_source(url, reconnect=False, open_timeout_s=0.5)
        assert time.monotonic() - start < 3
    assert info.value.code == "source_unreachable"
    assert "secret" not in str(info.value) and "cam:***@" in str(info.value)


def test_reconnect_back_off_grows_and_is_capped() -> None:
    with StreamServer([], default=Step(status=503)) as server:
        source = open_source(server.url, initial_backoff_s=0.05, max_backoff_s=0.3)
        lost = next(source)
        assert isinstance(lost, SystemEvent) and lost.type == "stream_lost"
        stopper = threading.Timer(2.0, source.stop)
        stopper.start()
        rest = drain(source, limit_s=5)
        stopper.join()
        source.close()
    assert [i.type for i in rest] == ["stream_ended"], "one stream_lost per outage"  # type: ignore[union-attr]
    gaps = np.diff(server.connections)
    assert len(gaps) >= 4
    assert gaps[0] < 0.25  # first wait: 0.025-0.05 s (plus connection time)
    assert max(gaps) >= 0.15 and max(gaps) > 2 * gaps[0]  # it grew
    assert max(gaps) < 0.3 + 0.3  # capped at max_backoff_s (plus connection time)


def test_stop_interrupts_a_long_back_off() -> None:
    with StreamServer([], default=Step(status=503)) as server:
        source = open_source(server.url, initial_backoff_s=20, max_backoff_s=60)
        assert next(source).type == "stream_lost"  # type: ignore[union-attr]
        threading.Timer(0.2, source.stop).start()
        start = time.monotonic()
        rest = drain(source, limit_s=5)
        source.close()
    assert time.monotonic() - start < 2
    assert [i.type for i in rest] == ["stream_ended"]  # type: ignore[union-attr]


def test_unknown_scheme_and_password_masking() -> None:
    with pytest.raises(SourceError) as info:
        open_source("gopher://example.org/cam")
    assert info.value.code == "source_unsupported"
    assert safe_spec("rtsp://admin:hunter2@10.0.0.5:554/s1") == "rtsp://admin:***@10.0.0.5:554/s1"
    assert safe_spec("rtsp://10.0.0.5/s1") == "rtsp://10.0.0.5/s1"


def test_missing_camera_is_a_clear_error_or_an_outage() -> None:
    with pytest.raises(SourceError, match="video97") as info:
        open_source("camera:97", reconnect=False, open_timeout_s=1)
    assert info.value.code == "source_unreachable"
    source = open_source("/dev/video97", open_timeout_s=1, initial_backoff_s=0.05)
    assert isinstance(source, VideoSource)
    first = next(source)
    assert isinstance(first, SystemEvent) and first.type == "stream_lost"
    source.stop()
    assert [i.type for i in drain(source, limit_s=3)] == ["stream_ended"]  # type: ignore[union-attr]
