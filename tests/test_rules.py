"""Scene rules on generated trajectories: each rule fires where it must, once, and not on
the near misses; safety events are stored without identity and audited."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from tests.conftest import jpeg_bytes

from airside.analytics import PersonTrack, RuleEngine, SafetyEvent, parse_scene
from airside.analytics.scene import Scene
from airside.config import Settings
from airside.errors import AccessDenied
from airside.governance.principals import Principal
from airside.services import events, principal_admin
from airside.services.app import Airside
from airside.services.retention import purge
from airside.store.tables import AuditRecord, Event

W, H = 1280, 720
FPS = 25.0
DT = 1.0 / FPS
MONDAY_NOON = datetime(2026, 1, 5, 11, 0, tzinfo=UTC)  # 12:00 in Berlin

SCENE = """\
camera = "cam-1"

[zones.apron]
points = [[0.5, 0.5], [0.9, 0.5], [0.9, 0.95], [0.5, 0.95]]

[zones.hall]
points = [[0.1, 0.3], [0.9, 0.3], [0.9, 0.95], [0.1, 0.95]]

[lines.door]
points = [[0.2, 0.6], [0.8, 0.6]]
in = "down"

[schedules.night]
timezone = "Europe/Berlin"
windows = [{ days = ["mon-sun"], from = "22:00", to = "06:00" }]
"""


def scene(rules: str, base: str = SCENE) -> Scene:
    return parse_scene(base + "\n" + rules)


def box(
    fx: float, fy: float, height: float = 0.3, aspect: float = 0.4, size: tuple[int, int] = (W, H)
) -> tuple[float, float, float, float]:
    """A box standing on the normalised foot point (fx, fy), ``height`` image heights tall."""
    w, h = size
    hp = height * h
    wp = aspect * hp
    return (fx * w - wp / 2, fy * h - hp, fx * w + wp / 2, fy * h)


Path2 = Callable[[float], tuple[float, float]]


class Sim:
    """People on paths over time, replayed frame by frame at 25 fps."""

    def __init__(self) -> None:
        self.frames: dict[int, list[PersonTrack]] = defaultdict(list)
        self.ends: dict[int, list[int]] = defaultdict(list)

    def add(
        self,
        tid: int,
        t0: float,
        t1: float,
        path: Path2,
        *,
        ends: bool = True,
        shape: Callable[[float], tuple[float, float]] | None = None,
        keypoints: Callable[[float], np.ndarray] | None = None,
        boxes: Callable[[float], tuple[float, float, float, float]] | None = None,
    ) -> Sim:
        k0, k1 = round(t0 * FPS), round(t1 * FPS)
        for k in range(k0, k1 + 1):
            t = k / FPS
            x, y = path(t)
            hgt, asp = shape(t) if shape else (0.3, 0.4)
            b = boxes(t) if boxes else box(x, y, hgt, asp)
            kp = keypoints(t) if keypoints else None
            self.frames[k].append(PersonTrack(tid, b, kp))
        if ends:
            self.ends[k1 + 1].append(tid)
        return self

    def run(
        self,
        engine: RuleEngine,
        size: Callable[[float], tuple[int, int]] | None = None,
        cuts: tuple[float, ...] = (),
    ) -> list[SafetyEvent]:
        """``cuts``: times at which the view changes (after that frame's ended tracks)."""
        out: list[SafetyEvent] = []
        last = max([*self.frames, *self.ends])
        cut_frames = {round(c * FPS) for c in cuts}
        for k in range(last + 1):
            t = k / FPS
            for tid in self.ends.get(k, []):
                engine.track_ended(tid, t)
            if k in cut_frames:
                engine.scene_cut()
            people = self.frames.get(k, [])
            out += engine.update(t, size(t) if size else (W, H), people)
        return out


def line(p0: tuple[float, float], p1: tuple[float, float], t0: float, t1: float) -> Path2:
    def at(t: float) -> tuple[float, float]:
        a = min(max((t - t0) / (t1 - t0), 0.0), 1.0)
        return (p0[0] + a * (p1[0] - p0[0]), p0[1] + a * (p1[1] - p0[1]))

    return at


def still(x: float, y: float) -> Path2:
    return lambda _t: (x, y)


def types(evs: list[SafetyEvent]) -> list[tuple[str, tuple[int, ...]]]:
    return [(e.type, e.tracks) for e in evs]


# --------------------------------------------------------------------------------------------
# intrusion


def test_walking_into_a_restricted_zone_is_one_intrusion_at_the_first_foot_inside() -> None:
    eng = RuleEngine(scene('[[rules]]\ntype = "intrusion"\nzone = "apron"'))
    # From x 0.21 to 0.81 at y 0.7 over 6 s: the foot point passes x = 0.5 at t = 2.9 s.
    evs = Sim().add(1, 0, 6, line((0.21, 0.7), (0.81, 0.7), 0, 6)).run(eng)
    (ev,) = evs
    assert (ev.type, ev.zone, ev.tracks, ev.severity) == ("intrusion", "apron", (1,), "critical")
    first_inside = min(k / FPS for k in range(151) if 0.21 + 0.6 * (k / FPS) / 6 > 0.5)
    assert ev.at == ev.started_at == pytest.approx(first_inside)


def test_skirting_the_zone_edge_is_not_an_intrusion() -> None:
    eng = RuleEngine(scene('[[rules]]\ntype = "intrusion"\nzone = "apron"'))
    # Along the left edge, 1 % of the width outside, and along the top edge just above it:
    # the boxes overlap the zone but the feet never enter.
    sim = Sim().add(1, 0, 5, line((0.49, 0.55), (0.49, 0.94), 0, 5))
    sim.add(2, 0, 5, line((0.52, 0.49), (0.88, 0.49), 0, 5))
    assert sim.run(eng) == []


def test_the_cooldown_suppresses_a_quick_re_entry_but_not_a_later_one() -> None:
    eng = RuleEngine(scene('[[rules]]\ntype = "intrusion"\nzone = "apron"\ncooldown = 10'))
    inside, outside = (0.6, 0.7), (0.4, 0.7)

    def path(t: float) -> tuple[float, float]:  # in at 1 s, out at 2 s, in at 5 s, out at 6 s,
        return inside if 1 <= t < 2 or 5 <= t < 6 or 12 <= t < 13 else outside  # in at 12 s

    evs = Sim().add(1, 0, 14, path).run(eng)
    assert [e.at for e in evs] == [pytest.approx(1.0), pytest.approx(12.0)]


def test_an_intrusion_outside_the_schedule_is_not_reported() -> None:
    rules = '[[rules]]\ntype = "intrusion"\nzone = "apron"\nschedule = "night"'
    walk = line((0.2, 0.7), (0.8, 0.7), 0, 6)
    day = RuleEngine(scene(rules), origin=MONDAY_NOON)
    assert Sim().add(1, 0, 6, walk).run(day) == []
    night = RuleEngine(scene(rules), origin=datetime(2026, 1, 5, 22, 0, tzinfo=UTC))  # 23:00
    assert types(Sim().add(1, 0, 6, walk).run(night)) == [("intrusion", (1,))]


def test_someone_inside_when_the_schedule_starts_is_reported_then() -> None:
    rules = '[[rules]]\ntype = "intrusion"\nzone = "apron"\nschedule = "night"'
    eng = RuleEngine(scene(rules), origin=datetime(2026, 1, 5, 20, 59, 50, tzinfo=UTC))
    (ev,) = Sim().add(1, 0, 20, still(0.7, 0.7)).run(eng)  # 21:59:50 to 22:00:10 Berlin
    assert ev.at == pytest.approx(10.0) and ev.detail["schedule"] == "night"


def test_an_intrusion_across_a_line_counts_only_the_wrong_direction() -> None:
    rules = '[[rules]]\ntype = "intrusion"\nzone = "hall"\nline = "door"\ndirection = "in"'
    eng = RuleEngine(scene(rules))
    sim = Sim().add(1, 0, 4, line((0.4, 0.45), (0.4, 0.8), 0, 4))  # down through the door
    sim.add(2, 0, 4, line((0.6, 0.8), (0.6, 0.45), 0, 4))  # up through it: the way out
    sim.add(3, 0, 4, still(0.3, 0.8))  # already in the hall, never crossed
    (ev,) = sim.run(eng)
    assert ev.tracks == (1,) and ev.detail["direction"] == "in"
    crossing = min(k / FPS for k in range(101) if 0.45 + 0.35 * (k / FPS) / 4 > 0.6)
    assert ev.at == pytest.approx(crossing)


def test_zones_are_kept_when_the_frame_size_changes() -> None:
    eng = RuleEngine(
        scene(
            '[[rules]]\ntype = "intrusion"\nzone = "apron"\n'
            '[[rules]]\ntype = "loitering"\nzone = "apron"\ndwell = 4\ngrace = 0\n'
            '[[rules]]\ntype = "line_count"\nline = "door"'
        )
    )

    def size(t: float) -> tuple[int, int]:
        return (1280, 720) if t < 2 else (640, 360)

    sim = Sim()
    for k in range(round(6 * FPS) + 1):  # standing still while the resolution halves at 2 s
        w, h = size(k / FPS)
        sim.frames[k].append(PersonTrack(1, box(0.7, 0.7, size=(w, h))))
    evs = sim.run(eng, size)
    assert [(e.type, e.at) for e in evs] == [("intrusion", 0.0), ("loitering", 4.0)]
    assert eng.line_counts["door"].crossed_in == eng.line_counts["door"].crossed_out == 0


# --------------------------------------------------------------------------------------------
# loitering


LOITER = '[[rules]]\ntype = "loitering"\nzone = "apron"\ndwell = 10\ngrace = 2'


def test_staying_longer_than_the_dwell_limit_is_loitering() -> None:
    eng = RuleEngine(scene(LOITER))
    evs = Sim().add(1, 0, 20, line((0.4, 0.7), (0.7, 0.7), 0, 20)).run(eng)
    (ev,) = evs
    entered = min(k / FPS for k in range(501) if 0.4 + 0.3 * (k / FPS) / 20 > 0.5)
    assert (ev.type, ev.tracks, ev.started_at) == ("loitering", (1,), pytest.approx(entered))
    assert ev.at == pytest.approx(entered + 10, abs=DT) and ev.detail["dwell_s"] >= 10


def test_a_dwell_just_under_the_limit_is_not_loitering() -> None:
    eng = RuleEngine(scene(LOITER))
    assert Sim().add(1, 0, 9.8, still(0.7, 0.7)).run(eng) == []


def test_a_short_track_loss_within_the_grace_keeps_the_dwell() -> None:
    eng = RuleEngine(scene(LOITER))
    sim = Sim().add(1, 0, 6, still(0.7, 0.7), ends=False)
    sim.add(1, 7.5, 12, still(0.7, 0.7))  # not detected for 1.5 s (grace 2 s)
    (ev,) = sim.run(eng)
    assert (ev.started_at, ev.at, ev.tracks) == (0.0, pytest.approx(10.0), (1,))


def test_a_loss_longer_than_the_grace_starts_the_dwell_again() -> None:
    eng = RuleEngine(scene(LOITER))
    sim = Sim().add(1, 0, 6, still(0.7, 0.7), ends=False)
    sim.add(1, 8.5, 16, still(0.7, 0.7))  # gone 2.5 s: a new dwell of 7.5 s
    assert sim.run(eng) == []


def test_a_new_track_where_an_ended_one_stood_takes_over_its_dwell() -> None:
    eng = RuleEngine(scene(LOITER))
    sim = Sim().add(1, 0, 6, still(0.7, 0.7))  # the tracker ends track 1 ...
    sim.add(2, 7, 12, still(0.71, 0.7))  # ... and starts track 2 on the same person
    (ev,) = sim.run(eng)
    assert (ev.tracks, ev.started_at, ev.at) == ((1, 2), 0.0, pytest.approx(10.0))


def test_after_a_scene_cut_a_new_track_where_an_ended_one_stood_starts_its_own_dwell() -> None:
    """The same spot in another view is another person: no takeover across a cut (the
    same tracks without the cut are one 12 s dwell, as the test above shows)."""
    eng = RuleEngine(scene(LOITER))
    sim = Sim().add(1, 0, 6, still(0.7, 0.7))
    sim.add(2, 6.4, 12, still(0.71, 0.7))
    assert sim.run(eng, cuts=(6.2,)) == []  # 5.6 s of its own: under the 10 s dwell


def test_a_new_track_elsewhere_in_the_zone_does_not_take_over_a_dwell() -> None:
    eng = RuleEngine(scene(LOITER))
    sim = Sim().add(1, 0, 6, still(0.55, 0.9))
    sim.add(2, 7, 12, still(0.85, 0.55))  # 0.45 image heights away, boxes 0.3 high
    assert sim.run(eng) == []


def test_stepping_out_briefly_does_not_reset_the_dwell() -> None:
    eng = RuleEngine(scene(LOITER))
    sim = Sim().add(1, 0, 12, lambda t: (0.45, 0.7) if 5 <= t < 6 else (0.55, 0.7))
    (ev,) = sim.run(eng)
    assert (ev.started_at, ev.at) == (0.0, pytest.approx(10.0))


# --------------------------------------------------------------------------------------------
# crowding


CROWD = '[[rules]]\ntype = "crowding"\nzone = "apron"\nmax_count = 3\nsustain = 2'


def test_more_people_than_the_limit_for_the_sustain_time_is_crowding() -> None:
    eng = RuleEngine(scene(CROWD))
    sim = Sim()
    for i in range(4):
        sim.add(i + 1, i, 12, still(0.55 + 0.1 * i, 0.7))  # one more each second
    (ev,) = sim.run(eng)
    assert (ev.type, ev.tracks, ev.detail["count"]) == ("crowding", (1, 2, 3, 4), 4)
    assert (ev.started_at, ev.at) == (3.0, pytest.approx(5.0))


def test_a_crowd_one_below_the_limit_is_not_crowding() -> None:
    eng = RuleEngine(scene(CROWD))
    sim = Sim()
    for i in range(3):
        sim.add(i + 1, 0, 12, still(0.55 + 0.1 * i, 0.7))
    sim.add(9, 0, 12, still(0.3, 0.7))  # a fourth, outside the zone
    assert sim.run(eng) == []


def test_someone_passing_through_a_full_zone_briefly_is_not_crowding() -> None:
    eng = RuleEngine(scene(CROWD))
    sim = Sim()
    for i in range(3):
        sim.add(i + 1, 0, 12, still(0.55 + 0.1 * i, 0.8))
    sim.add(4, 3, 6, line((0.3, 0.6), (1.0, 0.6), 3, 6))  # 1.7 s inside (< 2 s sustain)
    assert sim.run(eng) == []


def test_a_crowd_is_reported_once_until_it_clears() -> None:
    eng = RuleEngine(scene(CROWD.replace("sustain = 2", "sustain = 1\ncooldown = 0")))
    sim = Sim()
    for i in range(4):
        sim.add(i + 1, 0, 20, still(0.55 + 0.1 * i, 0.7))
    sim.add(5, 0, 20, lambda t: (0.6, 0.8) if t < 5 or t >= 10 else (0.3, 0.8))
    evs = sim.run(eng)  # 5 people, 4 (still crowded) from 5 s to 10 s, 5 again
    assert [e.at for e in evs] == [pytest.approx(1.0)]


def test_density_is_people_per_square_metre_of_a_calibrated_zone() -> None:
    calibrated = (
        SCENE
        + "\n[calibration]\nimage = [[0.5, 0.5], [0.9, 0.5], [0.9, 0.95], [0.5, 0.95]]\n"
        + "ground = [[0, 9], [4, 9], [4, 0], [0, 0]]\n"
    )  # the apron is a 4 x 9 m = 36 m² rectangle
    rules = '[[rules]]\ntype = "crowding"\nzone = "apron"\nmax_density = 0.1\nsustain = 0'
    sc = scene(rules, calibrated)
    assert sc.zones["apron"].area_m2 == pytest.approx(36.0)
    sim = Sim()
    for i in range(4):  # 4 / 36 = 0.11 per m² > 0.1 (3 would be 0.083)
        sim.add(i + 1, 0, 2, still(0.55 + 0.1 * i, 0.7))
    (ev,) = sim.run(RuleEngine(sc))
    assert ev.detail["density"] == pytest.approx(4 / 36, abs=1e-3) and ev.at == 0.0
    sim3 = Sim()
    for i in range(3):
        sim3.add(i + 1, 0, 2, still(0.55 + 0.1 * i, 0.7))
    assert sim3.run(RuleEngine(sc)) == []


# --------------------------------------------------------------------------------------------
# running


def test_running_is_sustained_speed_above_the_limit_in_image_heights() -> None:
    eng = RuleEngine(scene('[[rules]]\ntype = "running"\nmax_speed = 0.6\nsustain = 1'))
    # 1280 x 720: 0.4 of the width per second is 0.4 * 1280 / 720 = 0.71 image heights/s.
    (ev,) = Sim().add(1, 0, 3, line((0.1, 0.7), (0.9, 0.7), 0, 2)).run(eng)
    assert ev.type == "running" and ev.detail["unit"] == "image heights/s"
    assert ev.detail["speed"] == pytest.approx(0.4 * W / H, rel=0.02)
    # The speed needs a 0.5 s window (the first frame at or after 0.5 s), then 1 s above.
    assert (ev.started_at, ev.at) == (0.52, 1.52)


def test_a_brisk_walk_under_the_limit_is_not_running() -> None:
    eng = RuleEngine(scene('[[rules]]\ntype = "running"\nmax_speed = 0.6\nsustain = 1'))
    # 0.3 of the width per second: 0.53 image heights/s, with 2 px of detector jitter.
    rng = np.random.default_rng(1)

    def jittery(t: float) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = np.add(box(0.1 + 0.3 * t, 0.7), rng.uniform(-2, 2, 4)).tolist()
        return (x0, y0, x1, y1)

    sim = Sim().add(1, 0, 3, line((0.1, 0.7), (1.0, 0.7), 0, 3), boxes=jittery)
    assert sim.run(eng) == []


def test_a_dash_shorter_than_the_sustain_time_is_not_running() -> None:
    eng = RuleEngine(scene('[[rules]]\ntype = "running"\nmax_speed = 0.6\nsustain = 1'))
    # Fast from 1 s to 1.6 s, standing otherwise: above the limit for less than 1 s.
    evs = Sim().add(1, 0, 4, line((0.2, 0.7), (0.6, 0.7), 1, 1.6)).run(eng)
    assert evs == []


def test_running_in_metres_per_second_on_a_calibrated_ground() -> None:
    calibrated = (
        SCENE
        + "\n[calibration]\nimage = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]\n"
        + "ground = [[0, 10], [20, 10], [20, 0], [0, 0]]\n"
    )  # the lower half of the frame is 20 m wide: 1 m is 0.05 of the width
    rules = '[[rules]]\ntype = "running"\nmax_speed = 2.5\nsustain = 1'
    sim = Sim().add(1, 0, 4, line((0.1, 0.7), (0.1 + 0.05 * 1.5 * 4, 0.7), 0, 4))  # 1.5 m/s
    sim.add(2, 0, 4, line((0.1, 0.9), (0.1 + 0.05 * 4.0 * 4, 0.9), 0, 4))  # 4 m/s
    (ev,) = sim.run(RuleEngine(scene(rules, calibrated)))
    assert ev.tracks == (2,) and ev.detail["unit"] == "m/s"
    assert ev.detail["speed"] == pytest.approx(4.0, rel=0.01)


# --------------------------------------------------------------------------------------------
# falls: stick figures (COCO keypoints) standing, sitting, falling


# Keypoints relative to the foot point, in body heights, y up: nose, eyes, ears, shoulders,
# elbows, wrists, hips, knees, ankles (left, right).
def _pose(rows: list[tuple[float, float]]) -> np.ndarray:
    return np.array(rows, dtype=float)


STANDING = _pose(
    [(0, .93), (-.02, .95), (.02, .95), (-.04, .94), (.04, .94), (-.1, .8), (.1, .8),
     (-.12, .63), (.12, .63), (-.12, .48), (.12, .48), (-.07, .5), (.07, .5),
     (-.07, .27), (.07, .27), (-.07, .03), (.07, .03)]
)  # fmt: skip
ON_A_CHAIR = _pose(
    [(0, .7), (-.02, .72), (.02, .72), (-.04, .71), (.04, .71), (-.1, .57), (.1, .57),
     (-.12, .42), (.12, .42), (.05, .3), (.12, .3), (-.07, .27), (.07, .27),
     (.2, .27), (.22, .27), (.18, .03), (.22, .03)]
)  # fmt: skip
ON_THE_FLOOR = _pose(  # legs stretched out in front: a wide box, torso upright
    [(0, .48), (-.02, .5), (.02, .5), (-.04, .49), (.04, .49), (-.1, .35), (.1, .35),
     (-.12, .2), (.12, .2), (.12, .08), (.18, .08), (-.07, .05), (.07, .05),
     (.25, .12), (.27, .12), (.48, .03), (.5, .03)]
)  # fmt: skip
LYING = _pose(
    [(.93, .07), (.95, .09), (.95, .05), (.94, .1), (.94, .04), (.8, .1), (.8, .02),
     (.63, .12), (.63, .0), (.48, .12), (.48, .0), (.5, .08), (.5, .03),
     (.27, .08), (.27, .03), (.03, .07), (.03, .03)]
)  # fmt: skip


def posture_path(
    start: np.ndarray, end: np.ndarray, t0: float, t1: float, back: float | None = None
) -> Callable[[float], np.ndarray]:
    """From ``start`` to ``end`` between t0 and t1 (and back to ``start`` from ``back``)."""

    def at(t: float) -> np.ndarray:
        a = min(max((t - t0) / (t1 - t0), 0.0), 1.0)
        if back is not None and t >= back:
            a = max(0.0, 1.0 - (t - back) / (t1 - t0))
        return start + a * (end - start)

    return at


def figure(
    pose: Callable[[float], np.ndarray], foot: tuple[float, float] = (0.4, 0.8), body: float = 0.5
) -> tuple[Callable[[float], np.ndarray], Callable[[float], tuple[float, float, float, float]]]:
    """Keypoints (pixels, score 0.9) and their box for a figure ``body`` image heights tall."""

    def keypoints(t: float) -> np.ndarray:
        rel = pose(t)
        xy = np.c_[foot[0] * W + rel[:, 0] * body * H, foot[1] * H - rel[:, 1] * body * H]
        return np.c_[xy, np.full(17, 0.9)]

    def boxes(t: float) -> tuple[float, float, float, float]:
        xy = keypoints(t)[:, :2]
        m = 0.04 * body * H
        x0, y0 = xy.min(axis=0) - m
        x1, y1 = xy.max(axis=0) + m
        return (float(x0), float(y0), float(x1), float(y1))

    return keypoints, boxes


FALL = '[[rules]]\ntype = "fall"\nstay_down = 2'


def run_figure(pose: Callable[[float], np.ndarray], with_pose: bool, t1: float = 8) -> list:
    kps, boxes = figure(pose)
    sim = Sim().add(1, 0, t1, still(0.4, 0.8), boxes=boxes, keypoints=kps if with_pose else None)
    return sim.run(RuleEngine(scene(FALL)))


@pytest.mark.parametrize("with_pose", [True, False], ids=["pose", "box"])
def test_a_fall_that_stays_down_is_reported_once(with_pose: bool) -> None:
    (ev,) = run_figure(posture_path(STANDING, LYING, 2, 2.6), with_pose)
    assert ev.type == "fall" and ev.detail["method"] == ("pose" if with_pose else "box")
    assert ev.at == pytest.approx(ev.started_at + 2, abs=DT) and 2.0 < ev.started_at < 2.65


@pytest.mark.parametrize("with_pose", [True, False], ids=["pose", "box"])
def test_sitting_down_on_a_chair_is_not_a_fall(with_pose: bool) -> None:
    assert run_figure(posture_path(STANDING, ON_A_CHAIR, 2, 3), with_pose) == []


def test_sitting_on_the_floor_is_not_a_fall_with_pose() -> None:
    # Legs out in front make the box as wide as a lying person's; the upright torso says no.
    _, boxes = figure(lambda _t: ON_THE_FLOOR)
    x0, y0, x1, y1 = boxes(0)
    assert (x1 - x0) / (y1 - y0) >= 1.0
    assert run_figure(posture_path(STANDING, ON_THE_FLOOR, 2, 2.8), with_pose=True) == []


@pytest.mark.parametrize("with_pose", [True, False], ids=["pose", "box"])
def test_getting_up_before_the_stay_down_time_is_not_a_fall(with_pose: bool) -> None:
    assert run_figure(posture_path(STANDING, LYING, 2, 2.6, back=3.5), with_pose) == []


@pytest.mark.parametrize("with_pose", [True, False], ids=["pose", "box"])
def test_lying_down_slowly_is_not_a_fall(with_pose: bool) -> None:
    # 6 s from standing to lying: the head and hips drop too slowly for a fall.
    assert run_figure(posture_path(STANDING, LYING, 1, 7), with_pose, t1=12) == []


# --------------------------------------------------------------------------------------------
# counting lines


COUNT = '[[rules]]\ntype = "line_count"\nline = "door"'


def test_crossing_a_line_back_and_forth_counts_each_way() -> None:
    eng = RuleEngine(scene(COUNT))

    def path(t: float) -> tuple[float, float]:  # down at 1 s, up at 3 s, down at 5 s
        return (0.5, 0.65 if 1 <= t < 3 or t >= 5 else 0.55)

    evs = Sim().add(1, 0, 6, path).run(eng)
    assert [(e.type, e.detail["direction"], e.at) for e in evs] == [
        ("line_cross", "in", 1.0),
        ("line_cross", "out", 3.0),
        ("line_cross", "in", 5.0),
    ]
    c = eng.line_counts["door"]
    assert (c.crossed_in, c.crossed_out, c.net) == (2, 1, 1)


def test_walking_round_the_end_of_a_line_is_not_a_crossing() -> None:
    eng = RuleEngine(scene(COUNT))
    assert Sim().add(1, 0, 4, line((0.9, 0.4), (0.9, 0.8), 0, 4)).run(eng) == []
    assert eng.line_counts["door"].crossed_in == 0


def test_hysteresis_stops_jitter_on_the_line_from_counting() -> None:
    jitter = np.random.default_rng(3).uniform(-0.004, 0.004, 200)

    def path(t: float) -> tuple[float, float]:
        return (0.5, 0.6 + jitter[round(t * FPS)])

    loose = RuleEngine(scene(COUNT))
    Sim().add(1, 0, 4, path).run(loose)
    assert loose.line_counts["door"].crossed_in > 5  # every sign change counts
    steady = RuleEngine(
        scene(COUNT, SCENE.replace('in = "down"', 'in = "down"\nhysteresis = 0.01'))
    )
    Sim().add(1, 0, 4, path).run(steady)
    assert steady.line_counts["door"].crossed_in == steady.line_counts["door"].crossed_out == 0


def test_the_cooldown_limits_line_events_but_not_the_counts() -> None:
    eng = RuleEngine(scene(COUNT + "\ncooldown = 10"))

    def path(t: float) -> tuple[float, float]:
        return (0.5, 0.65 if 1 <= t < 3 or t >= 5 else 0.55)

    evs = Sim().add(1, 0, 6, path).run(eng)
    assert [e.at for e in evs] == [1.0]
    assert (eng.line_counts["door"].crossed_in, eng.line_counts["door"].crossed_out) == (2, 1)


def test_only_the_chosen_direction_is_reported() -> None:
    eng = RuleEngine(scene(COUNT + '\ndirection = "out"'))
    sim = Sim().add(1, 0, 4, line((0.4, 0.5), (0.4, 0.7), 0, 4))
    sim.add(2, 0, 4, line((0.5, 0.7), (0.5, 0.5), 0, 4))
    assert types(sim.run(eng)) == [("line_cross", (2,))]


# --------------------------------------------------------------------------------------------
# the engine


def test_time_must_not_go_back() -> None:
    eng = RuleEngine(scene(COUNT))
    eng.update(2.0, (W, H), [])
    with pytest.raises(ValueError, match="must not go back"):
        eng.update(1.0, (W, H), [])


def test_a_track_twice_in_one_frame_is_refused() -> None:
    eng = RuleEngine(scene(COUNT))
    p = PersonTrack(1, box(0.5, 0.5))
    with pytest.raises(ValueError, match="twice"):
        eng.update(0.0, (W, H), [p, p])


def test_an_event_serialises_to_plain_json() -> None:
    eng = RuleEngine(scene('[[rules]]\ntype = "intrusion"\nzone = "apron"'))
    (ev,) = eng.update(0.0, (W, H), [PersonTrack(4, box(0.7, 0.7))])
    d = json.loads(json.dumps(ev.as_dict()))
    assert d["tracks"] == [4] and d["rule"] == "intrusion:apron" and d["zone"] == "apron"


# --------------------------------------------------------------------------------------------
# storing safety events


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Airside]:
    a = Airside(Settings(data_dir=tmp_path / "data"))
    yield a
    a.close()


