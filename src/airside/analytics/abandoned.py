"""Abandoned objects: something new that stays, unattended, longer than a limit.

Found by background modelling with two backgrounds (Porikli's dual-background idea):

- the *fast* background follows the scene within about a second (time constant
  ``fast_tau_s``): anything that stops moving is part of it after a few seconds;
- the *slow* background learns the empty scene: where nothing is in front of it, it
  follows lighting drift (``slow_tau_s``); under foreground it hardly moves
  (``absorb_tau_s``, by default 20 x the limit), so a bag left on the floor stays
  foreground against it for much longer than the limit.

A pixel that differs from the slow background but no longer from the fast one is
*static*: something arrived and stopped. Pixels static for ``static_s`` seconds, outside
every person's box (a person standing still is not an object), joined into a blob at
least ``min_area`` of the frame, make a static object. Before it is kept, its outline is
checked: a real object adds edges to the scene; a *ghost* (something that was in the
background when the model started, or an object taken away) shows edges in the slow
background that the frame no longer has, and is learnt into the background instead.

Each frame's overall brightness is matched to each background before comparing (a median
ratio), so dimming lights or flicker do not light up the frame; when most of the frame
changes at once anyway (a camera cut), the fast background restarts from the frame and
nothing accumulates for that frame.

An object is *attended* while a person's box is within ``attend_radius`` of it (in
heights of that person's box: perspective-free). It is *unattended* from the last time it
was attended, or from when it appeared. When it has been unattended for ``unattended_s``
seconds, one :class:`AbandonedEvent` fires, naming the track of the person who was
nearest when it appeared (within ``owner_radius`` person heights; None when no person
was tracked then). An object whose place shows the background again for ``gone_s``
(carried away) is dropped without an event; one that is only hidden (someone in front
of it) is kept.

Coordinates in and out are frame pixels; internally frames are scaled to ``work_side``.
Times are stream seconds (``t`` of each frame): the rates do not depend on frame rate.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
PersonBox = tuple[int, Box]  # (track id, box)


@dataclass(frozen=True)
class AbandonedConfig:
    """Knobs of :class:`AbandonedObjectDetector` (times in seconds, areas as fractions of
    the frame, radii in heights of the person's box)."""

    unattended_s: float = 60.0
    min_area: float = 0.0005
    max_area: float = 0.15
    attend_radius: float = 1.0
    owner_radius: float = 3.0
    threshold: float = 30.0  # colour difference (0..255, largest channel) for foreground
    fast_tau_s: float = 1.0
    slow_tau_s: float = 30.0
    absorb_tau_s: float | None = None  # None: 20 x unattended_s, at least 600 s
    static_s: float = 2.0
    gone_s: float = 1.5
    history_s: float = 20.0
    person_margin: float = 0.1  # each side of a person's box, as a fraction of its size
    work_side: int = 320
    scene_change: float = 0.5  # fraction of the frame changing at once

    def __post_init__(self) -> None:
        checks = {
            "unattended_s": self.unattended_s > 0,
            "min_area": 0 <= self.min_area < self.max_area <= 1,
            "attend_radius": self.attend_radius >= 0,
            "owner_radius": self.owner_radius >= 0,
            "threshold": 0 < self.threshold < 255,
            "fast_tau_s": 0 < self.fast_tau_s < self.slow_tau_s,
            "absorb_tau_s": self.absorb_tau_s is None or self.absorb_tau_s > 0,
            "static_s": self.static_s >= 0,
            "gone_s": self.gone_s >= 0,
            "work_side": self.work_side >= 32,
            "scene_change": 0 < self.scene_change <= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid abandoned-object settings: {', '.join(bad)}")

    @property
    def absorb_tau(self) -> float:
        if self.absorb_tau_s is not None:
            return self.absorb_tau_s
        return max(20.0 * self.unattended_s, 600.0)


@dataclass(frozen=True)
class AbandonedEvent:
    """An object left unattended for the limit: ``box`` (frame pixels), when it appeared
    (``first_seen``), when the limit was reached (``at``), and the track of the person
    nearest to it when it appeared (``owner_track``; None when tracking cannot tell)."""

    object_id: int
    box: Box
    first_seen: float
    at: float
    owner_track: int | None
    unattended_since: float


@dataclass
class StaticObject:
    """A static object being watched (``box`` in frame pixels)."""

    id: int
    box: Box
    first_seen: float
    unattended_since: float
    owner_track: int | None
    fired: bool = False
    hidden_since: float | None = None
    mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool), repr=False)


