"""What the camera pipeline costs: real-time factor, embedding calls and event latency on a
synthetic crowd clip, beside the naive approach (detect and embed every face in every
frame) measured in the same run on the same clip."""

from __future__ import annotations

import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from airside.config import Settings
from airside.governance.consent import BasisInput
from airside.services import enrolment, galleries, matching, principal_admin
from airside.services.app import Airside
from airside.services.watch import WatchRequest, watch
from airside.synthetic.clips import Sprite, face_image, make_video
from airside.video.sources import Frame, open_source
from airside.vision.analyzer import FaceAnalyzer
from airside.vision.frame_faces import FrameFaces as AnalyzerEngine


@dataclass(frozen=True)
class CrowdClip:
    path: Path
    frames: int
    fps: int
    faces: int


def crowd_clip(folder: Path, frames: int = 100, faces: int = 10, fps: int = 25) -> CrowdClip:
    """1280x720: ``faces`` heads (astronaut and Grace Hopper alternating) crossing the frame
    on different rows and speeds."""
    sprites = []
    for i in range(faces):
        row, col = divmod(i, 5)
        y = 70.0 + row * 330 + (i % 2) * 40
        x0 = 60.0 + col * 240
        drift = 80.0 if i % 2 == 0 else -80.0
        sprites.append(
            Sprite(
                f"p{i}",
                "astronaut" if i % 2 == 0 else "hopper",
                (110, 132),
                ((x0, y), (x0 + drift, y + 20)),
            )
        )
    path = folder / "crowd.mp4"
    make_video(path, frames, (1280, 720), fps, sprites)
    return CrowdClip(path, frames, fps, faces)


def _app(folder: Path, analyzer: FaceAnalyzer) -> tuple[Airside, Any]:
    app = Airside(Settings(data_dir=folder), analyzer_factory=lambda _s: analyzer)
    admin = principal_admin.ensure_local_admin(app)
    galleries.create_gallery(app, admin, "gate", "boarding")
    buf = io.BytesIO()
    Image.fromarray(face_image("astronaut")).save(buf, format="PNG")
    enrolment.enrol(app, admin, "gate", "PNR-1", [buf.getvalue()], BasisInput("consent"))
    cam = principal_admin.add_principal(app, admin, "cam", "camera", [("gate", "boarding")])
    return app, cam


# A scene for measuring the cost of safety analytics beside identity (docs/analytics.md).
BENCH_SCENE = """
camera = "bench"
[zones.apron]
points = [[0.5, 0.5], [0.98, 0.5], [0.98, 0.98], [0.5, 0.98]]
[lines.gate]
points = [[0.02, 0.6], [0.98, 0.6]]
in = "down"
[[rules]]
type = "intrusion"
zone = "apron"
[[rules]]
type = "loitering"
zone = "apron"
dwell = 30
[[rules]]
type = "crowding"
zone = "apron"
max_count = 8
[[rules]]
type = "running"
max_speed = 1.5
[[rules]]
type = "fall"
[[rules]]
type = "line_count"
line = "gate"
"""


def bench_pipeline(
    analyzer: FaceAnalyzer, clip: CrowdClip, detect_every: int, *, safety: bool = False
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        app, cam = _app(Path(d), analyzer)
        scene = None
        if safety:
            scene = Path(d) / "scene.toml"
            scene.write_text(BENCH_SCENE, encoding="utf-8")
        try:
            summary = watch(
                app,
                cam,
                open_source(str(clip.path)),
                WatchRequest(["gate"], camera="bench", detect_every=detect_every,
                             realtime=False, scene=scene),
            )  # fmt: skip
        finally:
            app.close()
    out = summary.as_dict()
    return {
        "safety": safety,
        "detect_every": detect_every,
        "realtime_factor": out["realtime_factor"],
        "wall_s": out["wall_s"],
        "embedding_calls": out["embedding_calls"],
        "tracks": out["tracks"],
        "identified_tracks": len(summary.events),
        "subjects": sorted({e.subject for e in summary.events}),
        "event_latency_ms": out["event_latency_ms"],
    }


def bench_naive(analyzer: FaceAnalyzer, clip: CrowdClip, video_detect_side: int) -> dict[str, Any]:
    """Detect, embed and search every face in every frame (no tracking), with the same
    detector, crops and embedder as the pipeline."""
    engine = AnalyzerEngine(analyzer, video_detect_side)
    with tempfile.TemporaryDirectory() as d:
        app, cam = _app(Path(d), analyzer)
        contract = analyzer.contract
        calls = 0
        subjects: set[str] = set()
        t0 = time.monotonic()
        try:
            with open_source(str(clip.path)) as src:
                for item in src:
                    if not isinstance(item, Frame):
                        continue
                    for det in engine.detect(item.image):
                        crop = engine.crop(item.image, det)
                        if crop is None:
                            continue
                        calls += 1
                        res = matching.identify_embedding(
                            app, cam, "gate", engine.embed(crop), contract=contract,
                            quality=crop.quality, input_sha256=crop.sha256, k=1,
                        )  # fmt: skip
                        if res.match:
                            subjects.add(res.candidates[0].subject)
        finally:
            app.close()
        wall = time.monotonic() - t0
    stream = clip.frames / clip.fps
    return {
        "realtime_factor": round(stream / wall, 3),
        "wall_s": round(wall, 3),
        "embedding_calls": calls,
        "subjects": sorted(subjects),
    }


def run(
    analyzer: FaceAnalyzer,
    frames: int = 100,
    detect_every: tuple[int, ...] = (1, 3),
    video_detect_side: int = 640,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        clip = crowd_clip(Path(d), frames=frames)
        rows = [bench_pipeline(analyzer, clip, n) for n in detect_every]
        # Identity and safety together (the default person detector + the scene's rules).
        rows.append(bench_pipeline(analyzer, clip, detect_every[-1], safety=True))
        naive = bench_naive(analyzer, clip, video_detect_side)
    best = rows[-2]
    return {
        "clip": {"size": "1280x720", "fps": clip.fps, "frames": clip.frames, "faces": clip.faces},
        "pipeline": rows,
        "naive": naive,
        "embedding_reduction": round(naive["embedding_calls"] / max(1, best["embedding_calls"]), 1),
        "same_subjects": all(r["subjects"] == naive["subjects"] for r in rows),
        "analytics_ms_per_frame": round(
            (rows[-1]["wall_s"] - rows[-2]["wall_s"]) / clip.frames * 1000, 1
        ),
        "latency_note": "decode of the deciding frame -> identity event stored",
        "cores": "one (OMP/ONNX threads 1)",
    }