@pytest.fixture
def admin(store: Airside) -> Principal:
    return principal_admin.ensure_local_admin(store)


@pytest.fixture
def snapshot() -> bytes:
    rng = np.random.default_rng(0)
    return jpeg_bytes(rng.integers(0, 255, (72, 128, 3), dtype=np.uint8))


def record(app: Airside, who: Principal, snap: bytes | None = None, **kw: object) -> int:
    args: dict[str, object] = {
        "camera": "gate-12",
        "type_": "intrusion",
        "severity": "critical",
        "at": 12.0,
        "first_seen": 10.0,
        "zone": "apron",
        "tracks": [3, 5],
        "detail": {"rule": "intrusion:apron"},
        "snapshot_jpeg": snap,
        **kw,
    }
    return events.record_safety_event(app, who, **args)  # type: ignore[arg-type]


def audit_of(app: Airside, action: str) -> list[AuditRecord]:
    with app.session() as s:
        q = select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.seq)
        return list(s.scalars(q))


def test_a_camera_records_a_safety_event_without_identity(store: Airside, admin: Principal) -> None:
    cam = principal_admin.add_principal(store, admin, "cam-1", "camera", [("boarding:*", "*")])
    eid = record(store, cam)
    with store.session() as s:
        ev = s.get(Event, eid)
        assert ev is not None
        assert (ev.type, ev.severity, ev.camera, ev.zone, ev.track) == (
            "intrusion",
            "critical",
            "gate-12",
            "apron",
            3,
        )
        assert (ev.subject_id, ev.subject_ref, ev.gallery, ev.purpose, ev.score) == (None,) * 5
        assert (ev.first_seen, ev.last_seen, ev.evidence) == (10.0, 12.0, None)
        assert json.loads(ev.detail or "") == {"rule": "intrusion:apron", "tracks": [3, 5]}
    (rec,) = audit_of(store, "event.safety")
    result = json.loads(rec.result)
    assert (rec.actor, rec.decision, rec.gallery, rec.input_digest) == (
        "cam-1",
        "recorded",
        None,
        None,
    )
    assert result == {
        "event": eid,
        "type": "intrusion",
        "severity": "critical",
        "camera": "gate-12",
        "zone": "apron",
        "tracks": [3, 5],
        "snapshot": False,
    }
    assert audit_of(store, "event.record") == []


