"""Supervised cameras: their status, and (administrators only) adding, removing and
restarting them. Changes are audited as the caller (``services.cameras``); a camera added
here is also written to the server's cameras file, when it was started with one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from airside.errors import AirsideError
from airside.governance.principals import Principal
from airside.server.auth import Caller, Service
from airside.server.cameras.config import CameraConfig
from airside.server.cameras.supervisor import CameraSupervisor
from airside.services import cameras as camera_admin
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
