"""Scene rules: people's tracks in, safety events out. No identity, no I/O.

:class:`RuleEngine` runs the rules of a :class:`~airside.analytics.scene.Scene` frame by
frame. Each rule is a small state machine per track (intrusion, loitering, running, fall,
line crossings) or per zone (crowding) that fires once per episode (de-duplication) and
not again for the same track or zone within its ``cooldown`` (seconds of stream time).

A person's position is the **foot point**: the bottom centre of the box, in normalised
image coordinates, so zones survive a change of frame size. Speeds are in m/s on a
calibrated ground plane and otherwise in image heights per second.

```python
engine = RuleEngine(load_scene("gate12.toml"), origin=stream_start_wall_clock)
for t, frame_size, people in frames:          # people: list[PersonTrack]
    for ev in engine.update(t, frame_size, people):
        ...                                    # SafetyEvent -> events.record_safety_event
    for ended in tracker.drain_ended():
        engine.track_ended(ended.track_id, t)
engine.line_counts["door"].crossed_in
```
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from airside.analytics import geometry
from airside.analytics.scene import (
    CountLine,
    CrowdingRule,
    FallRule,
    IntrusionRule,
    LineCountRule,
    LoiteringRule,
    RuleSpec,
    RunningRule,
    Scene,
)

Box = tuple[float, float, float, float]

# COCO keypoint indices used by the fall rule.
L_SHOULDER, R_SHOULDER, L_HIP, R_HIP = 5, 6, 11, 12
# A keypoint below this score is not used.
KEYPOINT_MIN_SCORE = 0.3
# Upright: torso within this many degrees of vertical (pose) / box width over height at most
# this (no pose). A fall starts from an upright posture.
UPRIGHT_TORSO_DEG = 30.0
UPRIGHT_ASPECT = 0.75
# Loitering: a new track may take over an ended track's dwell when its foot point is within
# this many box heights of where the ended track was last seen.
RELINK_BOX_HEIGHTS = 1.0


@dataclass(frozen=True)
class PersonTrack:
    """One tracked person in one frame: ``box`` (x0, y0, x1, y1) in pixels, optional
    ``keypoints`` (17, 3): the COCO keypoints (x, y, score) in pixels."""

    track_id: int
    box: Box
    keypoints: np.ndarray | None = None
    score: float = 1.0


@dataclass(frozen=True)
class SafetyEvent:
    """What a rule noticed: ``type`` (intrusion, loitering, crowding, running, fall,
    line_cross), the ``rule`` name, where (``zone`` / ``line``), the tracks involved, and
    when in stream seconds (``started_at``: the episode began, ``at``: the rule fired)."""

    type: str
    rule: str
    severity: str
    zone: str | None
    line: str | None
    tracks: tuple[int, ...]
    started_at: float
    at: float
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tracks"] = list(self.tracks)
        return out


@dataclass
class LineCount:
    """Crossings of one counting line so far (every crossing, cooldowns do not apply)."""

    line: str
    crossed_in: int = 0
    crossed_out: int = 0

    @property
    def net(self) -> int:
        return self.crossed_in - self.crossed_out


@dataclass
class _Obs:
    """One person in one frame, in the coordinates the rules use."""

    track_id: int
    box: Box
    keypoints: np.ndarray | None
    foot: np.ndarray  # normalised image coordinates
    foot_h: np.ndarray  # in image heights (x scaled by width / height): isotropic
    ground: np.ndarray | None  # metres, when calibrated and below the horizon
    height: float  # box height in image heights


@dataclass
class _Frame:
    t: float
    wall: datetime
    size: tuple[int, int]
    people: list[_Obs]
    scene: Scene
    crossings: list[tuple[int, str, str]]  # (track, line, "in"|"out") in this frame
    last_crossing: dict[tuple[int, str], str]  # (track, line) -> direction, ever
    _inside: dict[str, np.ndarray] = field(default_factory=dict)

    def inside(self, zone: str) -> np.ndarray:
        """Per person, whether the foot point is in ``zone``."""
        if zone not in self._inside:
            pts = np.array([o.foot for o in self.people]).reshape(-1, 2)
            self._inside[zone] = geometry.points_in_polygon(pts, self.scene.zones[zone].array)
        return self._inside[zone]


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


# ---------------------------------------------------------------------------------------------
# rules


class _Rule:
    def __init__(self, spec: RuleSpec, scene: Scene) -> None:
        self.spec = spec
        self.scene = scene
        self._fired_at: dict[object, float] = {}

    def step(self, f: _Frame) -> list[SafetyEvent]:
        raise NotImplementedError

    def reset(self) -> None:
        """Out of schedule: forget every episode (cooldowns stay)."""

    def track_ended(self, track_id: int, t: float) -> None:
        self._fired_at.pop(track_id, None)

    def _event(
        self,
        key: object,
        t: float,
        started: float,
        tracks: Sequence[int],
        detail: dict[str, Any],
        zone: str | None = None,
        line: str | None = None,
    ) -> SafetyEvent | None:
        """The event, unless the same key fired within the cooldown."""
        last = self._fired_at.get(key)
        if last is not None and t - last < self.spec.cooldown:
            return None
        self._fired_at[key] = t
        return SafetyEvent(
            type=self.spec.event_type,
            rule=self.spec.name,
            severity=self.spec.severity,
            zone=zone,
            line=line,
            tracks=tuple(tracks),
            started_at=_r(started, 6),
            at=_r(t, 6),
            detail=detail,
        )


@dataclass
class _Inside:
    since: float
    fired: bool = False


class _Intrusion(_Rule):
    spec: IntrusionRule

    def __init__(self, spec: IntrusionRule, scene: Scene) -> None:
        super().__init__(spec, scene)
        self._state: dict[int, _Inside] = {}

    def reset(self) -> None:
        self._state.clear()

    def track_ended(self, track_id: int, t: float) -> None:
        super().track_ended(track_id, t)
        self._state.pop(track_id, None)

    def step(self, f: _Frame) -> list[SafetyEvent]:
        sp = self.spec
        out = []
        inside = f.inside(sp.zone)
        for o, ins in zip(f.people, inside, strict=True):
            if ins and sp.line is not None:
                ins = f.last_crossing.get((o.track_id, sp.line)) == sp.direction
            if not ins:
                self._state.pop(o.track_id, None)
                continue
            st = self._state.setdefault(o.track_id, _Inside(f.t))
            if st.fired or f.t - st.since < sp.min_inside:
                continue
            st.fired = True
            detail: dict[str, Any] = {"foot": [_r(o.foot[0]), _r(o.foot[1])]}
            if sp.line is not None:
                detail.update(line=sp.line, direction=sp.direction)
            if sp.schedule is not None:
                detail["schedule"] = sp.schedule
            ev = self._event(o.track_id, f.t, st.since, [o.track_id], detail, zone=sp.zone)
            if ev is not None:
                out.append(ev)
        return out


@dataclass
class _Dwell:
    start: float
    last_inside: float
    first_foot: np.ndarray
    foot: np.ndarray
    height: float
    tracks: list[int]
    fired: bool = False


class _Loitering(_Rule):
    """Dwell in a zone: from the first foot point inside to now, bridging gaps (outside,
    not detected, or the track ended and a new one started where it was) up to ``grace``."""

    spec: LoiteringRule

    def __init__(self, spec: LoiteringRule, scene: Scene) -> None:
        super().__init__(spec, scene)
        self._live: dict[int, _Dwell] = {}
        self._orphans: list[_Dwell] = []

    def reset(self) -> None:
        self._live.clear()
        self._orphans.clear()

    def _near(self, a: _Dwell, foot: np.ndarray, height: float) -> bool:
        return float(np.linalg.norm(a.foot - foot)) <= RELINK_BOX_HEIGHTS * max(a.height, height)

    def track_ended(self, track_id: int, t: float) -> None:
        # Cooldowns are keyed by an episode's first track and kept (they expire in step).
        d = self._live.pop(track_id, None)
        if d is None or t - d.last_inside > self.spec.grace:
            return
        # A younger track that started near here while this one was lost takes it over.
        for other in self._live.values():
            if (
                other is not d
                and 0 <= other.start - d.last_inside <= self.spec.grace
                and self._near(d, other.first_foot, other.height)
            ):
                other.start = d.start
                other.tracks = d.tracks + [x for x in other.tracks if x not in d.tracks]
                other.fired = other.fired or d.fired
                return
        self._orphans.append(d)

    def step(self, f: _Frame) -> list[SafetyEvent]:
        sp = self.spec
        t = f.t
        self._orphans = [d for d in self._orphans if t - d.last_inside <= sp.grace]
        for key in [k for k, at in self._fired_at.items() if t - at >= sp.cooldown]:
            del self._fired_at[key]
        out = []
        for o, ins in zip(f.people, f.inside(sp.zone), strict=True):
            if not ins:
                continue
            d = self._live.get(o.track_id)
            if d is None:
                d = self._adopt(o, t)
                self._live[o.track_id] = d
            d.last_inside, d.foot, d.height = t, o.foot_h, o.height
            if d.fired or t - d.start < sp.dwell:
                continue
            d.fired = True
            detail = {"dwell_s": _r(t - d.start), "limit_s": sp.dwell}
            ev = self._event(d.tracks[0], t, d.start, d.tracks, detail, zone=sp.zone)
            if ev is not None:
                out.append(ev)
        # Not inside now (outside, or not in this frame) for longer than the grace: over.
        for tid in [k for k, d in self._live.items() if t - d.last_inside > sp.grace]:
            del self._live[tid]
        return out

    def _adopt(self, o: _Obs, t: float) -> _Dwell:
        for d in self._orphans:
            if self._near(d, o.foot_h, o.height):
                self._orphans.remove(d)
                d.tracks.append(o.track_id)
                return d
        return _Dwell(t, t, o.foot_h, o.foot_h, o.height, [o.track_id])


class _Crowding(_Rule):
    """People in the zone (count, or count per m² of ground) above the limit for
    ``sustain`` seconds opens an episode (one event); it closes after ``sustain`` seconds
    at or below the limit."""

    spec: CrowdingRule

    def __init__(self, spec: CrowdingRule, scene: Scene) -> None:
        super().__init__(spec, scene)
        self.reset()

    def reset(self) -> None:
        self._above_since: float | None = None
        self._below_since: float | None = None
        self._open = False

    def step(self, f: _Frame) -> list[SafetyEvent]:
        sp = self.spec
        inside = f.inside(sp.zone)
        ids = sorted(o.track_id for o, ins in zip(f.people, inside, strict=True) if ins)
        n = len(ids)
        area = self.scene.zones[sp.zone].area_m2
        if sp.max_count is not None:
            over = n > sp.max_count
        else:
            assert sp.max_density is not None and area is not None
            over = n / area > sp.max_density
        if not over:
            self._above_since = None
            if self._open:
                self._below_since = f.t if self._below_since is None else self._below_since
                if f.t - self._below_since >= sp.sustain:
                    self._open = False
            return []
        self._below_since = None
        self._above_since = f.t if self._above_since is None else self._above_since
        if self._open or f.t - self._above_since < sp.sustain:
            return []
        self._open = True
        detail: dict[str, Any] = {"count": n}
        if sp.max_count is not None:
            detail["max_count"] = sp.max_count
        if area is not None:
            detail.update(area_m2=_r(area, 2), density=_r(n / area))
        if sp.max_density is not None:
            detail["max_density"] = sp.max_density
        ev = self._event(sp.zone, f.t, self._above_since, ids, detail, zone=sp.zone)
        return [ev] if ev is not None else []


@dataclass
class _Motion:
    history: deque[tuple[float, np.ndarray]] = field(default_factory=deque)
    since: float | None = None
    fired: bool = False


class _Running(_Rule):
    """Speed = distance covered over the last ``window`` seconds / the time it took (on
    the ground in m/s when calibrated, else in image heights/s); above ``max_speed`` at
    every update for ``sustain`` seconds fires once per episode."""

    spec: RunningRule

    def __init__(self, spec: RunningRule, scene: Scene) -> None:
        super().__init__(spec, scene)
        self._state: dict[int, _Motion] = {}

    def reset(self) -> None:
        self._state.clear()

    def track_ended(self, track_id: int, t: float) -> None:
        super().track_ended(track_id, t)
        self._state.pop(track_id, None)

    def speed(self, st: _Motion, t: float, pos: np.ndarray) -> float | None:
        """Append ``pos`` and return the speed over the window, None until it is covered."""
        h = st.history
        h.append((t, pos))
        while len(h) > 1 and h[1][0] <= t - self.spec.window:
            h.popleft()
        t0, p0 = h[0]
        if t - t0 < self.spec.window or t <= t0:
            return None
        return float(np.linalg.norm(pos - p0)) / (t - t0)

    def step(self, f: _Frame) -> list[SafetyEvent]:
        sp = self.spec
        calibrated = self.scene.calibration is not None
        inside = f.inside(sp.zone) if sp.zone is not None else None
        out = []
        for i, o in enumerate(f.people):
            st = self._state.setdefault(o.track_id, _Motion())
            pos = o.ground if calibrated else o.foot_h
            if pos is None or (inside is not None and not inside[i]):
                self._state[o.track_id] = _Motion()  # beyond the horizon or out of the zone
                continue
            v = self.speed(st, f.t, pos)
            if v is None or v <= sp.max_speed:
                st.since, st.fired = None, False
                continue
            st.since = f.t if st.since is None else st.since
            if st.fired or f.t - st.since < sp.sustain:
                continue
            st.fired = True
            detail = {"speed": _r(v, 2), "max_speed": sp.max_speed, "unit": self.scene.speed_unit}
            ev = self._event(o.track_id, f.t, st.since, [o.track_id], detail, zone=sp.zone)
            if ev is not None:
                out.append(ev)
        return out


@dataclass(frozen=True)
class _Posture:
    t: float
    top: float  # box top, pixels
    height: float  # box height, pixels
    upright_box: bool
    down_box: bool
    aspect: float
    pose: bool  # torso keypoints usable
    hip_y: float = 0.0
    angle: float = 0.0  # torso from vertical, degrees


@dataclass
class _FallState:
    history: deque[_Posture] = field(default_factory=deque)
    down_since: float | None = None
    method: str = ""
    drop: float = 0.0
    fired: bool = False


class _Fall(_Rule):
    """From upright to down within ``fall_seconds`` with a drop of at least ``drop`` x the
    upright height, then down for ``stay_down`` seconds.

    With pose (torso keypoints scoring >= 0.3): down = torso at least ``torso_angle`` from
    vertical, drop = how far the hips' midpoint went down. Without: down = box width /
    height >= ``lying_aspect``, drop = how far the box's top went down. Upright = torso
    within 30 degrees of vertical, or a box at most 0.75 as wide as high."""

    spec: FallRule

    def __init__(self, spec: FallRule, scene: Scene) -> None:
        super().__init__(spec, scene)
        self._state: dict[int, _FallState] = {}

    def reset(self) -> None:
        self._state.clear()

    def track_ended(self, track_id: int, t: float) -> None:
        super().track_ended(track_id, t)
        self._state.pop(track_id, None)

    def posture(self, o: _Obs, t: float) -> _Posture:
        x0, y0, x1, y1 = o.box
        w, h = x1 - x0, y1 - y0
        aspect = w / h
        kp = o.keypoints
        usable = kp is not None and bool(
            (kp[[L_SHOULDER, R_SHOULDER, L_HIP, R_HIP], 2] >= KEYPOINT_MIN_SCORE).all()
        )
        hip_y = angle = 0.0
        if kp is not None and usable:
            shoulders = kp[[L_SHOULDER, R_SHOULDER], :2].mean(axis=0)
            hips = kp[[L_HIP, R_HIP], :2].mean(axis=0)
            v = shoulders - hips
            angle = math.degrees(math.atan2(abs(float(v[0])), -float(v[1])))
            hip_y = float(hips[1])
        return _Posture(
            t=t,
            top=y0,
            height=h,
            upright_box=aspect <= UPRIGHT_ASPECT,
            down_box=aspect >= self.spec.lying_aspect,
            aspect=aspect,
            pose=usable,
            hip_y=hip_y,
            angle=angle,
        )

    def step(self, f: _Frame) -> list[SafetyEvent]:
        sp = self.spec
        inside = f.inside(sp.zone) if sp.zone is not None else None
        out = []
        for i, o in enumerate(f.people):
            if inside is not None and not inside[i]:
                continue
            st = self._state.setdefault(o.track_id, _FallState())
            p = self.posture(o, f.t)
            st.history.append(p)
            while st.history and st.history[0].t < f.t - sp.fall_seconds:
                st.history.popleft()
            upright = p.angle <= UPRIGHT_TORSO_DEG if p.pose else p.upright_box
            if upright:
                st.down_since, st.fired = None, False  # up again: re-armed
                continue
            if st.down_since is None:
                self._detect(st, p)
                if st.down_since is None:
                    continue
            elif not p.pose and st.method == "pose":
                continue  # pose lost for a frame: neither confirms nor cancels
            elif not (p.angle >= sp.torso_angle if p.pose else p.down_box):
                st.down_since = None  # got up part way (knelt, sat): not down any more
                continue
            if st.fired or f.t - st.down_since < sp.stay_down:
                continue
            st.fired = True
            detail = {"method": st.method, "drop": _r(st.drop), "down_s": _r(f.t - st.down_since)}
            detail["torso_angle" if st.method == "pose" else "aspect"] = _r(
                p.angle if st.method == "pose" else p.aspect, 2
            )
            ev = self._event(o.track_id, f.t, st.down_since, [o.track_id], detail, zone=sp.zone)
            if ev is not None:
                out.append(ev)
        return out

    def _detect(self, st: _FallState, p: _Posture) -> None:
        sp = self.spec
        # Pose decides whenever the figure had a pose in the window before; the box only
        # when it has none (no pose model, or keypoints too weak to use).
        with_pose = [r for r in st.history if r.pose and r is not p]
        if p.pose and with_pose:
            refs = [r for r in with_pose if r.angle <= UPRIGHT_TORSO_DEG]
            if not refs or p.angle < sp.torso_angle:
                return
            ref = min(refs, key=lambda r: r.hip_y)
            drop, method = (p.hip_y - ref.hip_y) / ref.height, "pose"
        else:
            box_refs = [r for r in st.history if r.upright_box]
            if not p.down_box or not box_refs:
                return
            ref = min(box_refs, key=lambda r: r.top)
            drop, method = (p.top - ref.top) / ref.height, "box"
        if drop >= sp.drop:
            st.down_since, st.method, st.drop = p.t, method, drop


class _LineCount(_Rule):
    spec: LineCountRule

    def step(self, f: _Frame) -> list[SafetyEvent]:
        sp = self.spec
        out = []
        for tid, line, way in f.crossings:
            if line != sp.line or sp.direction not in ("both", way):
                continue
            ev = self._event(tid, f.t, f.t, [tid], {"direction": way}, line=line)
            if ev is not None:
                out.append(ev)
        return out


_RULES: dict[type[RuleSpec], type[_Rule]] = {
    IntrusionRule: _Intrusion,
    LoiteringRule: _Loitering,
    CrowdingRule: _Crowding,
    RunningRule: _Running,
    FallRule: _Fall,
    LineCountRule: _LineCount,
}


# ---------------------------------------------------------------------------------------------
# the engine


@dataclass
class _Side:
    side: int
    point: np.ndarray  # normalised


class RuleEngine:
    """Runs a scene's rules over people's tracks; pure (no I/O, no clock but ``origin``).

    ``origin``: the wall-clock time of stream second 0, for schedules (default: when the
    engine is made); ``update(..., wall=...)`` overrides it per frame.
    """

    def __init__(self, scene: Scene, *, origin: datetime | None = None) -> None:
        self.scene = scene
        self.origin = origin if origin is not None else datetime.now(UTC)
        if self.origin.tzinfo is None:
            raise ValueError("origin must be timezone-aware")
        self._rules = [_RULES[type(r)](r, scene) for r in scene.rules]
        self._active = [True] * len(self._rules)
        self._sides: dict[tuple[str, int], _Side] = {}
        self._last_crossing: dict[tuple[int, str], str] = {}
        self._counts = {name: LineCount(name) for name in scene.lines}
        self._zone_counts: dict[str, int] = {name: 0 for name in scene.zones}
        self._t: float | None = None

    @property
    def line_counts(self) -> dict[str, LineCount]:
        """Crossings per line so far (copies)."""
        return {k: LineCount(v.line, v.crossed_in, v.crossed_out) for k, v in self._counts.items()}

    @property
    def zone_counts(self) -> dict[str, int]:
        """People (foot points) in each zone at the last update."""
        return dict(self._zone_counts)

    @property
    def speed_unit(self) -> str:
        return self.scene.speed_unit

    def update(
        self,
        t: float,
        frame_size: tuple[int, int],
        people: Sequence[PersonTrack],
        *,
        wall: datetime | None = None,
    ) -> list[SafetyEvent]:
        """Feed one frame at stream second ``t`` (non-decreasing) of ``frame_size`` (w, h)
        with the people tracked in it; returns the events that fire now."""
        if not math.isfinite(t) or (self._t is not None and t < self._t):
            raise ValueError(f"t must be finite and must not go back ({t} after {self._t})")
        w, h = frame_size
        if w <= 0 or h <= 0:
            raise ValueError(f"frame_size must be positive, not {frame_size}")
        self._t = t
        obs = [self._obs(p, w, h) for p in people]
        if len({o.track_id for o in obs}) != len(obs):
            raise ValueError("a track id appears twice in one frame")
        when = wall if wall is not None else self.origin + timedelta(seconds=t)
        f = _Frame(t, when, (w, h), obs, self.scene, [], self._last_crossing)
        self._cross_lines(f)
        self._zone_counts = {name: int(f.inside(name).sum()) for name in self.scene.zones}
        out: list[SafetyEvent] = []
        for k, rule in enumerate(self._rules):
            sched = rule.spec.schedule
            active = sched is None or self.scene.schedules[sched].active(when)
            if not active:
                if self._active[k]:
                    rule.reset()
                self._active[k] = False
                continue
            self._active[k] = True
            out.extend(rule.step(f))
        return out

    def track_ended(self, track_id: int, t: float) -> None:
        """The tracker ended ``track_id`` (last seen before ``t``)."""
        for rule in self._rules:
            rule.track_ended(track_id, t)
        for name in self.scene.lines:
            self._sides.pop((name, track_id), None)
            self._last_crossing.pop((track_id, name), None)

    def scene_cut(self) -> None:
        """The camera's view changed: every rule forgets its episodes (a dwell, a crowd
        building up, a fall in progress belong to the old view); line counts and cooldowns
        stay. Call after ending the old view's tracks."""
        for rule in self._rules:
            rule.reset()
        self._sides.clear()
        self._last_crossing.clear()

    # -- internals

    def _obs(self, p: PersonTrack, w: int, h: int) -> _Obs:
        x0, y0, x1, y1 = (float(v) for v in p.box)
        if not (x1 > x0 and y1 > y0) or not all(map(math.isfinite, (x0, y0, x1, y1))):
            raise ValueError(f"track {p.track_id}: box {p.box} is not x0 < x1, y0 < y1")
        kp = None
        if p.keypoints is not None:
            kp = np.asarray(p.keypoints, dtype=float)
            if kp.shape != (17, 3):
                raise ValueError(f"track {p.track_id}: keypoints must be (17, 3), not {kp.shape}")
        foot = np.clip(np.array([(x0 + x1) / 2.0 / w, y1 / h]), 0.0, 1.0)
        ground = None
        cal = self.scene.calibration
        if cal is not None:
            g, ok = cal.to_ground(foot[None, :])
            ground = g[0] if ok[0] else None
        foot_h = np.array([foot[0] * w / h, foot[1]])
        return _Obs(p.track_id, (x0, y0, x1, y1), kp, foot, foot_h, ground, (y1 - y0) / h)

    def _cross_lines(self, f: _Frame) -> None:
        """Per line and track: which side the foot point is on (committed once it is more
        than the line's hysteresis away); a change of side whose step crosses the segment
        itself is a crossing."""
        w, h = f.size
        scale = np.array([w / h, 1.0])
        for line in self.scene.lines.values():
            a, b = np.array(line.a), np.array(line.b)
            ab = (b - a) * scale
            length = float(np.linalg.norm(ab))
            for o in f.people:
                d = float(geometry.cross(np.zeros(2), ab, (o.foot - a) * scale)) / length
                if abs(d) <= line.hysteresis and (line.hysteresis > 0 or d == 0):
                    continue
                side = 1 if d > 0 else -1
                key = (line.name, o.track_id)
                prev = self._sides.get(key)
                self._sides[key] = _Side(side, o.foot)
                if prev is None or prev.side == side:
                    continue
                if not geometry.segments_intersect(
                    (float(prev.point[0]), float(prev.point[1])),
                    (float(o.foot[0]), float(o.foot[1])),
                    line.a,
                    line.b,
                ):
                    continue  # went round the end of the line
                self._count(f, line, o.track_id, side)

    def _count(self, f: _Frame, line: CountLine, track_id: int, side: int) -> None:
        way = "in" if side == line.in_sign else "out"
        c = self._counts[line.name]
        if way == "in":
            c.crossed_in += 1
        else:
            c.crossed_out += 1
        f.crossings.append((track_id, line.name, way))
        self._last_crossing[(track_id, line.name)] = way
