"""A 1280x720 "crowd view" clip with exactly known people, to measure people analytics.

Why: a person detector, people counts per zone, counting-line crossings and loitering need a
ground truth that says who is where in *every* frame, and hand labels of real footage are
approximate and sparse.  This clip keeps two real ingredients:

* real trajectories: the MOTChallenge 2015 ground-truth tracks of TUD-Campus (71 frames) and
  TUD-Stadtmitte (179 frames), 25 fps, boxes in a 640x480 frame (``gt/gt.txt``);
* real people: the labelled people of frame 0 of ``street_night/demo.mp4`` (an elevated
  night street view, ``tests/data/people_counts.csv``), cut out with their boxes.

What is artificial: each person is a pasted *rectangle* (the crop with the bit of street
around it, resized to the TUD box); the frame is a grid of cells (3x3 by default), each
replaying one TUD sequence (alternately Campus / Stadtmitte, with a per-cell time offset
and a horizontal mirror for some cells) scaled to fit (x0.5 by default) and centred in the
cell; the floor is a synthetic, static grey-blue texture with the cell borders drawn on it.
People are painted far to near (by box bottom), so nearer people occlude farther ones and
the truth records how much of each box is covered.

Caveat: the crops come from the same street_night frame the detector is also measured on,
so a good score here is not independent evidence that the detector generalises; it checks
counting, zones, lines and occlusion handling with known numbers.  The street is crowded, so
some crops also hold a slice of a neighbour; a detector that fires on such a slice scores a
false alarm here although a real person is there.

Clip length: by default the length of the shorter sequence (TUD-Campus, 71 frames = 2.84 s).
Stadtmitte cells then play without looping, with offsets spread over the spare frames;
Campus cells with a non-zero offset loop, and a looped pass is a *new* track (``c4-3r1``:
cell 4, TUD id 3, second pass), because the person jumps back to where the sequence starts.
A longer ``frames=`` loops every cell the same way.

Example::

    clip = build_crowd_clip(tud_dir, person_crops(street_mp4, labels_csv))
    img = clip.frame(10)                       # (720, 1280, 3) uint8, rendered on demand
    seen = clip.visible(10)                    # the people a detector should find
    write_clip(clip, out / "crowd.mp4")
"""

from __future__ import annotations

import configparser
import csv
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image

from airside.synthetic.clips import pick_codec

