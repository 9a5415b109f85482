"""Generated videos of people-shaped figures and objects, with their ground truth.

For the safety-analytics tests (falls, sitting down, abandoned objects): no footage of
real people is needed, and every frame comes with what is true in it. A :class:`Figure`
is a filled stick figure (head, torso, arms, legs) drawn from 17 keypoints in COCO order
(the layout MoveNet and the fall rule read); it walks along way-points and may fall
(the whole body rotates about its feet, accelerating, until it lies on the ground) or
sit down (the hips lower to knee height, the torso stays upright). A :class:`Prop` is a
box-shaped object (a bag) that appears, stays, or moves along way-points (carried).

:func:`render_scene` returns the frames and, per frame, each visible figure's box, state
and keypoints, and each visible prop's box. Everything is deterministic.

Example::

    scene = render_scene(50, (320, 240), figures=[
        Figure("p", path=[(40, 200), (160, 200)], height=100, action="fall", action_at=25),
    ])
    scene.truth[49]["p"].state   # "down"
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from airside.synthetic.clips import background

Action = Literal["walk", "fall", "sit"]
State = Literal["walking", "standing", "falling", "down", "sitting", "seated"]
Box = tuple[float, float, float, float]
Point = tuple[float, float]

# The standing pose, facing the camera: (x, height above the ground), in body heights.
# COCO "left" is the person's left, which faces the camera on the image's right (+x).
_STANDING = np.array(
    [
        (0.0, 0.925),  # nose
        (0.02, 0.945),  # left eye
        (-0.02, 0.945),  # right eye
        (0.045, 0.935),  # left ear
        (-0.045, 0.935),  # right ear
        (0.11, 0.81),  # left shoulder
        (-0.11, 0.81),  # right shoulder
        (0.14, 0.64),  # left elbow
        (-0.14, 0.64),  # right elbow
        (0.15, 0.49),  # left wrist
        (-0.15, 0.49),  # right wrist
        (0.07, 0.52),  # left hip
        (-0.07, 0.52),  # right hip
        (0.075, 0.28),  # left knee
        (-0.075, 0.28),  # right knee
        (0.075, 0.03),  # left ankle
        (-0.075, 0.03),  # right ankle
    ]
)
# Seated on a low seat (hips at knee height), thighs towards the camera (foreshortened),
# knees a little apart, hands on the thighs.
_SEATED = _STANDING.copy()
_SEATED[:11, 1] -= 0.24  # head, shoulders, arms come down with the hips
_SEATED[7:11, 0] *= 0.8
_SEATED[9:11, 1] = 0.33
_SEATED[11:13] = [(0.08, 0.28), (-0.08, 0.28)]
_SEATED[13:15] = [(0.12, 0.3), (-0.12, 0.3)]
_SEATED[15:17] = [(0.11, 0.03), (-0.11, 0.03)]

HEAD_RADIUS = 0.065  # body heights
LIMB_WIDTH = 0.05
_LIMBS = ((5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16))


def _along(path: Sequence[Point], i: int, start: int, end: int) -> Point:
    """Way-points spread evenly over frames ``start``..``end`` - 1, joined by lines."""
    pts = list(path)
    if len(pts) == 1 or end - start <= 1:
        return pts[0] if i <= start or len(pts) == 1 else pts[-1]
    t = min(max(i - start, 0), end - start - 1) / (end - start - 1) * (len(pts) - 1)
    k = min(int(t), len(pts) - 2)
    f = t - k
    (xa, ya), (xb, yb) = pts[k], pts[k + 1]
    return xa + (xb - xa) * f, ya + (yb - ya) * f


@dataclass(frozen=True)
class Figure:
    """A person-shaped figure.

    ``path``: way-points of the foot point (bottom centre), spread over frames ``start``
    to ``action_at`` (or ``end``); afterwards the figure stays at the last one.
    ``height``: standing height in pixels. ``action``: ``"walk"`` (legs swing while it
    moves), ``"fall"`` (from ``action_at``, the body rotates about the feet towards
    ``direction`` (+1: image right) over ``action_frames`` frames, accelerating, to
    ``fall_angle_deg`` and stays down) or ``"sit"`` (from ``action_at`` the hips lower
    over ``action_frames`` frames and it stays seated).
    """

    id: str
    path: Sequence[Point] = ((80.0, 200.0),)
    height: float = 100.0
    start: int = 0
    end: int | None = None
    action: Action = "walk"
    action_at: int | None = None
    action_frames: int = 8
    direction: int = 1
    fall_angle_deg: float = 88.0
    colour: tuple[int, int, int] = (35, 40, 70)
    skin: tuple[int, int, int] = (205, 160, 130)

    def visible(self, i: int, frames: int) -> bool:
        end = frames if self.end is None else min(self.end, frames)
        return self.start <= i < end

    def _moving_until(self, frames: int) -> int:
        end = frames if self.end is None else min(self.end, frames)
        return self.action_at if self.action_at is not None else end

    def foot(self, i: int, frames: int) -> Point:
        """Where the figure stands at frame ``i``."""
        return _along(self.path, i, self.start, self._moving_until(frames))

    def progress(self, i: int) -> float:
        """How far the action (fall or sit) has gone at frame ``i``: 0 before, 1 done."""
        if self.action == "walk" or self.action_at is None or i < self.action_at:
            return 0.0
        return min(1.0, (i - self.action_at + 1) / max(1, self.action_frames))

    def state(self, i: int, frames: int) -> State:
        p = self.progress(i)
        if self.action == "fall" and p > 0:
            return "down" if p >= 1 else "falling"
        if self.action == "sit" and p > 0:
            return "seated" if p >= 1 else "sitting"
        a, b = self.foot(max(i - 1, self.start), frames), self.foot(i, frames)
        return "walking" if math.dist(a, b) > 1e-6 else "standing"

    def keypoints(self, i: int, frames: int) -> np.ndarray:
        """(17, 3) x, y (image pixels), visibility 1, in COCO order."""
        pose = _STANDING.copy()
        p = self.progress(i)
        if self.action == "sit" and p > 0:
            s = 0.5 - 0.5 * math.cos(math.pi * p)  # eased
            pose = (1 - s) * _STANDING + s * _SEATED
        elif self.state(i, frames) == "walking":
            swing = 0.07 * math.sin(i * 0.9)
            pose[[13, 15], 0] += [swing / 2, swing]
            pose[[14, 16], 0] -= [swing / 2, swing]
            pose[[7, 9], 0] -= [swing / 3, swing / 2]
            pose[[8, 10], 0] += [swing / 3, swing / 2]
        xy = np.stack([pose[:, 0] * self.height, -pose[:, 1] * self.height], axis=1)
        if self.action == "fall" and p > 0:
            angle = math.radians(self.fall_angle_deg) * p * p * self.direction  # accelerating
            c, s = math.cos(angle), math.sin(angle)
            xy = xy @ np.array([[c, s], [-s, c]])  # rotate about the feet (image axes)
        fx, fy = self.foot(i, frames)
        out = np.ones((17, 3), dtype=np.float64)
        out[:, 0] = xy[:, 0] + fx
        out[:, 1] = xy[:, 1] + fy
        return out

    def draw(self, canvas: ImageDraw.ImageDraw, kps: np.ndarray) -> None:
        h = self.height
        width = max(2, round(LIMB_WIDTH * h))
        torso = [tuple(kps[j, :2]) for j in (5, 6, 12, 11)]
        canvas.polygon(torso, fill=self.colour)
        for a, b in _LIMBS:
            canvas.line([tuple(kps[a, :2]), tuple(kps[b, :2])], fill=self.colour, width=width)
        for j in (5, 6, 11, 12, 13, 14):  # round joints
            x, y = kps[j, :2]
            r = width / 2
            canvas.ellipse((x - r, y - r, x + r, y + r), fill=self.colour)
        shoulders = (kps[5, :2] + kps[6, :2]) / 2
        head = kps[0, :2] + (kps[0, :2] - shoulders) * 0.05
        neck_w = max(2, round(0.04 * h))
        canvas.line([tuple(shoulders), tuple(head)], fill=self.skin, width=neck_w)
        r = HEAD_RADIUS * h
        canvas.ellipse((head[0] - r, head[1] - r, head[0] + r, head[1] + r), fill=self.skin)

    def box(self, kps: np.ndarray) -> Box:
        """The figure's extent: its keypoints grown by the head, limb and foot widths."""
        pad = HEAD_RADIUS * self.height
        return (
            float(kps[:, 0].min() - pad),
            float(kps[:, 1].min() - pad),
            float(kps[:, 0].max() + pad),
            float(kps[:, 1].max() + pad / 2),
        )


