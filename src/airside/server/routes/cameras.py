"""Supervised cameras: their status, and (administrators only) adding, removing and
restarting them. Changes are audited as the caller (``services.cameras``); a camera added
here is also written to the server's cameras file, when it was started with one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from airside.errors import AirsideError
from airside.governance.principals import Principal
from airside.server.auth import Caller, Service
from airside.server.cameras.config import CameraConfig
from airside.server.cameras.supervisor import CameraSupervisor
from airside.services import cameras as camera_admin
from airside.services import scenes
from airside.services.app import Airside
from airside.video.sources import safe_spec

router = APIRouter(tags=["cameras"])


def supervisor_of(request: Request) -> CameraSupervisor:
    sup: CameraSupervisor | None = getattr(request.app.state, "cameras", None)
    if sup is None:
        raise AirsideError("this server supervises no cameras", code="not_ready")
    return sup


@router.get("/cameras", summary="Every camera and its status")
async def list_cameras(request: Request, app: Service, who: Caller) -> dict[str, Any]:
    await run_in_threadpool(camera_admin.authorize_listing, app, who)
    items = supervisor_of(request).statuses()
    return {"total": len(items), "items": items}


@router.get("/cameras/{name}", summary="One camera's status")
async def get_camera(name: str, request: Request, app: Service, who: Caller) -> dict[str, Any]:
    await run_in_threadpool(camera_admin.authorize_listing, app, who)
    return supervisor_of(request).status(name)


def _add(app: Airside, who: Principal, sup: CameraSupervisor, body: CameraConfig) -> Any:
    about = {"source": safe_spec(body.source), "galleries": list(body.galleries),
             "enabled": body.enabled}  # fmt: skip
    with camera_admin.change(app, who, "camera.add", body.name, about) as audited:
        camera_admin.check_source(app, body.source, remote=body.remote)
        status, persisted = sup.add(body, who)
        audited["persisted"] = persisted
    return {**status, "persisted": persisted}


@router.post("/cameras", status_code=201, summary="Add a camera and start it (admin)")
async def add_camera(
    body: CameraConfig, request: Request, app: Service, who: Caller
) -> dict[str, Any]:
    sup = supervisor_of(request)
    result: dict[str, Any] = await run_in_threadpool(_add, app, who, sup, body)
    return result


@router.put("/cameras/{name}", summary="Change a camera's settings; its worker restarts (admin)")
async def edit_camera(
    name: str, body: CameraConfig, request: Request, app: Service, who: Caller
) -> dict[str, Any]:
    sup = supervisor_of(request)

    def edit() -> dict[str, Any]:
        about = {"source": safe_spec(body.source), "galleries": list(body.galleries),
                 "enabled": body.enabled}  # fmt: skip
        with camera_admin.change(app, who, "camera.edit", name, about) as audited:
            if body.name != name:
                raise AirsideError("a camera's name cannot change: remove it and add another",
                                   code="validation", details={"field": "name"})  # fmt: skip
            camera_admin.check_source(app, body.source, remote=body.remote)
            status, persisted = sup.replace(body)
            audited["persisted"] = persisted
        return {**status, "persisted": persisted}

    return await run_in_threadpool(edit)


def _remove(app: Airside, who: Principal, sup: CameraSupervisor, name: str) -> dict[str, Any]:
    with camera_admin.change(app, who, "camera.remove", name) as audited:
        persisted = sup.remove(name)
        audited["persisted"] = persisted
    return {"name": name, "removed": True, "persisted": persisted}


@router.delete("/cameras/{name}", summary="Stop a camera and remove it (admin)")
async def remove_camera(name: str, request: Request, app: Service, who: Caller) -> dict[str, Any]:
    result: dict[str, Any] = await run_in_threadpool(
        _remove, app, who, supervisor_of(request), name
    )
    return result


def _restart(app: Airside, who: Principal, sup: CameraSupervisor, name: str) -> dict[str, Any]:
    with camera_admin.change(app, who, "camera.restart", name):
        return sup.restart(name)


@router.post("/cameras/{name}/restart", summary="Restart a camera's worker now (admin)")
async def restart_camera(name: str, request: Request, app: Service, who: Caller) -> dict[str, Any]:
    result: dict[str, Any] = await run_in_threadpool(
        _restart, app, who, supervisor_of(request), name
    )
    return result


# -- scenes: zones and lines drawn on a snapshot (administrators) --------------------------


class LineBody(BaseModel):
    points: list[tuple[float, float]] = Field(min_length=2, max_length=2)
    way_in: Literal["up", "down", "left", "right"] = Field(alias="in")


class SceneBody(BaseModel):
    zones: dict[str, list[tuple[float, float]]] = Field(
        default_factory=dict, description="Zone name -> polygon, normalised [x, y] in 0..1"
    )
    lines: dict[str, LineBody] = Field(default_factory=dict, description="Counting lines")


def _scene_path(sup: CameraSupervisor, name: str) -> Path:
    scene = sup.runner(name).camera.scene
    if not scene:
        raise AirsideError(
            f"camera {name!r} has no scene file: name one in its settings first",
            code="no_scene_file",
        )
    return Path(scene)


@router.get(
    "/cameras/{name}/snapshot", summary="One frame, faces blurred, to draw zones on (admin)"
)
async def camera_snapshot(name: str, request: Request, app: Service, who: Caller) -> Response:
    sup = supervisor_of(request)

    def take() -> bytes:
        with camera_admin.change(app, who, "camera.snapshot", name):
            camera = sup.runner(name).camera
            if camera.remote:  # its source is on the worker's machine, not this one's
                raise AirsideError(
                    f"camera {name!r} runs on a remote worker: this server cannot open its "
                    "source to take a snapshot",
                    code="remote_camera",
                )
            return scenes.snapshot_jpeg(app, camera.source)

    jpeg = await run_in_threadpool(take)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.get("/cameras/{name}/scene", summary="The zones and lines of a camera's scene (admin)")
async def get_scene(name: str, request: Request, app: Service, who: Caller) -> dict[str, Any]:
    sup = supervisor_of(request)

    def read() -> dict[str, Any]:
        camera_admin.authorize_scene(app, who)
        return scenes.drawn(_scene_path(sup, name))

    return await run_in_threadpool(read)


@router.put("/cameras/{name}/scene", summary="Save zones and lines drawn on the snapshot (admin)")
async def put_scene(
    name: str, body: SceneBody, request: Request, app: Service, who: Caller
) -> dict[str, Any]:
    sup = supervisor_of(request)
    about = {"zones": sorted(body.zones), "lines": sorted(body.lines)}

    def save() -> dict[str, Any]:
        with camera_admin.change(app, who, "camera.scene", name, about) as audited:
            path = _scene_path(sup, name)
            lines = {n: scenes.LineIn((ln.points[0], ln.points[1]), ln.way_in)
                     for n, ln in body.lines.items()}  # fmt: skip
            scenes.save_drawing(path, name, dict(body.zones), lines)
            status = sup.restart(name)  # the worker reads the scene when it starts
            audited["restarted"] = True
        return {"camera": name, "scene": scenes.drawn(path), "status": status}

    return await run_in_threadpool(save)
