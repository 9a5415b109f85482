"""Camera workers on other machines (docs/cameras.md): a ``remote`` camera's configuration,
its searches and its events, each for the camera's own principal only
(``services.camera_workers``). No route here takes an image: a search is a list of
vectors, and its schema refuses anything else."""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from airside.errors import AirsideError
from airside.governance.principals import Principal
from airside.server.auth import Service, allowed
from airside.server.cameras.config import CameraConfig
from airside.server.routes.cameras import supervisor_of
from airside.server.work import Pool
from airside.services import camera_workers
from airside.services.camera_workers import MAX_EVENTS, MAX_FACES, RemoteCamera
from airside.services.watch import EmbeddedFace
from airside.vision.contract import EmbeddingContract

router = APIRouter(tags=["camera workers"])

_Text = Annotated[str, Field(min_length=1, max_length=200)]
_Key = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Contract(_Strict):
    """The embedding contract the worker's models produce (vision/contract.py)."""

    model_id: _Text
    version: _Text
    weights_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    dim: int = Field(ge=1, le=4096)
    preprocessing: _Text


class Face(_Strict):
    """One face crop, embedded by the worker: the vector and what the audit log keeps."""

    embedding: list[float] = Field(min_length=1, max_length=4096)
    quality: float = Field(ge=0, le=100)
    crop_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    track: int = Field(ge=0)


class IdentifyBody(_Strict):
    contract: Contract
    t: float
    faces: list[Face] = Field(min_length=1, max_length=MAX_FACES)


class _Event(_Strict):
    key: _Key


class IdentityIn(_Event):
    kind: Literal["identity"]
    track: int = Field(ge=0)
    subject: _Text
    gallery: _Text
    score: float
    first_seen: float
    last_seen: float
    review_case: int | None = None
    started_at: float


class EndedIn(_Event):
    kind: Literal["ended"]
    ref: _Key
    last_seen: float


class RetractedIn(_Event):
    kind: Literal["retracted"]
    ref: _Key
    reason: Annotated[str, Field(min_length=1, max_length=40)]
    replaced_by: _Key | None = None


class SafetyIn(_Event):
    kind: Literal["safety"]
    type: _Text
    severity: _Text
    at: float
    first_seen: float
    zone: _Text | None = None
    tracks: list[int] = Field(default_factory=list, max_length=1000)
    detail: dict[str, Any] = Field(default_factory=dict)
    snapshot: str | None = Field(None, description="The face-blurred snapshot, base64 JPEG")
    started_at: float


class SystemIn(_Event):
    kind: Literal["system"]
    type: _Text
    at: float
    detail: Annotated[str, Field(max_length=2000)] = ""
    started_at: float


class EventsBody(_Strict):
    events: list[
        Annotated[
            IdentityIn | EndedIn | RetractedIn | SafetyIn | SystemIn, Field(discriminator="kind")
        ]
    ] = Field(max_length=MAX_EVENTS)


def _camera(request: Request, name: str) -> tuple[RemoteCamera, CameraConfig]:
    """The camera as the server's configuration has it (404 when it has none)."""
    cam = supervisor_of(request).runner(name).camera
    ref = RemoteCamera(cam.name, cam.principal_name, tuple(cam.galleries), cam.purpose,
                       cam.remote, cam.scene is not None)  # fmt: skip
    return ref, cam


@router.get("/cameras/{name}/worker", summary="A remote camera's settings, for its own worker")
async def worker_settings(
    name: str,
    request: Request,
    app: Service,
    who: Annotated[Principal, allowed("event.record")],
) -> dict[str, Any]:
    camera, cam = _camera(request, name)
    views = await run_in_threadpool(camera_workers.configure, app, who, camera)
    scene = None
    if cam.scene is not None:
        try:
            scene = Path(cam.scene).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise AirsideError(f"cannot read camera {name!r}'s scene: {e}", code="bad_scene") from e
    return {
        "name": cam.name,
        "source": cam.source,  # credentials included: the worker opens it
        "loop": cam.loop,
        "fps": cam.fps,
        "detect_every": cam.detect_every,
        "purpose": cam.purpose,
        "galleries": [
            {
                "name": v.name,
                "purpose": v.purpose,
                "quality_bar": v.quality_bar,
                "contract": asdict(EmbeddingContract.from_json(v.contract_json)),
            }
            for v in views
        ],
        "scene": scene,
    }


@router.post("/cameras/{name}/identify", summary="Search a remote camera's galleries (vectors)")
async def worker_identify(
    name: str,
    body: IdentifyBody,
    request: Request,
    app: Service,
    pool: Pool,
    who: Annotated[Principal, allowed("identify")],
) -> dict[str, Any]:
    camera, _ = _camera(request, name)
    faces = [
        EmbeddedFace(np.asarray(f.embedding, dtype=np.float32), f.quality, f.crop_sha256, f.track)
        for f in body.faces
    ]
    contract = EmbeddingContract(**body.contract.model_dump())
    matches = await pool.run(camera_workers.identify, app, who, camera, contract, faces, body.t)
    return {
        "matches": [
            {"subject": m.subject, "score": round(m.score, 6), "gallery": m.gallery,
             "review_case": m.review_case}
            for m in matches
        ]
    }  # fmt: skip


def _snapshot(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AirsideError("a snapshot must be base64", code="validation") from None


@router.post("/cameras/{name}/events", summary="Record a remote camera's events, in order")
async def worker_events(
    name: str,
    body: EventsBody,
    request: Request,
    app: Service,
    who: Annotated[Principal, allowed("event.record")],
) -> dict[str, Any]:
    camera, _ = _camera(request, name)
    items = []
    for e in body.events:
        item = e.model_dump()
        if isinstance(e, SafetyIn):
            item["snapshot"] = _snapshot(e.snapshot)
        items.append(item)
    done = await run_in_threadpool(camera_workers.record, app, who, camera, items)
    return {"results": [r.as_dict() for r in done]}
