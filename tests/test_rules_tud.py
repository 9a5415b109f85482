"""The rules on real trajectories: the TUD ground truth (MOTChallenge, 640x480, 25 fps)
with zones and lines drawn on it, against events computed here independently from the
ground truth (matplotlib's point-in-path, sign changes, run lengths, the world
coordinates that TUD-Stadtmitte's ground truth carries)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from tests.conftest import shared_data

from airside.analytics import PersonTrack, RuleEngine, SafetyEvent, parse_scene

FPS = 25.0
W, H = 640, 480

ZONES = {
    "TUD-Campus": {
        # An irregular pentagon in the middle of the walkway, and the whole walkway.
        "mid": [[0.4013, 0.7513], [0.6037, 0.7391], [0.6521, 0.8813], [0.5129, 0.9911],
                [0.3577, 0.8709]],
        "all": [[0.0113, 0.6517], [0.9891, 0.6517], [0.9891, 0.9987], [0.0113, 0.9987]],
    },
    "TUD-Stadtmitte": {
        # Where one man stands the whole time, a quadrilateral mid-square, the whole square.
        "bench": [[0.2813, 0.4817], [0.3911, 0.4817], [0.3911, 0.5519], [0.2813, 0.5519]],
        "mid": [[0.3517, 0.5213], [0.6419, 0.5011], [0.7013, 0.6617], [0.4121, 0.6913]],
        "all": [[0.0113, 0.4017], [0.9891, 0.4017], [0.9891, 0.7513], [0.0113, 0.7513]],
    },
}  # fmt: skip
# Loitering limits (s) per zone: chosen away from every dwell in the data (checked below).
DWELL = {
    ("TUD-Campus", "all"): 2.0,
    ("TUD-Stadtmitte", "bench"): 5.0,
    ("TUD-Stadtmitte", "mid"): 4.0,
}
CROWD = {"TUD-Campus": 5, "TUD-Stadtmitte": 7}  # max_count in zone "all"
# Counting lines: a vertical one (in = to the right) and the diagonal from the top left to
# the bottom right corner (in = downwards), both spanning the frame.
VERTICAL_X = 0.4987


class Seq:
    """One sequence's ground truth: rows (frame, id, x, y, w, h, ..., world x, world y)."""

    def __init__(self, root: Path, name: str) -> None:
        gt = np.loadtxt(root / name / "gt" / "gt.txt", delimiter=",", ndmin=2)
        gt = gt[gt[:, 6] != 0]  # conf 0: ignore (MOT15)
        self.name = name
        self.rows = gt[np.lexsort((gt[:, 1], gt[:, 0]))]
        info = (root / name / "seqinfo.ini").read_text()
        self.length = int(info.split("seqLength=")[1].split()[0])
        x, y, w, h = (self.rows[:, k] for k in (2, 3, 4, 5))
        self.foot = np.c_[np.clip((x + w / 2) / W, 0, 1), np.clip((y + h) / H, 0, 1)]
        self.frame = self.rows[:, 0].astype(int)
        self.ids = self.rows[:, 1].astype(int)

    def track(self, tid: int) -> np.ndarray:
        """Row indices of ``tid`` in frame order."""
        return np.flatnonzero(self.ids == tid)

    def t(self, frame: int) -> float:
        return (frame - 1) / FPS

    def replay(self, engine: RuleEngine) -> list[SafetyEvent]:
        last = {int(i): int(self.frame[self.ids == i].max()) for i in np.unique(self.ids)}
        out: list[SafetyEvent] = []
        for f in range(1, self.length + 2):
            for tid in [i for i, lf in last.items() if lf == f - 1]:
                engine.track_ended(tid, self.t(f))
            if f > self.length:
                break
            people = [
                PersonTrack(int(r[1]), (r[2], r[3], r[2] + r[4], r[3] + r[5]))
                for r in self.rows[self.frame == f]
            ]
            out += engine.update(self.t(f), (W, H), people)
        return out


@pytest.fixture(scope="module", params=["TUD-Campus", "TUD-Stadtmitte"])
def seq(request: pytest.FixtureRequest) -> Seq:
    return Seq(shared_data("video", "tud"), request.param)


