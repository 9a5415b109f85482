"""A camera's scene: zones, counting lines, ground calibration, schedules and rules.

Written by a person in TOML (docs/analytics.md has the format and an example), read with
the standard library's ``tomllib`` and checked here. ``tomllib`` gives values but no
positions, so :class:`_Locator` finds the line of every key and array element in the
source text itself; every refusal (:class:`SceneError`) names the line and the problem.

Image coordinates are normalised to [0, 1] (x from the left edge, y from the top), so a
camera whose frame size changes keeps its zones and lines.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from airside.analytics import geometry
from airside.errors import AirsideError

Point = tuple[float, float]
KeyPath = tuple[str | int, ...]

# Event severities, here (the lowest layer that needs them); services/events imports them.
SEVERITIES = ("info", "warning", "critical")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# How far from parallel (degrees) a line's "in" direction must be.
_MIN_CROSSING_DEG = 10.0


class SceneError(AirsideError):
    """A scene file that cannot be used; ``line`` is where the problem is (1-based)."""

    code = "bad_scene"

    def __init__(self, message: str, *, source: str = "scene", line: int | None = None) -> None:
        where = f"{source} line {line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line
        self.problem = message


# ---------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True)
class Zone:
    name: str
    points: tuple[Point, ...]  # normalised image coordinates, >= 3, simple polygon
    line: int | None = None
    area_m2: float | None = None  # on the ground, when the scene is calibrated

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.points, dtype=float)


@dataclass(frozen=True)
class CountLine:
    """A counting line from ``a`` to ``b``. Crossing it towards ``in_direction`` (an image
    direction: up, down, left, right) is "in", the other way "out". A foot point must move
    more than ``hysteresis`` (image heights) past the line for its side to change."""

    name: str
    a: Point
    b: Point
    in_direction: str
    in_sign: int  # sign of cross(b - a, p - a) for p on the "in" side
    hysteresis: float = 0.0
    line: int | None = None


@dataclass(frozen=True)
class Calibration:
    """Four image points (normalised) and where they lie on the ground plane (metres)."""

    image: tuple[Point, ...]
    ground: tuple[Point, ...]
    matrix: tuple[tuple[float, float, float], ...]
    w_sign: float  # the sign of w for points on the visible ground
    line: int | None = None

    @property
    def h(self) -> np.ndarray:
        return np.asarray(self.matrix, dtype=float)

    def to_ground(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground positions (metres) of normalised image points, and which are valid (on
        the ground side of the horizon)."""
        mapped, w = geometry.project(self.h, points)
        ok: np.ndarray = (w * self.w_sign > 0) & np.isfinite(mapped).all(axis=1)
        return mapped, ok


@dataclass(frozen=True)
class Window:
    """Days (0 = Monday) and minutes of the day [start, end); end <= start runs past
    midnight into the next day."""

    days: frozenset[int]
    start: int
    end: int

    def contains(self, weekday: int, minute: float) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        return (weekday in self.days and minute >= self.start) or (
            (weekday - 1) % 7 in self.days and minute < self.end
        )


