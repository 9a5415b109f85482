"""Image fuzzing (issue 18, hardening): thousands of hostile image inputs (tests/fuzz_inputs.py)
through enrolment, verification and identification, in the services and over real HTTP.

For every input: no crash and no traceback (only an ``AirsideError`` with a known code, or a
``ValueError`` with a message); over HTTP a 2xx, or a 4xx problem+json with a ``code``, never
a 5xx; at most ``DEADLINE_S`` per call; a decodable face enrols or matches, or is refused for
a face reason; a broken file is refused as a bad image. The process's memory (VmRSS) may not
grow by more than ``RSS_GROWTH_MB`` after the first ``WARMUP`` inputs (checked every 100).

``AIRSIDE_FUZZ_N`` inputs (default 2,000; ``make fuzz`` runs 10,000), seeded by
``AIRSIDE_FUZZ_SEED`` (default 18): a failure names the input's kind and seed, and
``FuzzInputs(faces, seed).make(kind, seed)`` makes it again. The summary {kind: {outcome:
count}} is printed, and written to reports/fuzz-images.json when ``AIRSIDE_FUZZ_REPORT`` is set.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.conftest import png_bytes, register
from tests.fuzz_inputs import FuzzInput, FuzzInputs
from tests.server_harness import running

from airside.errors import AirsideError
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries, matching
from airside.services.app import Airside
from airside.vision.imageio import REASONS

N = int(os.environ.get("AIRSIDE_FUZZ_N", "2000"))
SEED = int(os.environ.get("AIRSIDE_FUZZ_SEED", "18"))
DEADLINE_S = 10.0
RSS_GROWTH_MB = 400
WARMUP = 200  # inputs before the memory baseline is taken
API_EVERY = 4  # every 4th input also goes through the HTTP API
REPORT = Path(__file__).resolve().parents[1] / "reports" / "fuzz-images.json"

OFFICER = Principal("fuzz-officer", "admin")
CONSENT = BasisInput("consent", evidence_sha256="ab" * 32)
GALLERY = "fuzz-gallery"
PROBLEM = "application/problem+json"

IMAGE_CODES = {f"image_{r}" for r in REASONS}
FACE_CODES = {"face", "no_face", "several_faces", "no_landmarks", "quality"}
# a valid image can also meet these: the same bytes enrolled for another subject
OTHER_CODES = {"conflict"}
KNOWN_CODES = IMAGE_CODES | FACE_CODES | OTHER_CODES | {"value_error"}
# over HTTP an image error's code is its reason (415 or 413), without the "image_" prefix
API_CODES = {c.removeprefix("image_") for c in IMAGE_CODES} | IMAGE_CODES | FACE_CODES | {
    "conflict", "enrolment_refused", "validation", "payload_too_large"
}  # fmt: skip
OPS = ("enrol", "verify", "identify")


def rss_mb() -> float:
    """The process's resident memory now, in MB (VmRSS; the peak where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def outcome_of(error: BaseException) -> str:
    """The outcome an error stands for: its code (an enrolment refusal: its first capture's)."""
    if isinstance(error, enrolment.EnrolmentRefused) and error.refusals:
        return str(error.refusals[0].code)
    if isinstance(error, AirsideError):
        return error.code
    return "value_error"


def allowed(inp: FuzzInput, outcome: str) -> bool:
    """Whether ``outcome`` (``ok`` or a code) is one ``inp`` may have."""
    if outcome not in KNOWN_CODES and outcome != "ok":
        return False
    if inp.expect == "face":  # decodable photos of a face: enrolled/matched, or a face reason
        return outcome == "ok" or outcome in FACE_CODES | OTHER_CODES
    if inp.expect == "image":  # decodable, of anything: never refused as a bad image
        return outcome not in IMAGE_CODES and outcome != "value_error"
    if inp.expect == "bad":
        return outcome in IMAGE_CODES
    return True  # "any": whatever known outcome a damaged-but-maybe-decodable file has


