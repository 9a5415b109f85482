"""Trackers on generated trajectories: ids kept, tracks ended, detections mapped exactly."""

from __future__ import annotations

import numpy as np
import pytest

from airside.video.tracking import (
    ByteTrackConfig,
    ByteTrackTracker,
    IouTracker,
    TrackState,
    iou_matrix,
)


def box(cx: float, cy: float, w: float = 40, h: float = 100) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def feed(
    tracker: ByteTrackTracker | IouTracker,
    frames: list[list[list[float]]],
    scores: list[list[float]] | None = None,
    start: int = 1,
) -> list[list[TrackState]]:
    out = []
    for k, boxes in enumerate(frames):
        b = np.array(boxes, dtype=float).reshape(-1, 4)
        s = np.array(scores[k] if scores else [0.9] * len(boxes), dtype=float)
        out.append(tracker.update(b, s, start + k, t=(start + k) / 25))
    return out


def id_at(states: list[TrackState], x: float) -> int:
    """The id of the track whose box centre is nearest ``x``."""
    return min(states, key=lambda s: abs((s.box[0] + s.box[2]) / 2 - x)).track_id


def test_two_people_crossing_keep_their_ids() -> None:
    # A walks right, B walks left, 8 px a frame, a little apart vertically; their boxes
    # overlap for several frames in the middle.
    n = 50
    frames = [[box(100 + 8 * k, 200), box(500 - 8 * k, 215)] for k in range(n)]
    states = feed(ByteTrackTracker(), frames)
    a, b = id_at(states[0], 100), id_at(states[0], 500)
    assert a != b
    last = states[-1]
    assert id_at(last, 100 + 8 * (n - 1)) == a
    assert id_at(last, 500 - 8 * (n - 1)) == b
    assert {s.track_id for st in states for s in st} == {a, b}


def test_crossing_behind_another_keeps_both_ids_with_bytetrack() -> None:
    # B is hidden behind A while their boxes overlap (six frames); ByteTrack's motion model
    # carries B across, where the IoU tracker (no motion) would start a new id.
    n, v = 50, 6
    frames = []
    for k in range(n):
        xa, xb = 100 + v * k, 100 + v * (n - 1 - k)
        frames.append([box(xa, 200)] + ([box(xb, 205)] if abs(xa - xb) >= 40 else []))
    assert sum(len(f) == 1 for f in frames) == 6
    states = feed(ByteTrackTracker(), frames)
    a, b = id_at(states[0], 100), id_at(states[0], 100 + v * (n - 1))
    assert id_at(states[-1], 100 + v * (n - 1)) == a
    assert id_at(states[-1], 100) == b
    assert {s.track_id for st in states for s in st} == {a, b}


def test_short_occlusion_keeps_the_id_with_bytetrack() -> None:
    n = 40
    hidden = range(15, 21)  # six frames without a detection
    frames = [[] if k in hidden else [box(100 + 6 * k, 200)] for k in range(n)]
    states = feed(ByteTrackTracker(ByteTrackConfig(lost_buffer=30)), frames)
    ids = {s.track_id for st in states for s in st}
    assert ids == {1}
    assert states[21] and states[21][0].det_index == 0


def test_iou_tracker_loses_the_id_after_an_occlusion_longer_than_max_lost() -> None:
    frames = [[] if k in range(5, 9) else [box(100 + 2 * k, 200)] for k in range(15)]
    states = feed(IouTracker(max_lost=2), frames)
    assert {s.track_id for s in states[4]} == {1}
    assert {s.track_id for s in states[9]} == {2}


def test_a_box_that_leaves_ends_its_track_once_after_the_lost_buffer() -> None:
    tracker = ByteTrackTracker(ByteTrackConfig(lost_buffer=5))
    feed(tracker, [[box(100 + 5 * k, 200)] for k in range(10)])  # frames 1..10
    for f in range(11, 16):  # gone; still within the buffer (last match at 10)
        tracker.update(np.zeros((0, 4)), np.zeros(0), f, f / 25)
        assert tracker.drain_ended() == []
    tracker.update(np.zeros((0, 4)), np.zeros(0), 16, 16 / 25)
    ended = tracker.drain_ended()
    assert [(e.track_id, e.last_frame, e.reason, e.hits) for e in ended] == [(1, 10, "lost", 10)]
    tracker.update(np.zeros((0, 4)), np.zeros(0), 17, 17 / 25)
    assert tracker.drain_ended() == []