@dataclass(frozen=True)
class Schedule:
    name: str
    timezone: str
    windows: tuple[Window, ...]
    line: int | None = None

    def active(self, when: datetime) -> bool:
        """Whether ``when`` (timezone-aware) falls in one of the windows, in local time."""
        if when.tzinfo is None:
            raise ValueError("schedules need a timezone-aware time")
        local = when.astimezone(ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute + local.second / 60.0
        return any(w.contains(local.weekday(), minute) for w in self.windows)


@dataclass(frozen=True, kw_only=True)
class RuleSpec:
    """What every rule has; the subclasses add their parameters."""

    type: ClassVar[str]
    event_type: ClassVar[str]
    name: str
    severity: str
    cooldown: float
    schedule: str | None = None
    line_no: int | None = None


@dataclass(frozen=True, kw_only=True)
class IntrusionRule(RuleSpec):
    type: ClassVar[str] = "intrusion"
    event_type: ClassVar[str] = "intrusion"
    zone: str
    line: str | None = None
    direction: str = "in"
    min_inside: float = 0.0


@dataclass(frozen=True, kw_only=True)
class LoiteringRule(RuleSpec):
    type: ClassVar[str] = "loitering"
    event_type: ClassVar[str] = "loitering"
    zone: str
    dwell: float
    grace: float = 2.0


@dataclass(frozen=True, kw_only=True)
class CrowdingRule(RuleSpec):
    type: ClassVar[str] = "crowding"
    event_type: ClassVar[str] = "crowding"
    zone: str
    max_count: int | None = None
    max_density: float | None = None
    sustain: float = 2.0


@dataclass(frozen=True, kw_only=True)
class RunningRule(RuleSpec):
    type: ClassVar[str] = "running"
    event_type: ClassVar[str] = "running"
    max_speed: float
    sustain: float = 1.0
    window: float = 0.5
    zone: str | None = None


@dataclass(frozen=True, kw_only=True)
class FallRule(RuleSpec):
    type: ClassVar[str] = "fall"
    event_type: ClassVar[str] = "fall"
    torso_angle: float = 60.0
    drop: float = 0.3
    lying_aspect: float = 1.0
    fall_seconds: float = 1.0
    stay_down: float = 2.0
    zone: str | None = None


@dataclass(frozen=True, kw_only=True)
class LineCountRule(RuleSpec):
    type: ClassVar[str] = "line_count"
    event_type: ClassVar[str] = "line_cross"
    line: str
    direction: str = "both"


RULE_CLASSES: dict[str, type[RuleSpec]] = {
    c.type: c
    for c in (IntrusionRule, LoiteringRule, CrowdingRule, RunningRule, FallRule, LineCountRule)
}
RULE_TYPES = tuple(RULE_CLASSES)


@dataclass(frozen=True)
class Scene:
    camera: str
    zones: Mapping[str, Zone] = field(default_factory=dict)
    lines: Mapping[str, CountLine] = field(default_factory=dict)
    calibration: Calibration | None = None
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    rules: tuple[RuleSpec, ...] = ()
    source: str = "scene"

    @property
    def speed_unit(self) -> str:
        """m/s on a calibrated ground plane, otherwise image heights per second."""
        return "m/s" if self.calibration is not None else "image heights/s"


# ---------------------------------------------------------------------------------------------
# where each key is in the source


def _split_key(key: str) -> tuple[str, ...]:
    """``a."b.c".d`` -> ("a", "b.c", "d")."""
    parts: list[str] = []
    buf: list[str] = []
    quote: str | None = None
    for ch in key.strip():
        if quote:
            if ch == quote:
                quote = None
            else:
                buf.append(ch)
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf).strip())
    return tuple(parts)