def test_a_snapshot_is_sealed_and_kept_only_for_the_crop_retention(
    store: Airside, admin: Principal, snapshot: bytes
) -> None:
    op = principal_admin.add_principal(store, admin, "op-1", "operator")
    before = datetime.now(UTC)
    eid = record(store, op, snapshot)
    with store.session() as s:
        ev = s.get(Event, eid)
        assert ev is not None and ev.evidence is not None and ev.evidence_until is not None
        assert snapshot not in ev.evidence  # sealed at rest (template protection is on)
        until = ev.evidence_until.replace(tzinfo=ev.evidence_until.tzinfo or UTC)
    days = store.settings.event_crop_retention_days
    assert before + timedelta(days=days) <= until <= datetime.now(UTC) + timedelta(days=days)
    assert events.event_crop(store, op, eid) == snapshot
    purge(store, admin, now=datetime.now(UTC) + timedelta(days=days + 1))
    assert events.event_crop(store, op, eid) is None
    assert [v.id for v in events.list_events(store, op, type_="intrusion")] == [eid]


def test_no_snapshot_is_kept_when_crops_are_not_kept(tmp_path: Path, snapshot: bytes) -> None:
    app = Airside(Settings(data_dir=tmp_path / "d", keep_event_crops=False))
    try:
        admin = principal_admin.ensure_local_admin(app)
        eid = record(app, admin, snapshot)
        with app.session() as s:
            ev = s.get(Event, eid)
            assert ev is not None and ev.evidence is None
        (rec,) = audit_of(app, "event.safety")
        assert json.loads(rec.result)["snapshot"] is False
    finally:
        app.close()