BoxF = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in pixels of the clip, x1/y1 exclusive."""

IntBox = tuple[int, int, int, int]
Point = tuple[float, float]

#: TUD sequences, alternated over the cells (cell 0 gets the first).
SEQUENCES: tuple[str, ...] = ("TUD-Campus", "TUD-Stadtmitte")
#: Size of the TUD frames the ground-truth boxes refer to.
TUD_SIZE = (640, 480)
#: Crops shorter than this (pixels of street_night) are too blurry to stand for a person.
MIN_CROP_HEIGHT = 60
#: Wider crops (width / height) are not one standing person: left out.
MAX_CROP_ASPECT = 0.6
#: A box less than this fraction inside its cell is dropped (mostly off-screen).
MIN_INSIDE = 0.5
FPS = 25.0

_FLOOR_RGB = (52.0, 60.0, 74.0)
_BORDER_RGB = (18, 20, 26)


def _floats(b: IntBox) -> BoxF:
    return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


@dataclass(frozen=True)
class TruthPerson:
    """One person in one frame: ``occluded`` is the fraction of ``box`` covered by nearer
    people (painted after it)."""

    track: str
    box: BoxF
    occluded: float

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def foot(self) -> Point:
        """Bottom centre of the box: where the person stands (zones, lines)."""
        return ((self.box[0] + self.box[2]) / 2.0, self.box[3])


@dataclass(frozen=True)
class Cell:
    """One grid cell: which TUD sequence it replays, from which frame, mirrored or not."""

    index: int
    box: IntBox
    sequence: str
    offset: int
    mirror: bool


@dataclass(frozen=True)
class _Placement:
    """Where one person is pasted: the resized crop covers ``full`` (may overhang the cell);
    only ``clipped`` (its part inside the cell) is painted and reported."""

    track: str
    crop: int
    mirror: bool
    full: IntBox
    clipped: IntBox
    occluded: float


@dataclass(frozen=True, eq=False)
class CrowdClip:
    """The clip: frames are rendered on demand (:meth:`frame`), the truth is precomputed."""

    size: tuple[int, int]
    fps: float
    frames: int
    cells: tuple[Cell, ...]
    crops: tuple[np.ndarray, ...] = field(repr=False)
    floor: np.ndarray = field(repr=False)
    placements: tuple[tuple[_Placement, ...], ...] = field(repr=False)
    _resized: dict[tuple[int, int, int, bool], np.ndarray] = field(default_factory=dict, repr=False)

    def _check(self, i: int) -> None:
        if not 0 <= i < self.frames:
            raise IndexError(f"frame {i} outside 0..{self.frames - 1}")

    def background(self) -> np.ndarray:
        """The people-free frame (the same for every frame: a static camera)."""
        return self.floor.copy()

    def crop_for(self, track: str) -> int:
        """Index into :attr:`crops` of the person who walks ``track``."""
        for frame in self.placements:
            for p in frame:
                if p.track == track:
                    return p.crop
        raise KeyError(track)

    def patch(self, i: int, track: str) -> np.ndarray:
        """The RGB pixels pasted for ``track`` in frame ``i`` (its clipped box), before
        nearer people are painted over it."""
        self._check(i)
        for p in self.placements[i]:
            if p.track == track:
                return self._patch(p)
        raise KeyError(f"{track} not in frame {i}")

    def _patch(self, p: _Placement) -> np.ndarray:
        fx0, fy0, fx1, fy1 = p.full
        key = (p.crop, fx1 - fx0, fy1 - fy0, p.mirror)
        img = self._resized.get(key)
        if img is None:
            pil = Image.fromarray(self.crops[p.crop]).resize(
                (fx1 - fx0, fy1 - fy0), Image.Resampling.BILINEAR
            )
            if p.mirror:
                pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            img = np.asarray(pil)
            self._resized[key] = img
        x0, y0, x1, y1 = p.clipped
        return img[y0 - fy0 : y1 - fy0, x0 - fx0 : x1 - fx0]

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as an RGB uint8 array (height, width, 3)."""
        self._check(i)
        img = self.floor.copy()
        for p in self.placements[i]:  # far to near
            x0, y0, x1, y1 = p.clipped
            img[y0:y1, x0:x1] = self._patch(p)
        return img

    def iter_frames(self) -> Iterator[np.ndarray]:
        """All frames in order, one at a time (never all in memory)."""
        for i in range(self.frames):
            yield self.frame(i)

    def truth(self, i: int) -> list[TruthPerson]:
        """Everyone in frame ``i``, in painting order (far to near)."""
        self._check(i)
        return [TruthPerson(p.track, _floats(p.clipped), p.occluded) for p in self.placements[i]]

    def visible(
        self, i: int, min_height: float = 60.0, max_occluded: float = 0.5
    ) -> list[TruthPerson]:
        """The people a detector is expected to find: tall enough, not hidden too much."""
        return [t for t in self.truth(i) if t.height >= min_height and t.occluded <= max_occluded]


# --- inputs -----------------------------------------------------------------------------


def person_crops(street_video: Path, labels_csv: Path) -> list[np.ndarray]:
    """RGB crops of the labelled people of frame 0 of ``street_video`` (exactly their boxes),
    keeping those at least 60 px tall that do not touch the frame border (cut-off people)
    and are no wider than ``MAX_CROP_ASPECT`` of their height."""
    key = f"{street_video.parent.name}/{street_video.name}"
    boxes: list[IntBox] = []
    with labels_csv.open(encoding="utf-8") as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            if row["video"] != key or int(row["frame"]) != 0 or row["kind"] != "person":
                continue
            x0, y0, x1, y1 = (round(float(row[k])) for k in ("x0", "y0", "x1", "y1"))
            boxes.append((x0, y0, x1, y1))
    if not boxes:
        raise ValueError(f"{labels_csv}: no person labels for {key} frame 0")
    with av.open(str(street_video)) as container:
        first = next(container.decode(video=0))
        img = first.to_ndarray(format="rgb24")
    h, w = img.shape[:2]
    crops = []
    for x0, y0, x1, y1 in boxes:
        if y1 - y0 < MIN_CROP_HEIGHT or x0 <= 0 or y0 <= 0 or x1 >= w or y1 >= h:
            continue
        if (x1 - x0) > MAX_CROP_ASPECT * (y1 - y0):
            continue  # not a standing person's shape (someone behind a planter, a group)
        crops.append(np.ascontiguousarray(img[y0:y1, x0:x1]))
    return crops