class _Locator:
    """Line numbers (1-based) of table headers, keys, array elements and inline-table keys
    of a TOML text that ``tomllib`` has already accepted."""

    def __init__(self, text: str) -> None:
        self.lines: dict[KeyPath, int] = {}
        self._text = text
        self._pos = 0
        self._lineno = 1
        self._scan()

    def line(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest located parent."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None

    # -- scanning

    def _peek(self, n: int = 1) -> str:
        return self._text[self._pos : self._pos + n]

    def _advance(self, n: int = 1) -> None:
        chunk = self._text[self._pos : self._pos + n]
        self._lineno += chunk.count("\n")
        self._pos += n

    def _skip_space(self, newlines: bool) -> None:
        while self._pos < len(self._text):
            ch = self._peek()
            if ch == "#":
                while self._pos < len(self._text) and self._peek() != "\n":
                    self._advance()
            elif ch in " \t\r" or (newlines and ch == "\n"):
                self._advance()
            else:
                return

    def _read_until(self, stops: str) -> str:
        out: list[str] = []
        while self._pos < len(self._text) and self._peek() not in stops:
            ch = self._peek()
            if ch in "\"'":
                out.append(self._read_string())
            else:
                out.append(ch)
                self._advance()
        return "".join(out)

    def _read_string(self) -> str:
        q = self._peek()
        if self._peek(3) == q * 3:
            self._advance(3)
            end = self._text.find(q * 3, self._pos)
            end = len(self._text) if end < 0 else end
            while self._text[end + 3 : end + 4] == q:  # """ab"""" closes after the last quote
                end += 1
            self._advance(end - self._pos + 3)
            return q * 3
        start = self._pos
        self._advance()
        while self._pos < len(self._text) and self._peek() != q:
            if q == '"' and self._peek() == "\\":
                self._advance()
            self._advance()
        self._advance()
        return self._text[start : self._pos]

    def _scan(self) -> None:
        table: KeyPath = ()
        counts: dict[KeyPath, int] = {}
        while True:
            self._skip_space(newlines=True)
            if self._pos >= len(self._text):
                return
            line = self._lineno
            if self._peek(2) == "[[":
                self._advance(2)
                path = _split_key(self._read_until("]"))
                self._advance(2)
                n = counts.get(path, -1) + 1
                counts[path] = n
                table = (*path, n)
                self.lines.setdefault(path, line)
                self.lines[table] = line
            elif self._peek() == "[":
                self._advance()
                table = _split_key(self._read_until("]"))
                self._advance()
                self.lines.setdefault(table, line)
            else:
                key = (*table, *_split_key(self._read_until("=\n")))
                self._advance()  # "="
                self.lines[key] = line
                self._skip_space(newlines=False)
                self._value(key)

    def _value(self, path: KeyPath) -> None:
        ch = self._peek()
        if ch in "\"'":
            self._read_string()
        elif ch == "[":
            self._advance()
            index = 0
            while True:
                self._skip_space(newlines=True)
                if self._peek() == "]" or self._pos >= len(self._text):
                    self._advance()
                    return
                self.lines[(*path, index)] = self._lineno
                self._value((*path, index))
                self._skip_space(newlines=True)
                if self._peek() == ",":
                    self._advance()
                    index += 1
        elif ch == "{":
            self._advance()
            while True:
                self._skip_space(newlines=False)
                if self._peek() == "}" or self._pos >= len(self._text):
                    self._advance()
                    return
                if self._peek() == ",":
                    self._advance()
                    continue
                line = self._lineno
                key = (*path, *_split_key(self._read_until("=")))
                self._advance()
                self.lines[key] = line
                self._skip_space(newlines=False)
                self._value(key)
        else:
            while self._pos < len(self._text) and self._peek() not in ",]}\n#":
                self._advance()


# ---------------------------------------------------------------------------------------------
# checking values


class _Checker:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.where = _Locator(text)

    def error(self, path: KeyPath, message: str) -> SceneError:
        return SceneError(message, source=self.source, line=self.where.line(path))

    def line(self, path: KeyPath) -> int | None:
        return self.where.line(path)

    def table(self, value: object, path: KeyPath, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"{what} must be a table")
        return value

    def only(
        self, table: Mapping[str, Any], known: tuple[str, ...], path: KeyPath, what: str
    ) -> None:
        for key in table:
            if key not in known:
                raise self.error(
                    (*path, key),
                    f"unknown key {key!r} in {what} (known: {', '.join(known)})",
                )

    def text(self, value: object, path: KeyPath, what: str) -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise self.error(path, f"{what} must be a text of 1-200 characters")
        return value

    def number(self, value: object, path: KeyPath, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(path, f"{what} must be a number, not {value!r}")
        v = float(value)
        if not math.isfinite(v):
            raise self.error(path, f"{what} must be finite, not {value!r}")
        return v

    def point(self, value: object, path: KeyPath, what: str, unit: bool) -> Point:
        if not isinstance(value, list) or len(value) != 2:
            raise self.error(path, f"{what} must be a pair [x, y], not {value!r}")
        x = self.number(value[0], path, f"{what} x")
        y = self.number(value[1], path, f"{what} y")
        if unit and not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise self.error(
                path,
                f"{what} ({x:g}, {y:g}) is outside the frame: image coordinates are "
                "normalised to [0, 1] (x from the left, y from the top)",
            )
        return (x, y)

    def points(self, value: object, path: KeyPath, what: str, unit: bool = True) -> list[Point]:
        if not isinstance(value, list):
            raise self.error(path, f"{what} must be a list of [x, y] pairs")
        return [
            self.point(p, (*path, i), f"{what} point {i + 1}", unit) for i, p in enumerate(value)
        ]


# ---------------------------------------------------------------------------------------------
# sections


def _zone(c: _Checker, name: str, value: object) -> tuple[str, list[Point], int | None]:
    path: KeyPath = ("zones", name)
    t = c.table(value, path, f"zone {name!r}")
    c.only(t, ("points",), path, f"zone {name!r}")
    if "points" not in t:
        raise c.error(path, f"zone {name!r} needs points = [[x, y], ...]")
    pts = c.points(t["points"], (*path, "points"), f"zone {name!r}")
    if len(pts) < 3:
        raise c.error((*path, "points"), f"zone {name!r} needs at least 3 points")
    for i in range(len(pts)):
        if pts[i] == pts[(i + 1) % len(pts)]:
            raise c.error(
                (*path, "points", i),
                f"zone {name!r}: points {i + 1} and {(i + 1) % len(pts) + 1} are the same",
            )
    arr = np.asarray(pts)
    crossing = geometry.self_intersection(arr)
    if crossing is not None:
        i, j = crossing
        n = len(pts)
        raise c.error(
            (*path, "points", j),
            f"zone {name!r} is self-intersecting: edge {i + 1}-{(i + 1) % n + 1} crosses "
            f"edge {j + 1}-{(j + 1) % n + 1}",
        )
    if abs(geometry.polygon_area(arr)) < 1e-6:
        raise c.error((*path, "points"), f"zone {name!r} has no area (its points are on a line)")
    return name, pts, c.line(path)


def _count_line(c: _Checker, name: str, value: object) -> CountLine:
    path: KeyPath = ("lines", name)
    t = c.table(value, path, f"line {name!r}")
    c.only(t, ("points", "in", "hysteresis"), path, f"line {name!r}")
    if "points" not in t or "in" not in t:
        raise c.error(
            path, f'line {name!r} needs points = [[x, y], [x, y]] and in = "up|down|left|right"'
        )
    pts = c.points(t["points"], (*path, "points"), f"line {name!r}")
    if len(pts) != 2:
        raise c.error((*path, "points"), f"line {name!r} needs exactly 2 points, not {len(pts)}")
    a, b = pts
    if a == b:
        raise c.error((*path, "points"), f"line {name!r} has two equal points")
    directions = {"up": (0.0, -1.0), "down": (0.0, 1.0), "left": (-1.0, 0.0), "right": (1.0, 0.0)}
    way = t["in"]
    if way not in directions:
        raise c.error(
            (*path, "in"), f"line {name!r}: in must be up, down, left or right, not {way!r}"
        )
    d = directions[way]
    seg = (b[0] - a[0], b[1] - a[1])
    side = seg[0] * d[1] - seg[1] * d[0]  # cross(b - a, d)
    sin_angle = abs(side) / math.hypot(*seg)
    if sin_angle < math.sin(math.radians(_MIN_CROSSING_DEG)):
        raise c.error(
            (*path, "in"),
            f"line {name!r} runs {way}: crossing it {way} is ambiguous; name the direction "
            "that crosses it",
        )
    hyst = 0.0
    if "hysteresis" in t:
        hyst = c.number(t["hysteresis"], (*path, "hysteresis"), f"line {name!r} hysteresis")
        if not 0.0 <= hyst < 0.5:
            raise c.error(
                (*path, "hysteresis"),
                f"line {name!r}: hysteresis must be in [0, 0.5) image heights, not {hyst:g}",
            )
    return CountLine(name, a, b, way, 1 if side > 0 else -1, hyst, c.line(path))


def _calibration(c: _Checker, value: object) -> Calibration:
    path: KeyPath = ("calibration",)
    t = c.table(value, path, "calibration")
    c.only(t, ("image", "ground"), path, "calibration")
    if "image" not in t or "ground" not in t:
        raise c.error(
            path,
            "calibration needs image = four [x, y] (normalised) and ground = their four "
            "[x, y] positions in metres",
        )
    img = c.points(t["image"], (*path, "image"), "calibration image")
    gnd = c.points(t["ground"], (*path, "ground"), "calibration ground", unit=False)
    for what, pts in (("image", img), ("ground", gnd)):
        if len(pts) != 4:
            raise c.error((*path, what), f"calibration needs 4 {what} points, not {len(pts)}")
    for what, pts in (("image", img), ("ground", gnd)):
        arr = np.asarray(pts)
        scale = max(float(np.ptp(arr[:, 0])), float(np.ptp(arr[:, 1])), 1e-12)
        for i, j, k in ((0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)):
            if geometry.triangle_area(arr[i], arr[j], arr[k]) < 1e-3 * scale**2:
                raise c.error(
                    (*path, what),
                    f"calibration is not invertible: {what} points {i + 1}, {j + 1} and "
                    f"{k + 1} are (nearly) on one line",
                )
    try:
        h = geometry.homography(np.asarray(img), np.asarray(gnd))
    except (ValueError, np.linalg.LinAlgError):
        raise c.error(path, "calibration is not invertible (degenerate points)") from None
    if not np.isfinite(h).all() or abs(float(np.linalg.det(h))) < 1e-12:
        raise c.error(path, "calibration is not invertible (degenerate points)")
    _, w = geometry.project(h, np.asarray(img))
    if not ((w > 0).all() or (w < 0).all()):
        raise c.error(
            (*path, "ground"),
            "calibration folds the ground over: the image and ground points are not in the "
            "same order around the quadrilateral",
        )
    matrix = tuple((float(r[0]), float(r[1]), float(r[2])) for r in h)
    return Calibration(tuple(img), tuple(gnd), matrix, float(np.sign(w[0])), c.line(path))


def _minutes(c: _Checker, value: object, path: KeyPath, what: str) -> int:
    if not isinstance(value, str) or len(value) != 5 or value[2] != ":":
        raise c.error(path, f'{what} must be "HH:MM", not {value!r}')
    try:
        hh, mm = int(value[:2]), int(value[3:])
    except ValueError:
        raise c.error(path, f'{what} must be "HH:MM", not {value!r}') from None
    if not (0 <= mm < 60 and (0 <= hh < 24 or (hh == 24 and mm == 0))):
        raise c.error(path, f"{what} {value!r} is not a time of day (00:00 to 24:00)")
    return hh * 60 + mm


def _days(c: _Checker, value: object, path: KeyPath) -> frozenset[int]:
    if value == "*":
        return frozenset(range(7))
    if not isinstance(value, list) or not value:
        raise c.error(path, 'days must be a list such as ["mon-fri", "sun"] or "*"')
    out: set[int] = set()
    for item in value:
        parts = item.split("-") if isinstance(item, str) else [item]
        if not all(isinstance(p, str) and p.lower() in DAYS for p in parts) or len(parts) > 2:
            raise c.error(path, f"unknown day {item!r}: use {', '.join(DAYS)} or ranges (mon-fri)")
        lo, hi = DAYS.index(parts[0].lower()), DAYS.index(parts[-1].lower())
        out.update(range(lo, hi + 1) if lo <= hi else [*range(lo, 7), *range(0, hi + 1)])
    return frozenset(out)


def _schedule(c: _Checker, name: str, value: object) -> Schedule:
    path: KeyPath = ("schedules", name)
    t = c.table(value, path, f"schedule {name!r}")
    c.only(t, ("timezone", "windows"), path, f"schedule {name!r}")
    if "timezone" not in t or "windows" not in t:
        raise c.error(path, f"schedule {name!r} needs timezone and windows")
    tz = c.text(t["timezone"], (*path, "timezone"), "timezone")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise c.error(
            (*path, "timezone"), f"unknown timezone {tz!r} (e.g. Europe/Berlin)"
        ) from None
    wins = t["windows"]
    if not isinstance(wins, list) or not wins:
        raise c.error((*path, "windows"), f"schedule {name!r} needs at least one window")
    out = []
    for i, w in enumerate(wins):
        wp: KeyPath = (*path, "windows", i)
        wt = c.table(w, wp, "a schedule window")
        c.only(wt, ("days", "from", "to"), wp, "a schedule window")
        for k in ("days", "from", "to"):
            if k not in wt:
                raise c.error(wp, f'a schedule window needs days, from and to ("{k}" is missing)')
        start = _minutes(c, wt["from"], (*wp, "from"), "from")
        end = _minutes(c, wt["to"], (*wp, "to"), "to")
        if start == end:
            raise c.error(
                (*wp, "to"),
                'a window from and to the same time is empty; use from = "00:00", to = "24:00" '
                "for a whole day",
            )
        if start == 24 * 60:
            raise c.error((*wp, "from"), 'a window cannot start at "24:00"')
        out.append(Window(_days(c, wt["days"], (*wp, "days")), start, end % (24 * 60) or 24 * 60))
    return Schedule(name, tz, tuple(out), c.line(path))


# Rule parameters: name -> (kind, default). A default of None means required (unless noted).
_COMMON = ("type", "name", "severity", "cooldown", "schedule")
_PARAMS: dict[str, dict[str, tuple[str, object]]] = {
    "intrusion": {
        "zone": ("zone", None),
        "line": ("line?", None),
        "direction": ("in|out", "in"),
        "min_inside": ("seconds", 0.0),
    },
    "loitering": {"zone": ("zone", None), "dwell": ("positive", None), "grace": ("seconds", 2.0)},
    "crowding": {
        "zone": ("zone", None),
        "max_count": ("count?", None),
        "max_density": ("positive?", None),
        "sustain": ("seconds", 2.0),
    },
    "running": {
        "max_speed": ("positive", None),
        "sustain": ("seconds", 1.0),
        "window": ("positive", 0.5),
        "zone": ("zone?", None),
    },
    "fall": {
        "torso_angle": ("angle", 60.0),
        "drop": ("fraction", 0.3),
        "lying_aspect": ("positive", 1.0),
        "fall_seconds": ("positive", 1.0),
        "stay_down": ("seconds", 2.0),
        "zone": ("zone?", None),
    },
    "line_count": {"line": ("line", None), "direction": ("in|out|both", "both")},
}
_DEFAULTS: dict[str, tuple[str, float]] = {  # severity, cooldown (seconds)
    "intrusion": ("critical", 60.0),
    "loitering": ("warning", 60.0),
    "crowding": ("warning", 60.0),
    "running": ("warning", 60.0),
    "fall": ("critical", 60.0),
    "line_count": ("info", 0.0),
}


def _param(
    c: _Checker,
    kind: str,
    value: object,
    path: KeyPath,
    what: str,
    refs: Mapping[str, Mapping[str, object]],
) -> object:
    base = kind.rstrip("?")
    if base in ("zone", "line"):
        name = c.text(value, path, what)
        known = refs["zones" if base == "zone" else "lines"]
        if name not in known:
            raise c.error(
                path,
                f"unknown {base} {name!r} (defined: {', '.join(sorted(known)) or 'none'})",
            )
        return name
    if "|" in base:
        choices = base.split("|")
        if value not in choices:
            raise c.error(path, f"{what} must be {' or '.join(choices)}, not {value!r}")
        return value
    if base == "count":
        if isinstance(value, bool) or not isinstance(value, int):
            raise c.error(path, f"{what} must be a whole number, not {value!r}")
        if value < 1:
            raise c.error(path, f"{what} must be at least 1, not {value}")
        return value
    v = c.number(value, path, what)
    if base == "seconds" and v < 0:
        raise c.error(path, f"{what} must be >= 0 seconds, not {v:g}")
    if base == "positive" and v <= 0:
        raise c.error(path, f"{what} must be > 0, not {v:g}")
    if base == "angle" and not 0 < v <= 90:
        raise c.error(path, f"{what} must be in (0, 90] degrees, not {v:g}")
    if base == "fraction" and not 0 < v < 1:
        raise c.error(path, f"{what} must be in (0, 1), not {v:g}")
    return v


def _rule(
    c: _Checker,
    i: int,
    value: object,
    refs: Mapping[str, Mapping[str, object]],
    calibrated: bool,
) -> RuleSpec:
    path: KeyPath = ("rules", i)
    t = c.table(value, path, f"rule {i + 1}")
    kind = t.get("type")
    if kind is None:
        raise c.error(path, f"rule {i + 1} needs a type ({', '.join(RULE_TYPES)})")
    if kind not in RULE_CLASSES:
        raise c.error((*path, "type"), f"unknown rule {kind!r}: rules are {', '.join(RULE_TYPES)}")
    params = _PARAMS[kind]
    c.only(t, (*_COMMON, *params), path, f"a {kind} rule")
    severity, cooldown = _DEFAULTS[kind]
    values: dict[str, Any] = {}
    for key, (pkind, default) in params.items():
        if key in t:
            values[key] = _param(c, pkind, t[key], (*path, key), key, refs)
        elif default is None and not pkind.endswith("?"):
            raise c.error(path, f"a {kind} rule needs {key}")
        elif default is not None:
            values[key] = default
    if "severity" in t:
        severity = t["severity"]
        if severity not in SEVERITIES:
            raise c.error(
                (*path, "severity"),
                f"severity must be {', '.join(SEVERITIES)}, not {severity!r}",
            )
    if "cooldown" in t:
        cooldown = c.number(t["cooldown"], (*path, "cooldown"), "cooldown")
        if cooldown < 0:
            raise c.error((*path, "cooldown"), f"cooldown must be >= 0 seconds, not {cooldown:g}")
    schedule = None
    if "schedule" in t:
        schedule = c.text(t["schedule"], (*path, "schedule"), "schedule")
        if schedule not in refs["schedules"]:
            known = ", ".join(sorted(refs["schedules"])) or "none"
            raise c.error((*path, "schedule"), f"unknown schedule {schedule!r} (defined: {known})")
    if kind == "crowding":
        if ("max_count" in values) == ("max_density" in values):
            raise c.error(path, "a crowding rule needs one of max_count or max_density")
        if "max_density" in values and not calibrated:
            raise c.error(
                (*path, "max_density"),
                "max_density (people per m²) needs a [calibration] of the ground plane",
            )
    if kind == "intrusion" and "direction" in t and "line" not in t:
        raise c.error((*path, "direction"), "direction needs a line to cross")
    name = t.get("name")
    if name is None:
        target = values.get("zone") or values.get("line")
        name = f"{kind}:{target}" if target else kind
    name = c.text(name, (*path, "name"), "rule name")
    return RULE_CLASSES[kind](
        name=name,
        severity=severity,
        cooldown=cooldown,
        schedule=schedule,
        line_no=c.line(path),
        **values,
    )


# ---------------------------------------------------------------------------------------------
# loading


def toml_error_where(e: tomllib.TOMLDecodeError, text: str) -> tuple[str, int]:
    """The problem and its 1-based line from ``tomllib``'s error, which before Python 3.14
    carries the place only inside its message, and says "at end of document" for a problem
    found once the whole text was read (a repeated key on the last line, say): that is the
    last line holding anything."""
    msg = str(e)
    line = getattr(e, "lineno", None)
    m = re.search(r"\s*\(at line (\d+), column \d+\)", msg)
    if m:
        line = line or int(m.group(1))
        msg = msg[: m.start()] + msg[m.end() :]
    elif "(at end of document)" in msg:
        msg = msg.replace(" (at end of document)", "")
        line = line or len(text.rstrip().splitlines()) or 1
    return msg, int(line) if line else 1


def parse_scene(text: str, source: str = "scene") -> Scene:
    """Read and check a scene from TOML ``text``; raise :class:`SceneError` naming the line
    (``source`` is how messages name the file)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg, at = toml_error_where(e, text)
        raise SceneError(f"not valid TOML: {msg}", source=source, line=at) from None
    c = _Checker(text, source)
    c.only(raw, ("camera", "zones", "lines", "calibration", "schedules", "rules"), (), "a scene")
    if "camera" not in raw:
        raise SceneError('a scene needs camera = "name"', source=source, line=1)
    camera = c.text(raw["camera"], ("camera",), "camera")

    zones_raw = c.table(raw.get("zones", {}), ("zones",), "zones")
    lines_raw = c.table(raw.get("lines", {}), ("lines",), "lines")
    sched_raw = c.table(raw.get("schedules", {}), ("schedules",), "schedules")
    shapes = [_zone(c, n, v) for n, v in zones_raw.items()]
    lines = {n: _count_line(c, n, v) for n, v in lines_raw.items()}
    schedules = {n: _schedule(c, n, v) for n, v in sched_raw.items()}
    calibration = _calibration(c, raw["calibration"]) if "calibration" in raw else None

    zones: dict[str, Zone] = {}
    for name, pts, line in shapes:
        area = None
        if calibration is not None:
            ground, ok = calibration.to_ground(np.asarray(pts))
            if ok.all():
                area = abs(geometry.polygon_area(ground))
        zones[name] = Zone(name, tuple(pts), line, area)

    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, list):
        raise c.error(("rules",), "rules must be an array of tables: [[rules]]")
    refs: dict[str, Mapping[str, object]] = {
        "zones": zones,
        "lines": lines,
        "schedules": schedules,
    }
    rules = [_rule(c, i, r, refs, calibration is not None) for i, r in enumerate(rules_raw)]
    seen: dict[str, int] = {}
    for i, r in enumerate(rules):
        if r.name in seen:
            raise c.error(
                ("rules", i, "name"),
                f"rule name {r.name!r} is used twice (rules {seen[r.name] + 1} and {i + 1}); "
                "give one a name",
            )
        seen[r.name] = i
        if (
            isinstance(r, CrowdingRule)
            and r.max_density is not None
            and zones[r.zone].area_m2 is None
        ):
            raise c.error(
                ("rules", i, "zone"),
                f"zone {r.zone!r} reaches beyond the calibrated ground (past the "
                "horizon): its area in m² is undefined",
            )
    return Scene(camera, zones, lines, calibration, schedules, tuple(rules), source)


def load_scene(path: str | Path) -> Scene:
    """Read and check the scene file at ``path`` (TOML); :class:`SceneError` on bad input."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SceneError(f"cannot read the scene file: {e}", source=str(p)) from None
    return parse_scene(text, source=str(p))
