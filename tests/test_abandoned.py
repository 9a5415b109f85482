"""Abandoned objects on generated videos with known ground truth.

Each scene is rendered by ``airside.synthetic.figures`` at 5 frames per second: a bag
(a prop) that a walking figure puts down, with people handed to the detector as tracks
(their true boxes). The expected event times are worked out from the scene's own
truth in each test: when the bag appeared, and when a person was last near it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from airside.analytics.abandoned import AbandonedConfig, AbandonedEvent, AbandonedObjectDetector
from airside.synthetic.figures import Figure, Prop, Rendered, render_scene

FPS = 4
LIMIT = 10.0
SIZE = (320, 240)
BAG_AT = (160.0, 205.0)
DROP = 20  # frame: the walker reaches the bag's place at frame 20 and stops until 40


def walker(end: int = 60) -> Figure:
    """Walks in from the left, stands at the bag's place (frames 20-40), walks off."""
    return Figure(
        "walker", path=[(20, 200), (150, 200), (150, 200), (330, 200)], height=90, end=end
    )


def run(
    scene: Rendered, config: AbandonedConfig | None = None, *, people: bool = True
) -> tuple[list[tuple[int, AbandonedEvent]], AbandonedObjectDetector]:
    det = AbandonedObjectDetector(config or AbandonedConfig(unattended_s=LIMIT))
    events = []
    for i, image in enumerate(scene.images):
        for e in det.update(image, i / FPS, scene.people(i) if people else []):
            events.append((i, e))
    return events, det


def gap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return math.hypot(dx, dy)


def last_near(scene: Rendered, bag: str, radius: float = 1.0) -> float:
    """The last time any figure was within ``radius`` of its own height of the bag."""
    last = -1.0
    for i, (figs, props) in enumerate(zip(scene.figures, scene.props, strict=True)):
        if bag not in props:
            continue
        for f in figs.values():
            if gap(f.box, props[bag]) <= radius * (f.box[3] - f.box[1]):
                last = i / FPS
    return last


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_a_bag_left_behind_fires_once_after_the_limit_naming_who_left_it() -> None:
    scene = render_scene(
        40 * FPS, SIZE, [walker()], [Prop("bag", path=[BAG_AT], start=DROP)], noise=2.0
    )
    events, det = run(scene)
    assert len(events) == 1
    i, event = events[0]
    left = last_near(scene, "bag")
    assert left > DROP / FPS  # the walker stood by it first
    assert event.at == pytest.approx(left + LIMIT, abs=1.5 / FPS)
    assert event.unattended_since == pytest.approx(left, abs=1.5 / FPS)
    assert event.first_seen == pytest.approx(DROP / FPS, abs=0.5)
    assert iou(event.box, scene.props[i]["bag"]) > 0.7
    assert event.owner_track == 0  # the walker, the only track
    assert [o.fired for o in det.objects] == [True]  # still watched, not fired again


def test_a_bag_carried_away_before_the_limit_fires_nothing() -> None:
    taken = 55  # frame: 11 s, less than the limit after the walker left it (~8.4 s)
    bag = Prop("bag", path=[BAG_AT], start=DROP, end=taken)
    carried = Prop("bag-carried", path=[BAG_AT, (340.0, 205.0)], start=taken, end=taken + 20)
    taker = Figure(
        "taker", path=[(330, 200), (175, 200), (175, 200)], height=90, start=30, end=taken
    )
    leaving = Figure("taker-leaving", path=[(175, 200), (345, 200)], height=90, start=taken)
    scene = render_scene(45 * FPS, SIZE, [walker(), taker, leaving], [bag, carried], noise=2.0)
    events, det = run(scene, AbandonedConfig(unattended_s=LIMIT, attend_radius=0.0))
    assert events == []
    assert det.objects == []  # the place shows the floor again: forgotten


def test_a_bag_with_someone_standing_next_to_it_fires_only_after_they_leave() -> None:
    guard = Figure("guard", path=[(190, 212)], height=90, end=120)  # 24 s
    scene = render_scene(
        40 * FPS, SIZE, [walker(), guard], [Prop("bag", path=[BAG_AT], start=DROP)], noise=2.0
    )
    events, _ = run(scene)
    left = last_near(scene, "bag")
    assert left == pytest.approx(119 / FPS)
    assert len(events) == 1
    assert events[0][1].at == pytest.approx(left + LIMIT, abs=1.5 / FPS)


def test_lighting_flicker_noise_and_passers_by_fire_nothing() -> None:
    frames = 40 * FPS
    gains = 1 + np.random.default_rng(7).uniform(-0.2, 0.2, frames)
    gains[100:] *= 0.75  # and the lights dim for good half-way
    people = [
        Figure("a", path=[(-20, 200), (340, 200)], height=90, end=80),
        Figure("b", path=[(340, 220), (-20, 220)], height=100, start=60, end=160),
    ]
    scene = render_scene(frames, SIZE, people, noise=5.0, gains=list(gains))
    events, det = run(scene)
    assert events == []
    assert det.objects == []


def test_something_taken_away_from_the_scene_is_not_an_abandoned_object() -> None:
    # The bag is there from the first frame (in the starting background) and is gone at
    # 4 s: its place differs from the background model, but it is a ghost, not an object.
    scene = render_scene(
        30 * FPS, SIZE, props=[Prop("bag", path=[BAG_AT], start=0, end=20)], noise=2.0
    )
    events, det = run(scene)
    assert events == []
    assert det.objects == []


def test_without_tracks_an_object_still_fires_with_no_owner() -> None:
    scene = render_scene(30 * FPS, SIZE, props=[Prop("bag", path=[BAG_AT], start=10)])
    events, _ = run(scene, people=False)
    assert len(events) == 1
    event = events[0][1]
    assert event.owner_track is None
    assert event.first_seen == pytest.approx(10 / FPS, abs=0.3)
    assert event.at == pytest.approx(10 / FPS + LIMIT, abs=0.5)


def test_objects_smaller_than_the_minimum_size_are_ignored() -> None:
    tiny = Prop("coin", size=(6, 4), path=[BAG_AT], start=10)
    scene = render_scene(20 * FPS, SIZE, props=[tiny])
    events, det = run(scene, AbandonedConfig(unattended_s=2.0, min_area=0.001))
    assert events == [] and det.objects == []


def test_frame_rate_does_not_change_when_it_fires() -> None:
    times = []
    for fps in (5, 10):
        scene = render_scene(20 * fps, SIZE, props=[Prop("bag", path=[BAG_AT], start=fps)])
        det = AbandonedObjectDetector(AbandonedConfig(unattended_s=5.0))
        fired = [e.at for i, img in enumerate(scene.images) for e in det.update(img, i / fps, [])]
        times.append(fired)
    assert len(times[0]) == len(times[1]) == 1
    assert times[0][0] == pytest.approx(times[1][0], abs=0.3)


@pytest.mark.parametrize(
    "bad",
    [
        {"unattended_s": 0},
        {"min_area": 0.5, "max_area": 0.1},
        {"fast_tau_s": 60.0, "slow_tau_s": 30.0},
        {"threshold": 0},
    ],
)
def test_impossible_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AbandonedConfig(**bad)  # type: ignore[arg-type]