class Run:
    """One fuzz run: the services and the API against ``app``, outcomes by kind."""

    def __init__(self, app: Airside, reference: bytes, scratch: Path) -> None:
        self.app = app
        self.reference = reference
        self.scratch = scratch
        self.summary: dict[str, Counter[str]] = defaultdict(Counter)
        self.failures: list[str] = []
        self.slowest: tuple[float, str] = (0.0, "")
        self.times: Counter[str] = Counter()

    def _timed(self, inp: FuzzInput, where: str, fn: Any) -> Any:
        t0 = time.monotonic()
        try:
            return fn()
        finally:
            took = time.monotonic() - t0
            self.times[inp.kind] += took
            if took > self.slowest[0]:
                self.slowest = (took, f"{where} {inp.label()}")
            if took > DEADLINE_S:
                self.failures.append(f"{where} {inp.label()}: took {took:.1f} s (> {DEADLINE_S} s)")

    def service(self, i: int, inp: FuzzInput) -> None:
        op = OPS[i % len(OPS)]
        src: bytes | Path = inp.data
        if i % 2:  # every other input as a file with the input's name (the path branch)
            src = self.scratch / inp.name
            src.write_bytes(inp.data)

        def call() -> str:
            try:
                if op == "enrol":
                    enrolment.enrol(self.app, OFFICER, GALLERY, f"FZ-{inp.seed}", [src], CONSENT)
                elif op == "verify":
                    matching.verify_images(self.app, OFFICER, src, self.reference)
                else:
                    matching.identify(self.app, OFFICER, GALLERY, src)
            except AirsideError as e:
                assert str(e).strip(), f"{type(e).__name__} without a message"
                return outcome_of(e)
            except ValueError as e:
                assert str(e).strip(), "ValueError without a message"
                return "value_error"
            return "ok"

        try:
            outcome = self._timed(inp, op, call)
        except Exception as e:  # a crash: anything but the errors above
            outcome = f"CRASH {type(e).__name__}"
            self.failures.append(f"{op} {inp.label()}: {type(e).__name__}: {e}")
        finally:
            if isinstance(src, Path):
                src.unlink(missing_ok=True)
        self.summary[inp.kind][f"{op}:{outcome}"] += 1
        if not outcome.startswith("CRASH") and not allowed(inp, outcome):
            self.failures.append(f"{op} {inp.label()}: outcome {outcome} (expected {inp.expect})")

    def api(self, i: int, inp: FuzzInput, client: httpx.Client) -> None:
        op = OPS[(i // API_EVERY) % len(OPS)]
        upload = (inp.name, inp.data, inp.content_type)
        if op == "enrol":
            url, files, data = (
                f"/api/v1/galleries/{GALLERY}/subjects/API-{inp.seed}/enrolments",
                [("image", upload)], {"basis": "consent"},
            )  # fmt: skip
        elif op == "verify":
            ref = ("ref.png", self.reference, "image/png")
            url, files, data = "/api/v1/verify", [("image_a", upload), ("image_b", ref)], {}
        else:
            url, files, data = f"/api/v1/galleries/{GALLERY}/identify", [("image", upload)], {}
        res = self._timed(inp, f"api {op}", lambda: client.post(url, files=files, data=data))
        where = f"api {op} {inp.label()}"
        if res.status_code < 300:
            outcome = "ok"
        else:
            outcome = f"{res.status_code}"
            if res.status_code >= 500:
                self.failures.append(f"{where}: {res.status_code} {res.text[:300]}")
            elif res.headers.get("content-type") != PROBLEM:
                self.failures.append(f"{where}: {res.status_code} is not problem+json")
            else:
                body = res.json()
                code = body.get("code")
                refused = body.get("refused") or [{}]
                outcome = f"{res.status_code}:{refused[0].get('code') or code}"
                if code not in API_CODES:
                    self.failures.append(f"{where}: unexpected code {code!r}: {body}")
                if "Traceback" in res.text:
                    self.failures.append(f"{where}: a traceback in the body")
        self.summary[inp.kind][f"api_{op}:{outcome}"] += 1


@pytest.mark.slow  # ~0.1-0.4 s an input (a third are faces the analyzer embeds): minutes
def test_hostile_images_are_refused_cleanly_in_time_and_memory(
    app: Airside, astronaut: np.ndarray, hopper: np.ndarray, tmp_path: Path
) -> None:
    register(app, OFFICER)
    galleries.create_gallery(app, OFFICER, GALLERY, "boarding:FZ1")
    enrolment.enrol(app, OFFICER, GALLERY, "REF-1", [png_bytes(astronaut)], CONSENT)
    reference = png_bytes(hopper)
    inputs = FuzzInputs([astronaut, hopper], seed=SEED)
    run = Run(app, reference, tmp_path)
    scratch_ok = matching.identify(app, OFFICER, GALLERY, png_bytes(astronaut))  # warm
    assert scratch_ok.match

    t0 = time.monotonic()
    with running(app) as server:
        key = server.key_for("fuzz-api", "admin")
        with server.client(key) as client:
            start = peak = rss_mb()
            baseline: float | None = None  # after WARMUP inputs: caches and arenas filled
            samples: list[int] = []
            for i, inp in enumerate(inputs(N)):
                run.service(i, inp)
                if i % API_EVERY == 0:
                    run.api(i, inp, client)
                if i % 100 == 99:
                    now = rss_mb()
                    peak = max(peak, now)
                    samples.append(round(now))
                    if baseline is None and i + 1 >= WARMUP:
                        baseline = now
                    elif baseline is not None:
                        assert now - baseline < RSS_GROWTH_MB, (
                            f"memory grew by {now - baseline:.0f} MB from input {WARMUP} to "
                            f"{i + 1} (from {baseline:.0f} MB; the last: {inp.label()})"
                        )
                assert len(run.failures) < 25, "\n".join(run.failures)
    took = time.monotonic() - t0

    summary = {k: dict(sorted(v.items())) for k, v in sorted(run.summary.items())}
    print(f"\nfuzz: {N} inputs (seed {SEED}) in {took:.0f} s; RSS {start:.0f} MB -> "
          f"peak {peak:.0f} MB; slowest {run.slowest[0]:.2f} s: {run.slowest[1]}")  # fmt: skip
    print(json.dumps(summary, indent=1))
    print("slowest kinds (s):", [(k, round(t, 1)) for k, t in run.times.most_common(8)])
    if os.environ.get("AIRSIDE_FUZZ_REPORT"):
        REPORT.parent.mkdir(exist_ok=True)
        report = {
            "inputs": N, "seed": SEED, "seconds": round(took, 1),
            "rss_mb": {"start": round(start), "peak": round(peak), "every_100": samples},
            "slowest": {"seconds": round(run.slowest[0], 2), "input": run.slowest[1]},
            "failures": run.failures, "kinds": summary,
            "seconds_by_kind": {k: round(t, 1) for k, t in run.times.most_common()},
        }  # fmt: skip
        REPORT.write_text(json.dumps(report, indent=1) + "\n")
    assert not run.failures, "\n".join(run.failures)
    # every kind was made, and the valid faces were not all refused
    kinds = len(inputs.kinds)
    assert kinds > N or set(summary) == set(inputs.kinds)
    if kinds * 3 <= N:
        for kind in ("valid_png", "valid_jpeg"):
            assert any(o.endswith(":ok") for o in summary[kind]), (kind, summary[kind])
