"""Plane geometry for scene rules: point in polygon, segment crossing, homographies.

Written here rather than taken from a library: shapely (the usual choice) is not a
dependency, and each function is a few lines of textbook geometry that works on NumPy
arrays of many points at once (one frame's foot points against one zone), which is what
the rules need per frame. ``matplotlib.path`` could answer point-in-polygon too, but the
tests use it as the independent reference, so the engine must not.
"""

from __future__ import annotations

import itertools

import numpy as np

Point = tuple[float, float]


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Which of ``points`` (N, 2) lie inside ``polygon`` (M, 2, closed implicitly).

    Even-odd ray casting (a horizontal ray to +x crosses the boundary an odd number of
    times from inside), vectorised over the points. A point exactly on an edge may go
    either way, as with every ray-casting test; foot points are measured, not exact.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    poly = np.asarray(polygon, dtype=float).reshape(-1, 2)
    x, y = pts[:, 0:1], pts[:, 1:2]  # (N, 1) against (1, M) edges
    x0, y0 = poly[:, 0][None, :], poly[:, 1][None, :]
    x1, y1 = np.roll(poly[:, 0], -1)[None, :], np.roll(poly[:, 1], -1)[None, :]
    straddles = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    crossings = straddles & (x < x_at)
    inside: np.ndarray = (crossings.sum(axis=1) % 2) == 1
    return inside


def cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z of (a - o) x (b - o): > 0 when b is to the left of o->a (in x-right, y-up axes;
    in image axes, y down, > 0 means b is to the right of o->a as seen on screen)."""
    ax, ay = a[..., 0] - o[..., 0], a[..., 1] - o[..., 1]
    bx, by = b[..., 0] - o[..., 0], b[..., 1] - o[..., 1]
    out: np.ndarray = ax * by - ay * bx
    return out


def _orient(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(p: Point, q: Point, r: Point) -> bool:
    """r, collinear with p-q, lies within the bounding box of p-q."""
    return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Do the closed segments p1-p2 and q1-q2 share a point (touching counts)?"""
    d1, d2 = _orient(q1, q2, p1), _orient(q1, q2, p2)
    d3, d4 = _orient(p1, p2, q1), _orient(p1, p2, q2)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return (
        (d1 == 0 and _on_segment(q1, q2, p1))
        or (d2 == 0 and _on_segment(q1, q2, p2))
        or (d3 == 0 and _on_segment(p1, p2, q1))
        or (d4 == 0 and _on_segment(p1, p2, q2))
    )


def polygon_area(polygon: np.ndarray) -> float:
    """Signed area (shoelace): > 0 for counter-clockwise vertices in x-right, y-up axes."""
    p = np.asarray(polygon, dtype=float).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def self_intersection(polygon: np.ndarray) -> tuple[int, int] | None:
    """The first pair of edges (i, j) (edge i runs from vertex i to i+1) that cross or
    touch although they are not neighbours, or None for a simple polygon. O(M^2): zones
    have a handful of vertices."""
    p = [(float(x), float(y)) for x, y in np.asarray(polygon, dtype=float).reshape(-1, 2)]
    m = len(p)
    for i, j in itertools.combinations(range(m), 2):
        if j == i + 1 or (i == 0 and j == m - 1):
            continue  # neighbours share a vertex by construction
        if segments_intersect(p[i], p[(i + 1) % m], p[j], p[(j + 1) % m]):
            return i, j
    return None


def homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 projective map taking the four ``src`` points exactly onto ``dst``.

    Direct linear transform with h33 = 1: eight equations, eight unknowns. Raises
    ValueError when the system is singular (three points on a line on either side).
    """
    s = np.asarray(src, dtype=float).reshape(4, 2)
    d = np.asarray(dst, dtype=float).reshape(4, 2)
    a = np.zeros((8, 8))
    b = np.zeros(8)
    for k, ((x, y), (u, v)) in enumerate(zip(s, d, strict=True)):
        a[2 * k] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
        a[2 * k + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
        b[2 * k], b[2 * k + 1] = u, v
    if not np.isfinite(a).all() or np.linalg.cond(a) > 1e12:
        raise ValueError("the four point pairs do not determine a homography")
    h = np.linalg.solve(a, b)
    out: np.ndarray = np.append(h, 1.0).reshape(3, 3)
    return out


def project(h: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map ``points`` (N, 2) through ``h``: returns (mapped (N, 2), w (N,)). A point whose w
    has the other sign than the calibration points' lies beyond the horizon."""
    p = np.asarray(points, dtype=float).reshape(-1, 2)
    hom = np.c_[p, np.ones(len(p))] @ h.T
    w = hom[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        mapped = hom[:, :2] / w[:, None]
    return mapped, w


def triangle_area(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    return 0.5 * abs(float(_orient((a[0], a[1]), (b[0], b[1]), (c[0], c[1]))))