def _gap(a: Box, b: Box) -> float:
    """The distance between two boxes (0 when they touch or overlap)."""
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return math.hypot(dx, dy)


def _channel_max(d: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2])
    return out


def _grow(sl: tuple[slice, slice], by: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
    ys, xs = sl
    return (
        slice(max(0, ys.start - by), min(shape[0], ys.stop + by)),
        slice(max(0, xs.start - by), min(shape[1], xs.stop + by)),
    )


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _grey(rgb: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    return out


def _gain(frame: np.ndarray, model: np.ndarray) -> float:
    """Brightness of ``frame`` over ``model`` (grey): the median ratio where measurable."""
    lit = model > 16
    if lit.sum() < 16:
        return 1.0
    return float(np.clip(np.median(frame[lit] / model[lit]), 0.25, 4.0))


def _edges(grey: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(grey)
    out: np.ndarray = np.hypot(gx, gy)
    return out


class AbandonedObjectDetector:
    """Feed it every frame (or every n-th, with its time) of one camera.

    ``update(frame, t, people)`` takes an RGB uint8 frame, its stream time in seconds
    and the tracked people in it as (track id, box) pairs, and returns the events that
    fired on this frame.
    """

    def __init__(self, config: AbandonedConfig | None = None) -> None:
        self.config = config or AbandonedConfig()
        self.reset()

    def reset(self) -> None:
        """Forget the background and every object (e.g. the camera moved)."""
        self._objects: list[StaticObject] = []
        self._history: deque[tuple[float, list[PersonBox]]] = deque()
        self._next_id = 1
        self._size: tuple[int, int] | None = None  # frame (w, h)
        self._scale = 1.0
        self._fast: np.ndarray | None = None
        self._slow: np.ndarray | None = None
        self._static_time: np.ndarray | None = None
        self._onset: np.ndarray | None = None
        self._t: float | None = None

    @property
    def objects(self) -> list[StaticObject]:
        """The static objects currently watched."""
        return list(self._objects)

    # ------------------------------------------------------------------ helpers

    def _small(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        scale = min(1.0, self.config.work_side / max(h, w))
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            frame = np.asarray(
                Image.fromarray(np.ascontiguousarray(frame)).resize(size, Image.Resampling.BOX)
            )
        self._scale = scale
        return frame.astype(np.float32)

    def _to_work(self, box: Box) -> tuple[int, int, int, int]:
        s = self._scale
        assert self._fast is not None
        hh, ww = self._fast.shape[:2]
        return (
            max(0, math.floor(box[0] * s)),
            max(0, math.floor(box[1] * s)),
            min(ww, math.ceil(box[2] * s)),
            min(hh, math.ceil(box[3] * s)),
        )

    def _to_frame(self, sl: tuple[slice, slice]) -> Box:
        ys, xs = sl
        s = self._scale
        return (xs.start / s, ys.start / s, xs.stop / s, ys.stop / s)

    def _people_mask(self, people: Sequence[PersonBox], shape: tuple[int, int]) -> np.ndarray:
        mask = np.zeros(shape, dtype=bool)
        m = self.config.person_margin
        for _, b in people:
            bw, bh = b[2] - b[0], b[3] - b[1]
            x0, y0, x1, y1 = self._to_work((b[0] - m * bw, b[1] - m * bh, b[2] + m * bw, b[3]))
            mask[y0:y1, x0:x1] = True
        return mask

    def _attended(self, box: Box, people: Sequence[PersonBox]) -> bool:
        r = self.config.attend_radius
        return any(_gap(box, b) <= r * max(1.0, b[3] - b[1]) for _, b in people)

    def _owner(self, box: Box, first_seen: float) -> int | None:
        """The track nearest to ``box`` in the people seen closest to ``first_seen``."""
        if not self._history:
            return None
        _, people = min(self._history, key=lambda e: abs(e[0] - first_seen))
        best: tuple[float, int] | None = None
        for track, b in people:
            d = _gap(box, b) / max(1.0, b[3] - b[1])
            if d <= self.config.owner_radius and (best is None or d < best[0]):
                best = (d, track)
        return None if best is None else best[1]

    def _last_attended(self, box: Box, since: float) -> float | None:
        """The last time since ``since`` someone in the history attended ``box``."""
        times = [t for t, people in self._history if t >= since and self._attended(box, people)]
        return max(times) if times else None

    def _is_ghost(self, blob: np.ndarray, frame_grey: np.ndarray, slow_grey: np.ndarray) -> bool:
        """Whether the blob's outline has fewer edges in the frame than in the background:
        something that left the scene rather than arrived."""
        ring = ndimage.binary_dilation(blob, iterations=2) & ~ndimage.binary_erosion(
            blob, iterations=2
        )
        if not ring.any():
            return False
        now = float(_edges(frame_grey)[ring].mean())
        before = float(_edges(slow_grey)[ring].mean())
        return now < before

    # ------------------------------------------------------------------ update

    def update(
        self, frame: np.ndarray, t: float, people: Sequence[PersonBox] = ()
    ) -> list[AbandonedEvent]:
        """Process one frame at stream time ``t`` (seconds) with the people tracked in it."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"expected an RGB uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}"
            )
        cfg = self.config
        h, w = frame.shape[:2]
        people = list(people)
        if self._size != (w, h):
            if self._size is not None:
                log.info("frame size changed to %dx%d: background model restarts", w, h)
                self.reset()
            self._size = (w, h)
        small = self._small(frame)
        if self._fast is None or self._slow is None or self._t is None:
            self._fast = small.copy()
            self._slow = small.copy()
            self._static_time = np.zeros(small.shape[:2], dtype=np.float32)
            self._onset = np.full(small.shape[:2], np.nan, dtype=np.float64)
            self._t = t
            self._remember(t, people)
            return []
        dt = float(np.clip(t - self._t, 0.0, 5.0))
        self._t = t
        self._remember(t, people)
        assert self._static_time is not None and self._onset is not None

        grey = _grey(small)
        sub = (slice(None, None, 4), slice(None, None, 4))  # the gain from 1 pixel in 16
        g_slow = _gain(grey[sub], _grey(self._slow[sub]))
        g_fast = _gain(grey[sub], _grey(self._fast[sub]))
        diff_slow = _channel_max(np.abs(small - self._slow * g_slow))
        diff_fast = _channel_max(np.abs(small - self._fast * g_fast))
        fg_slow = diff_slow > cfg.threshold
        fg_fast = diff_fast > cfg.threshold

        a_fast = 1.0 - math.exp(-dt / cfg.fast_tau_s)
        if fg_fast.mean() > cfg.scene_change:
            self._fast = small.copy()  # a cut or the lights: start the fast model again
            return self._watch(t, people, fg_slow)
        self._fast += a_fast * (small - self._fast)

        opened = np.ones((3, 3), dtype=bool)
        fg_slow = ndimage.binary_opening(fg_slow, structure=opened)
        fg_fast = ndimage.binary_dilation(fg_fast, structure=opened)
        persons = self._people_mask(people, fg_slow.shape)
        static = fg_slow & ~fg_fast & ~persons

        st = self._static_time
        st[~fg_slow] = 0.0
        st[static] += dt
        onset = self._onset
        onset[~fg_slow] = np.nan
        onset[fg_slow & np.isnan(onset)] = t

        a_bg = 1.0 - math.exp(-dt / cfg.slow_tau_s)
        a_fg = 1.0 - math.exp(-dt / cfg.absorb_tau)
        rate = np.where(fg_slow, a_fg, a_bg).astype(np.float32)[..., None]
        self._slow += rate * (small - self._slow)

        ready = st >= cfg.static_s
        # Blobs are (re)considered when some pixel has just become static long enough.
        if (ready & (st - dt < cfg.static_s)).any():
            for obj in self._objects:
                ready &= ~obj.mask
            self._find_new(t, ready, st, grey)
        return self._watch(t, people, fg_slow)

    def _remember(self, t: float, people: list[PersonBox]) -> None:
        self._history.append((t, people))
        while self._history and self._history[0][0] < t - self.config.history_s:
            self._history.popleft()

    def _find_new(
        self, t: float, ready: np.ndarray, static_time: np.ndarray, grey: np.ndarray
    ) -> None:
        """New objects among the ``ready`` pixels (static long enough, not yet claimed)."""
        cfg = self.config
        assert self._slow is not None and self._onset is not None
        candidate = ndimage.binary_closing(ready, structure=np.ones((5, 5), dtype=bool))
        labels, n = ndimage.label(candidate)
        if n == 0:
            return
        area = float(candidate.size)
        for i, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is None:
                continue
            around = _grow(sl, 3, labels.shape)
            blob = np.zeros(labels.shape, dtype=bool)
            blob[sl] = labels[sl] == i
            near = ndimage.binary_dilation(blob[around], iterations=2)
            grown = next((o for o in self._objects if (o.mask[around] & near).any()), None)
            if grown is not None:  # more of an object already watched (its outline, ...)
                grown.mask = grown.mask | blob
                grown.box = _union(grown.box, self._to_frame(sl))
                continue
            size = float(blob[sl].sum())
            if not cfg.min_area * area <= size <= cfg.max_area * area:
                continue
            if self._is_ghost(blob[around], grey[around], _grey(self._slow[around])):
                self._slow[blob] = self._small_frame_values(blob)
                static_time[blob] = 0.0
                self._onset[blob] = np.nan
                log.debug("ghost at %s learnt into the background", sl)
                continue
            box = self._to_frame(sl)
            onsets = self._onset[blob]
            first = float(np.nanmedian(onsets)) if np.isfinite(onsets).any() else t
            last = self._last_attended(box, first)
            obj = StaticObject(
                id=self._next_id,
                box=box,
                first_seen=first,
                unattended_since=first if last is None else last,
                owner_track=self._owner(box, first),
                mask=blob,
            )
            self._next_id += 1
            self._objects.append(obj)
            log.debug("static object %d at %s since %.2f s", obj.id, box, first)

    def _small_frame_values(self, blob: np.ndarray) -> np.ndarray:
        assert self._fast is not None
        out: np.ndarray = self._fast[blob]
        return out

    def _watch(
        self, t: float, people: list[PersonBox], fg_slow: np.ndarray
    ) -> list[AbandonedEvent]:
        cfg = self.config
        events: list[AbandonedEvent] = []
        kept: list[StaticObject] = []
        for obj in self._objects:
            support = float(fg_slow[obj.mask].mean()) if obj.mask.any() else 0.0
            if support < 0.3:  # the background shows where it was
                if obj.hidden_since is None:
                    obj.hidden_since = t
                if t - obj.hidden_since >= cfg.gone_s:
                    log.debug("static object %d gone at %.2f s", obj.id, t)
                    continue
            else:
                obj.hidden_since = None
            if self._attended(obj.box, people):
                obj.unattended_since = t
            elif not obj.fired and t - obj.unattended_since >= cfg.unattended_s:
                obj.fired = True
                events.append(
                    AbandonedEvent(
                        object_id=obj.id,
                        box=obj.box,
                        first_seen=obj.first_seen,
                        at=t,
                        owner_track=obj.owner_track,
                        unattended_since=obj.unattended_since,
                    )
                )
            kept.append(obj)
        self._objects = kept
        return events