def scene_text(name: str, rules: str, extra: str = "") -> str:
    zones = "".join(f"[zones.{z}]\npoints = {pts}\n" for z, pts in ZONES[name].items())
    lines = (
        f'[lines.vertical]\npoints = [[{VERTICAL_X}, 0.0], [{VERTICAL_X}, 1.0]]\nin = "right"\n'
        '[lines.diagonal]\npoints = [[0.0, 0.0], [1.0, 1.0]]\nin = "down"\n'
    )
    return f'camera = "{name}"\n{zones}{lines}{extra}\n{rules}'


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True."""
    out, start = [], None
    for k, v in enumerate([*flags.tolist(), False]):
        if v and start is None:
            start = k
        elif not v and start is not None:
            out.append((start, k - 1))
            start = None
    return out


def inside_mpl(seq: Seq, zone: str) -> np.ndarray:
    return MplPath(np.array(ZONES[seq.name][zone])).contains_points(seq.foot)


def test_intrusions_are_the_entries_of_feet_into_the_zone(seq: Seq) -> None:
    zone = "mid"
    inside = inside_mpl(seq, zone)
    expected = Counter()
    for tid in np.unique(seq.ids):
        idx = seq.track(int(tid))
        for a, _b in runs(inside[idx]):
            expected[(int(tid), round(seq.t(int(seq.frame[idx[a]])), 6))] += 1
    assert len({k[0] for k in expected}) >= 3  # several people enter, and some do not
    assert len({k[0] for k in expected}) < len(np.unique(seq.ids))

    rules = f'[[rules]]\ntype = "intrusion"\nzone = "{zone}"\ncooldown = 0'
    evs = seq.replay(RuleEngine(parse_scene(scene_text(seq.name, rules))))
    got = Counter((e.tracks[0], e.at) for e in evs)
    assert got == expected


def test_loitering_is_a_dwell_in_the_zone_above_the_limit(seq: Seq) -> None:
    near_misses = 0
    for (name, zone), limit in DWELL.items():
        if name != seq.name:
            continue
        inside = inside_mpl(seq, zone)
        expected, dwells = set(), []
        for tid in np.unique(seq.ids):
            idx = seq.track(int(tid))
            for a, b in runs(inside[idx]):
                dwell = (seq.frame[idx[b]] - seq.frame[idx[a]]) / FPS
                dwells.append(dwell)
                if dwell >= limit:
                    expected.add((int(tid), round(seq.t(int(seq.frame[idx[a]])), 6)))
        assert expected
        assert all(abs(d - limit) > 2.5 / FPS for d in dwells)  # no dwell on the limit
        near_misses += sum(d < limit for d in dwells)

        rules = (
            f'[[rules]]\ntype = "loitering"\nzone = "{zone}"\ndwell = {limit}\n'
            "grace = 0\ncooldown = 0"
        )
        evs = seq.replay(RuleEngine(parse_scene(scene_text(seq.name, rules))))
        assert {(e.tracks[0], round(e.started_at, 6)) for e in evs} == expected
        assert len(evs) == len(expected)
        for e in evs:
            assert e.at - e.started_at == pytest.approx(limit, abs=1.01 / FPS)
    assert near_misses >= 2  # people who passed through without loitering


def test_crowding_is_each_stretch_of_frames_above_the_count(seq: Seq) -> None:
    limit = CROWD[seq.name]
    inside = inside_mpl(seq, "all")
    counts = np.zeros(seq.length + 1, dtype=int)
    np.add.at(counts, seq.frame[inside], 1)
    over = counts[1:] > limit
    expected = []
    for a, _b in runs(over):
        frame = a + 1
        ids = sorted(int(i) for i in seq.ids[(seq.frame == frame) & inside])
        expected.append((seq.t(frame), tuple(ids)))
    assert expected

    def crowd(n: int) -> list[SafetyEvent]:
        rules = (
            f'[[rules]]\ntype = "crowding"\nzone = "all"\nmax_count = {n}\n'
            "sustain = 0\ncooldown = 0"
        )
        return seq.replay(RuleEngine(parse_scene(scene_text(seq.name, rules))))

    evs = crowd(limit)
    assert [(e.started_at, e.tracks) for e in evs] == [
        (pytest.approx(t), ids) for t, ids in expected
    ]
    assert crowd(int(counts.max())) == []  # the largest crowd, as the limit: never above it


def test_line_counts_are_the_sign_changes_of_the_foot_points(seq: Seq) -> None:
    sides = {
        "vertical": np.sign(seq.foot[:, 0] - VERTICAL_X),  # + is right of the line: "in"
        "diagonal": np.sign(seq.foot[:, 1] - seq.foot[:, 0]),  # + is below it: "in"
    }
    expected: Counter[tuple[str, int, str, float]] = Counter()
    for line, side in sides.items():
        for tid in np.unique(seq.ids):
            prev = 0.0
            for k in seq.track(int(tid)):
                s = side[k]
                if s == 0:
                    continue
                if prev and s != prev:
                    way = "in" if s > 0 else "out"
                    expected[(line, int(tid), way, round(seq.t(int(seq.frame[k])), 6))] += 1
                prev = s
    assert expected

    rules = (
        '[[rules]]\ntype = "line_count"\nline = "vertical"\ncooldown = 0\n'
        '[[rules]]\ntype = "line_count"\nline = "diagonal"\ncooldown = 0\n'
    )
    engine = RuleEngine(parse_scene(scene_text(seq.name, rules)))
    evs = seq.replay(engine)
    got = Counter((e.line, e.tracks[0], e.detail["direction"], e.at) for e in evs)
    assert got == expected
    for line in sides:
        c = engine.line_counts[line]
        ways = Counter(k[2] for k in expected.elements() if k[0] == line)
        assert (c.crossed_in, c.crossed_out) == (ways["in"], ways["out"])


def test_speeds_on_the_calibrated_ground_match_the_world_coordinates() -> None:
    """TUD-Stadtmitte's ground truth has each person's position on the ground (metres).
    A calibration from four of those correspondences gives speeds in m/s that agree with
    them; nobody there runs."""
    seq = Seq(shared_data("video", "tud"), "TUD-Stadtmitte")
    fx, fy = seq.foot[:, 0], seq.foot[:, 1]
    picks = [np.argmin(fx + fy), np.argmax(fx - fy), np.argmax(fx + fy), np.argmin(fx - fy)]
    image = [[round(float(fx[i]), 6), round(float(fy[i]), 6)] for i in picks]
    ground = [[float(seq.rows[i, 7]), float(seq.rows[i, 8])] for i in picks]
    extra = f"[calibration]\nimage = {image}\nground = {ground}\n"
    sc = parse_scene(scene_text(seq.name, "", extra))
    assert sc.calibration is not None and sc.speed_unit == "m/s"
    mapped, ok = sc.calibration.to_ground(seq.foot)
    assert ok.all()
    err = np.hypot(*(mapped - seq.rows[:, 7:9]).T)
    assert np.median(err) < 0.3 and err.max() < 0.6  # metres, 4-point fit vs the annotation

    # The running rule's speed (distance over the last >= 0.5 s) from the world columns.
    window = 13  # frames: the first sample at least 0.5 s back at 25 fps
    world_speed = {}
    for tid in np.unique(seq.ids):
        w = seq.rows[seq.track(int(tid)), 7:9]
        world_speed[int(tid)] = np.hypot(*(w[window:] - w[:-window]).T) / (window / FPS)
    fastest = max(float(v.max()) for v in world_speed.values())
    assert 1.5 < fastest < 2.5  # walking

    def running(limit: float) -> set[int]:
        rules = f'[[rules]]\ntype = "running"\nmax_speed = {limit}\nsustain = 1\ncooldown = 0'
        extra_scene = scene_text(seq.name, rules, extra)
        return {e.tracks[0] for e in seq.replay(RuleEngine(parse_scene(extra_scene)))}

    assert running(2.5) == set()

    # At 1 m/s: who clearly walks faster (above 1.15 m/s for 2 s on end) and who clearly
    # does not (never above 0.85 m/s for 1 s) by the world coordinates.
    def sustained(v: np.ndarray, above: float, seconds: float) -> bool:
        return any((b - a + 1) / FPS >= seconds for a, b in runs(v > above))

    fast = {tid for tid, v in world_speed.items() if sustained(v, 1.15, 2.0)}
    slow = {tid for tid, v in world_speed.items() if not sustained(v, 0.85, 1.0)}
    assert fast and slow
    got = running(1.0)
    assert fast <= got and not (got & slow)