def _read_tud(seq_dir: Path) -> tuple[int, dict[int, list[tuple[int, BoxF]]]]:
    """(sequence length, 0-based frame -> [(track id, (x, y, w, h))]) of one MOT sequence."""
    ini = configparser.ConfigParser()
    ini.read(seq_dir / "seqinfo.ini", encoding="utf-8")
    by_frame: dict[int, list[tuple[int, BoxF]]] = defaultdict(list)
    last = 0
    with (seq_dir / "gt" / "gt.txt").open(encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 7 or float(parts[6]) == 0:  # conf 0: "ignore" in MOT ground truth
                continue
            frame = int(float(parts[0])) - 1
            x, y, bw, bh = (float(v) for v in parts[2:6])
            by_frame[frame].append((int(float(parts[1])), (x, y, bw, bh)))
            last = max(last, frame + 1)
    length = ini.getint("Sequence", "seqLength", fallback=last)
    return length, dict(by_frame)


def _floor(size: tuple[int, int], cells: Sequence[Cell], seed: int) -> np.ndarray:
    """Dark grey-blue paving: smooth blotches plus fine grain, cell borders drawn on it."""
    w, h = size
    rng = np.random.default_rng((seed, 0xF100))
    coarse = rng.normal(0.0, 1.0, size=(h // 40 + 2, w // 40 + 2)).astype(np.float32)
    blotch = np.asarray(
        Image.fromarray(coarse, mode="F").resize((w, h), Image.Resampling.BICUBIC),
        dtype=np.float32,
    )
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:] = _FLOOR_RGB
    img += 5.0 * blotch[..., None]
    img += rng.normal(0.0, 3.0, size=(h, w, 1)).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    for c in cells:
        x0, y0, x1, y1 = c.box
        out[y0 : y0 + 2, x0:x1] = _BORDER_RGB
        out[y1 - 2 : y1, x0:x1] = _BORDER_RGB
        out[y0:y1, x0 : x0 + 2] = _BORDER_RGB
        out[y0:y1, x1 - 2 : x1] = _BORDER_RGB
    out.setflags(write=False)
    return out


def _offsets(length: int, count: int, frames: int) -> list[int]:
    """Start frames for ``count`` cells replaying one sequence of ``length`` for ``frames``:
    spread over the spare frames when there are enough (no loop), else over the whole
    sequence (the cells loop)."""
    spare = length - frames
    if count == 1:
        return [0]
    if spare >= count - 1:
        return [k * spare // (count - 1) for k in range(count)]
    return [k * length // count for k in range(count)]


def build_crowd_clip(
    tud_dir: Path,
    crops: Sequence[np.ndarray],
    *,
    size: tuple[int, int] = (1280, 720),
    grid: tuple[int, int] = (3, 3),
    frames: int | None = None,
    seed: int = 0,
) -> CrowdClip:
    """Lay the TUD sequences under ``tud_dir`` out on a ``grid`` (columns, rows) of cells and
    place a street_night person from ``crops`` on every ground-truth box.

    ``frames`` defaults to the shorter sequence's length (see the module docstring for the
    looping rule); ``seed`` picks the crop each track wears and the floor texture.
    """
    if not crops:
        raise ValueError("no person crops")
    w, h = size
    cols, rows = grid
    n_cells = cols * rows
    seqs = {name: _read_tud(tud_dir / name) for name in SEQUENCES}
    n_frames = min(length for length, _ in seqs.values()) if frames is None else frames
    if n_frames < 1:
        raise ValueError(f"frames must be >= 1, got {n_frames}")

    names = [SEQUENCES[c % len(SEQUENCES)] for c in range(n_cells)]
    per_seq: dict[str, list[int]] = defaultdict(list)
    for c, name in enumerate(names):
        per_seq[name].append(c)
    cells: list[Cell] = []
    offsets: dict[int, tuple[int, bool]] = {}
    for name, members in per_seq.items():
        offs = _offsets(seqs[name][0], len(members), n_frames)
        for k, c in enumerate(members):
            offsets[c] = (offs[k], k % 2 == 1)
    xs = [round(k * w / cols) for k in range(cols + 1)]
    ys = [round(k * h / rows) for k in range(rows + 1)]
    for c in range(n_cells):
        r, q = divmod(c, cols)
        off, mirror = offsets[c]
        cells.append(Cell(c, (xs[q], ys[r], xs[q + 1], ys[r + 1]), names[c], off, mirror))

    # The crop each (cell, TUD id) wears: a seeded permutation per cell, so people within
    # one cell differ while there are enough crops.
    wear: dict[tuple[int, int], int] = {}
    for cell in cells:
        ids = sorted({tid for boxes in seqs[cell.sequence][1].values() for tid, _ in boxes})
        order = np.random.default_rng((seed, cell.index)).permutation(len(crops))
        for k, tid in enumerate(ids):
            wear[(cell.index, tid)] = int(order[k % len(crops)])

    tw, th = TUD_SIZE
    placements: list[tuple[_Placement, ...]] = []
    for i in range(n_frames):
        todo: list[tuple[int, str, int, bool, IntBox, IntBox]] = []
        for cell in cells:
            length, by_frame = seqs[cell.sequence]
            k, f = divmod(i + cell.offset, length)
            cx0, cy0, cx1, cy1 = cell.box
            s = min((cx1 - cx0) / tw, (cy1 - cy0) / th)
            ox, oy = cx0 + ((cx1 - cx0) - tw * s) / 2, cy0 + ((cy1 - cy0) - th * s) / 2
            for tid, (bx, by, bw, bh) in by_frame.get(f, []):
                if cell.mirror:
                    bx = tw - bx - bw
                # TUD gives where a person stands and how tall; the width is the crop's
                # own (a person squeezed into another's box stops looking like one).
                crop_h, crop_w = crops[wear[(cell.index, tid)]].shape[:2]
                mid, tall = ox + (bx + bw / 2) * s, bh * s
                half = tall * crop_w / crop_h / 2
                full = (
                    round(mid - half),
                    round(oy + by * s),
                    round(mid + half),
                    round(oy + (by + bh) * s),
                )
                if full[2] <= full[0] or full[3] <= full[1]:
                    continue
                clipped = (
                    max(full[0], cx0),
                    max(full[1], cy0),
                    min(full[2], cx1),
                    min(full[3], cy1),
                )
                inside = max(0, clipped[2] - clipped[0]) * max(0, clipped[3] - clipped[1])
                if inside < MIN_INSIDE * (full[2] - full[0]) * (full[3] - full[1]):
                    continue
                track = f"c{cell.index}-{tid}" + (f"r{k}" if k else "")
                todo.append((full[3], track, wear[(cell.index, tid)], cell.mirror, full, clipped))
        todo.sort(key=lambda t: (t[0], t[1]))  # far (small bottom) first
        occluded = _occlusion([t[5] for t in todo], (w, h))
        placements.append(
            tuple(
                _Placement(track, crop, mirror, full, clipped, occ)
                for (_, track, crop, mirror, full, clipped), occ in zip(todo, occluded, strict=True)
            )
        )
    return CrowdClip(
        size=size,
        fps=FPS,
        frames=n_frames,
        cells=tuple(cells),
        crops=tuple(np.ascontiguousarray(c) for c in crops),
        floor=_floor(size, cells, seed),
        placements=tuple(placements),
    )


def _occlusion(boxes: Sequence[IntBox], size: tuple[int, int]) -> list[float]:
    """Per box (painted in this order, far to near), the fraction that later ones cover."""
    covered = np.zeros((size[1], size[0]), dtype=bool)
    occluded = [0.0] * len(boxes)
    for j in range(len(boxes) - 1, -1, -1):  # near to far: what is painted after j
        x0, y0, x1, y1 = boxes[j]
        region = covered[y0:y1, x0:x1]
        occluded[j] = float(region.mean()) if region.size else 0.0
        region[:] = True
    return occluded


def with_still_part(clip: CrowdClip, x_from: float) -> CrowdClip:
    """The clip with everyone whose foot point is right of ``x_from`` (pixels) frozen as in
    frame 0: people standing still in part of the view (a queue, a waiting area), for
    measuring motion gating. Walkers entering that part from the left vanish there."""
    frozen = [p for p in clip.placements[0] if (p.full[0] + p.full[2]) / 2 >= x_from]
    placements = []
    for frame in clip.placements:
        moving = [p for p in frame if (p.full[0] + p.full[2]) / 2 < x_from]
        people = sorted([*moving, *frozen], key=lambda p: (p.full[3], p.track))
        occ = _occlusion([p.clipped for p in people], clip.size)
        placements.append(
            tuple(
                _Placement(p.track, p.crop, p.mirror, p.full, p.clipped, o)
                for p, o in zip(people, occ, strict=True)
            )
        )
    return CrowdClip(
        size=clip.size,
        fps=clip.fps,
        frames=clip.frames,
        cells=clip.cells,
        crops=clip.crops,
        floor=clip.floor,
        placements=tuple(placements),
    )


# --- outputs ----------------------------------------------------------------------------


def write_clip(clip: CrowdClip, path: Path, *, crf: int = 18) -> str:
    """Encode the clip as H.264 (yuv420p, constant quality ``crf``) at 25 fps, frame by frame;
    returns the codec used (MPEG-4 at a high bit rate where this PyAV has no libx264)."""
    codec = pick_codec("mp4")
    w, h = clip.size
    with av.open(str(path), mode="w", format="mp4") as out:
        stream = out.add_stream(codec, rate=round(clip.fps))
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.codec_context.options = {"crf": str(crf), "preset": "fast"}
        else:
            stream.codec_context.bit_rate = 8_000_000
        for i, arr in enumerate(clip.iter_frames()):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return codec


def write_truth_csv(clip: CrowdClip, path: Path) -> None:
    """The ground truth as CSV: ``frame,track,x0,y0,x1,y1,occluded`` (0-based frames)."""
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["frame", "track", "x0", "y0", "x1", "y1", "occluded"])
        for i in range(clip.frames):
            for t in clip.truth(i):
                out.writerow([i, t.track, *(f"{v:g}" for v in t.box), f"{t.occluded:.4f}"])


# --- counting truth ---------------------------------------------------------------------


def inside_polygon(p: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd ray casting."""
    x, y = p
    hit = False
    n = len(polygon)
    for k in range(n):
        (xa, ya), (xb, yb) = polygon[k], polygon[(k + 1) % n]
        if (ya > y) != (yb > y) and x < xa + (y - ya) * (xb - xa) / (yb - ya):
            hit = not hit
    return hit


def zone_counts(
    clip: CrowdClip,
    polygon: Sequence[Point],
    *,
    min_height: float = 60.0,
    max_occluded: float = 0.5,
) -> list[int]:
    """Per frame, how many visible people stand (foot point) inside ``polygon``."""
    return [
        sum(inside_polygon(t.foot, polygon) for t in clip.visible(i, min_height, max_occluded))
        for i in range(clip.frames)
    ]


def zone_dwell(clip: CrowdClip, polygon: Sequence[Point]) -> dict[str, int]:
    """Frames each track spends with its foot point inside ``polygon`` (all truth, however
    occluded): the reference for loitering."""
    out: dict[str, int] = defaultdict(int)
    for i in range(clip.frames):
        for t in clip.truth(i):
            if inside_polygon(t.foot, polygon):
                out[t.track] += 1
    return dict(out)


def _side(a: Point, b: Point, p: Point) -> float:
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def line_crossing_events(clip: CrowdClip, a: Point, b: Point) -> list[tuple[int, str, int]]:
    """``(frame, track, direction)`` for every time a track's foot point moves to the other
    side of the line a-b between two successive frames it appears in, where the step meets
    the segment itself; direction is +1 or -1 (the sign of the new side)."""
    path: dict[str, list[tuple[int, Point]]] = defaultdict(list)
    for i in range(clip.frames):
        for t in clip.truth(i):
            path[t.track].append((i, t.foot))
    events: list[tuple[int, str, int]] = []
    dx, dy = b[0] - a[0], b[1] - a[1]
    seg2 = dx * dx + dy * dy
    for track, pts in path.items():
        last: tuple[Point, float] | None = None  # last foot point off the line, its side
        for i, q in pts:
            sq = _side(a, b, q)
            if sq == 0:  # on the line: wait to see which side it leaves to
                continue
            if last is not None and (last[1] > 0) != (sq > 0):
                p, sp = last
                f = sp / (sp - sq)  # where on p->q the line is met
                cx, cy = p[0] + f * (q[0] - p[0]), p[1] + f * (q[1] - p[1])
                u = ((cx - a[0]) * dx + (cy - a[1]) * dy) / seg2 if seg2 else -1.0
                if 0.0 <= u <= 1.0:
                    events.append((i, track, 1 if sq > 0 else -1))
            last = (q, sq)
    events.sort()
    return events


def line_crossings(clip: CrowdClip, a: Point, b: Point) -> int:
    """How many times truth tracks cross the segment a-b (see :func:`line_crossing_events`)."""
    return len(line_crossing_events(clip, a, b))