@dataclass(frozen=True)
class Prop:
    """A box-shaped object: ``size`` (w, h) pixels, centred on ``path`` way-points spread
    over frames ``start``..``end`` (one way-point: it stays put), drawn in ``colour``
    with a darker outline."""

    id: str
    size: tuple[int, int] = (24, 18)
    path: Sequence[Point] = ((160.0, 200.0),)
    start: int = 0
    end: int | None = None
    colour: tuple[int, int, int] = (170, 60, 40)

    def centre(self, i: int, frames: int) -> Point | None:
        end = frames if self.end is None else min(self.end, frames)
        if not self.start <= i < end:
            return None
        return _along(self.path, i, self.start, end)

    def box(self, i: int, frames: int) -> Box | None:
        c = self.centre(i, frames)
        if c is None:
            return None
        w, h = self.size
        return (c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2)


@dataclass(frozen=True)
class FigureTruth:
    box: Box
    state: State
    keypoints: np.ndarray


@dataclass
class Rendered:
    """Frames and, per frame, the truth of everything visible in it (by id)."""

    images: list[np.ndarray] = field(default_factory=list)
    figures: list[dict[str, FigureTruth]] = field(default_factory=list)
    props: list[dict[str, Box]] = field(default_factory=list)

    def people(self, i: int) -> list[tuple[int, Box]]:
        """(track id, box) of frame ``i``'s figures, the ids numbered by figure order:
        what a tracker would hand the analytics."""
        return [(k, t.box) for k, t in enumerate(self.figures[i].values())]