def test_detection_index_mapping_is_exact_when_inputs_are_shuffled() -> None:
    rng = np.random.default_rng(7)
    people = [(80, 3.0), (260, -2.0), (420, 1.0), (560, -4.0)]  # start x, px per frame
    tracker = ByteTrackTracker()
    owner: dict[int, int] = {}  # track id -> person
    for f in range(1, 41):
        truth = [box(x0 + v * f, 200 + 30 * p) for p, (x0, v) in enumerate(people)]
        truth.append(box(50 + 10 * f, 40, 10, 10))  # a low-score blip that starts nothing
        scores = [0.95, 0.9, 0.85, 0.92, 0.3]
        order = rng.permutation(len(truth))
        b = np.array([truth[i] for i in order])
        s = np.array([scores[i] for i in order])
        states = tracker.update(b, s, f, f / 25)
        assert len(states) == 4
        for st in states:
            assert st.det_index is not None
            person = int(order[st.det_index])
            assert person < 4
            assert owner.setdefault(st.track_id, person) == person
            assert iou_matrix(np.array([st.box]), b[st.det_index : st.det_index + 1])[0, 0] > 0.8
        assert len({st.det_index for st in states}) == 4


def test_low_score_detections_keep_a_track_but_start_none() -> None:
    tracker = ByteTrackTracker(ByteTrackConfig(high_thresh=0.6, new_track_thresh=0.7))
    frames = [[box(100 + 4 * k, 200)] for k in range(20)]
    scores = [[0.9] if k < 8 else [0.3] for k in range(20)]
    states = feed(tracker, frames, scores)
    assert all(st and st[0].track_id == 1 for st in states)
    lone = ByteTrackTracker(ByteTrackConfig(high_thresh=0.6, new_track_thresh=0.7))
    assert all(st == [] for st in feed(lone, frames, [[0.3]] * 20))


def test_a_newcomer_is_reported_from_its_second_hit() -> None:
    tracker = ByteTrackTracker()
    frames = [[box(100, 200)]] * 4 + [[box(100, 200), box(400, 200)]] * 3
    states = feed(tracker, frames)
    assert [len(st) for st in states] == [1, 1, 1, 1, 1, 2, 2]
    assert states[5][1].track_id == 2 and states[5][1].hits == 2


def test_detection_on_every_third_frame_keeps_the_id_and_counts_video_frames() -> None:
    tracker = ByteTrackTracker(ByteTrackConfig(lost_buffer=10))
    for f in range(1, 61, 3):  # detector runs on frames 1, 4, 7, ...
        st = tracker.update(np.array([box(100 + 4 * f, 200)]), np.array([0.9]), f, f / 25)
        assert [s.track_id for s in st] == [1]
    assert tracker.drain_ended() == []
    # between detections the prediction moves on with the walker
    pred = tracker.predict_only(60, 60 / 25)
    assert pred[0].det_index is None and pred[0].time_since_update == 2
    assert abs((pred[0].box[0] + pred[0].box[2]) / 2 - (100 + 4 * 60)) < 4
    # no detection for 11 video frames (> lost_buffer 10): the track ends
    tracker.update(np.zeros((0, 4)), np.zeros(0), 70, 70 / 25)
    assert [e.track_id for e in tracker.drain_ended()] == [1]


def test_finish_ends_every_live_track() -> None:
    tracker = ByteTrackTracker()
    feed(tracker, [[box(100, 200), box(300, 200)]] * 3)
    assert sorted(e.track_id for e in tracker.finish()) == [1, 2]
    assert tracker.live_ids() == []


def test_bad_inputs_are_refused() -> None:
    tracker = ByteTrackTracker()
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        tracker.update(np.zeros((2, 3)), np.zeros(2), 1, 0.0)
    with pytest.raises(ValueError, match="scores"):
        tracker.update(np.zeros((2, 4)), np.zeros(3), 1, 0.0)
    tracker.update(np.zeros((0, 4)), np.zeros(0), 5, 0.2)
    with pytest.raises(ValueError, match="increase"):
        tracker.update(np.zeros((0, 4)), np.zeros(0), 5, 0.2)


def test_iou_tracker_follows_greedy_overlap_and_maps_indices() -> None:
    tracker = IouTracker(iou_threshold=0.3, max_lost=0)
    s1 = tracker.update(np.array([box(100, 200), box(300, 200)]), np.array([0.9, 0.8]), 1, 0.0)
    assert [(s.track_id, s.det_index) for s in s1] == [(1, 0), (2, 1)]
    # next frame: order swapped, both moved a little, and a third one appears
    b = np.array([box(305, 200), box(500, 200), box(104, 200)])
    s2 = tracker.update(b, np.array([0.9, 0.9, 0.9]), 2, 0.04)
    assert {(s.track_id, s.det_index) for s in s2} == {(1, 2), (2, 0), (3, 1)}
    # a box that jumps too far (IoU below the threshold) is a new track; the old one ends
    s3 = tracker.update(np.array([box(160, 200)]), np.array([0.9]), 3, 0.08)
    assert [s.track_id for s in s3] == [4]
    assert sorted(e.track_id for e in tracker.drain_ended()) == [1, 2, 3]
