"""A camera's scene file edited from the console: zones and counting lines drawn on a
snapshot are written into the TOML the pipeline reads, everything else in the file (rules,
schedules, calibration, a zone's other settings) kept as it was.

The new file is validated by the same parser the pipeline uses before it replaces the old
one (atomically: a crash leaves the old file or the new one, never half of either), and
the camera's worker is restarted by the caller to read it. ``tomli-w`` writes the TOML
(comments in the old file are not kept: the file is rewritten from its parsed content).
"""

from __future__ import annotations

import io
import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from PIL import Image

from airside.analytics.scene import Scene, parse_scene
from airside.errors import AirsideError
from airside.services.app import Airside
from airside.video.annotate import redact
from airside.video.sources import Frame, open_source
from airside.vision.frame_faces import video_engine

Point = tuple[float, float]


@dataclass(frozen=True)
class LineIn:
    points: tuple[Point, Point]
    way_in: str  # up, down, left, right


def read_scene_tables(path: Path) -> dict[str, Any]:
    """The scene file's content (an absent file is an empty scene)."""
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise AirsideError(f"scene file {path.name} cannot be read: {e}", code="bad_scene") from e


def drawn(path: Path) -> dict[str, Any]:
    """The zones and lines of the scene file, as the console draws them."""
    t = read_scene_tables(path)
    zones = {n: z.get("points", []) for n, z in t.get("zones", {}).items()}
    lines = {
        n: {"points": ln.get("points", []), "in": ln.get("in")}
        for n, ln in t.get("lines", {}).items()
    }
    return {"zones": zones, "lines": lines}


def save_drawing(
    path: Path, camera: str, zones: dict[str, list[Point]], lines: dict[str, LineIn]
) -> Scene:
    """Write ``zones`` and ``lines`` (normalised image coordinates) into ``path``; a rule that
    names a zone or line no longer drawn makes the whole change fail, naming it."""
    t = read_scene_tables(path)
    t.setdefault("camera", camera)
    old_zones: dict[str, Any] = t.get("zones", {})
    t["zones"] = {
        n: {**old_zones.get(n, {}), "points": [list(p) for p in pts]} for n, pts in zones.items()
    }
    old_lines: dict[str, Any] = t.get("lines", {})
    t["lines"] = {
        n: {**old_lines.get(n, {}), "points": [list(p) for p in ln.points], "in": ln.way_in}
        for n, ln in lines.items()
    }
    if not t["zones"]:
        del t["zones"]
    if not t["lines"]:
        del t["lines"]
    text = tomli_w.dumps(t)
    scene = parse_scene(text, source=path.name)  # the pipeline's own check (SceneError)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return scene


def snapshot_jpeg(app: Airside, source: str, timeout_s: float = 15.0) -> bytes:
    """One frame of ``source`` as JPEG, every detected face blurred: enough to draw zones on,
    nobody recognisable in it."""
    import time

    src = open_source(source)
    frame: Frame | None = None
    deadline = time.monotonic() + timeout_s
    try:
        for item in src:
            if isinstance(item, Frame):
                frame = item
                break
            if time.monotonic() > deadline:
                break
    finally:
        src.stop()
        src.close()
    if frame is None:
        raise AirsideError(f"no picture from the camera's source within {timeout_s:g} s",
                           code="no_picture")  # fmt: skip
    image = np.ascontiguousarray(frame.image)
    faces = video_engine(app.analyzer, app.settings.detector.video_detect_side).detect(image)
    safe = redact(image, [d.box for d in faces])
    buf = io.BytesIO()
    Image.fromarray(safe).save(buf, format="JPEG", quality=85)
    return buf.getvalue()