def _clip(box: Box, w: int, h: int) -> Box:
    return (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))


def render_scene(
    frames: int,
    size: tuple[int, int] = (320, 240),
    figures: Sequence[Figure] = (),
    props: Sequence[Prop] = (),
    *,
    seed: int = 0,
    noise: float = 0.0,
    gains: Sequence[float] | None = None,
) -> Rendered:
    """Draw ``frames`` RGB frames of ``size`` (w, h): the textured background of
    ``airside.synthetic.clips``, the props, then the figures in front.

    ``noise``: sensor noise (standard deviation in grey levels, fresh every frame);
    ``gains``: a brightness factor per frame (lighting flicker), applied before the noise.
    """
    w, h = size
    if gains is not None and len(gains) < frames:
        raise ValueError(f"gains has {len(gains)} values for {frames} frames")
    bg = Image.fromarray(background(size, seed))
    rng = np.random.default_rng(seed + 1)
    scene = Rendered()
    for i in range(frames):
        img = bg.copy()
        canvas = ImageDraw.Draw(img)
        seen_props: dict[str, Box] = {}
        for prop in props:
            box = prop.box(i, frames)
            if box is None:
                continue
            outline = tuple(max(0, c - 60) for c in prop.colour)
            canvas.rectangle(box, fill=prop.colour, outline=outline, width=2)
            clipped = _clip(box, w, h)
            if clipped[2] > clipped[0] and clipped[3] > clipped[1]:
                seen_props[prop.id] = clipped
        seen: dict[str, FigureTruth] = {}
        for fig in figures:
            if not fig.visible(i, frames):
                continue
            kps = fig.keypoints(i, frames)
            fig.draw(canvas, kps)
            clipped = _clip(fig.box(kps), w, h)
            if clipped[2] > clipped[0] and clipped[3] > clipped[1]:
                seen[fig.id] = FigureTruth(clipped, fig.state(i, frames), kps)
        arr = np.asarray(img, dtype=np.float32)
        if gains is not None:
            arr = arr * np.float32(gains[i])
        if noise > 0:
            arr = arr + rng.normal(0.0, noise, size=arr.shape).astype(np.float32)
        scene.images.append(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        scene.figures.append(seen)
        scene.props.append(seen_props)
    return scene