def test_roles_without_event_safety_are_refused_and_audited(
    store: Airside, admin: Principal
) -> None:
    rev = principal_admin.add_principal(store, admin, "rev-1", "reviewer")
    with pytest.raises(AccessDenied):
        record(store, rev)
    (rec,) = audit_of(store, "event.safety")
    assert rec.decision != "recorded" and rec.actor == "rev-1"
    with store.session() as s:
        assert list(s.scalars(select(Event))) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type_": "identity"}, "safety event type"),
        ({"severity": "urgent"}, "severity"),
        ({"at": 5.0}, "before first_seen"),
        ({"tracks": [-1]}, "tracks"),
        ({"detail": {"x": float("nan")}}, "plain JSON"),
    ],
)
def test_bad_safety_events_are_refused(
    store: Airside, admin: Principal, change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        record(store, admin, **change)


def test_engine_events_store_as_they_are(store: Airside, admin: Principal) -> None:
    cam = principal_admin.add_principal(store, admin, "cam-2", "camera")
    eng = RuleEngine(scene('[[rules]]\ntype = "loitering"\nzone = "apron"\ndwell = 2'))
    evs = Sim().add(7, 0, 3, still(0.7, 0.7)).run(eng)
    (ev,) = evs
    eid = events.record_safety_event(
        store,
        cam,
        camera="cam-1",
        type_=ev.type,
        severity=ev.severity,
        at=ev.at,
        first_seen=ev.started_at,
        zone=ev.zone,
        tracks=list(ev.tracks),
        detail={"rule": ev.rule, **ev.detail},
    )
    (view,) = events.list_events(store, admin)
    assert (view.id, view.type, view.track, view.first_seen, view.last_seen) == (
        eid,
        "loitering",
        7,
        0.0,
        2.0,
    )
    assert view.detail["tracks"] == [7] and view.detail["dwell_s"] == 2.0
