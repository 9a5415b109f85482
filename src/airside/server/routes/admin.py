"""Administration, as in the CLI: principals and their scopes, API keys, purges, models and
the fair calibration. The services authorise (administrators; the auditor may list
principals) and audit every change; a key is shown once, when it is issued."""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

from fastapi import APIRouter, File, Form, Query, UploadFile
from pydantic import BaseModel, Field

from airside.biometrics.fair_calibration import FitParams
from airside.errors import AirsideError
from airside.governance.principals import Principal
from airside.server.auth import Caller, Service, allowed
from airside.server.work import Pool
from airside.services import (
    calibration_service,
    gallery_calibration,
    model_admin,
    principal_admin,
    retention,
)

router = APIRouter(tags=["admin"])

P = ParamSpec("P")
T = TypeVar("T")


def _checked(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn`` with a refused value (a ``ValueError`` the service has audited) as a
    ``bad_request`` service error, as the CLI reports it: bad input, never a 500."""

    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except AirsideError:
            raise
        except ValueError as e:
            raise AirsideError(str(e), code="bad_request") from None

    return call


# -- principals -----------------------------------------------------------------------


class ScopeIn(BaseModel):
    gallery: str = Field(examples=["boarding:*"], description="Gallery name pattern")
    purpose: str = Field("*", examples=["boarding:*"], description="Purpose pattern")


class PrincipalIn(BaseModel):
    name: str = Field(examples=["gate-agent-7"])
    role: Literal["admin", "enrolment_officer", "operator", "reviewer", "auditor", "camera"]
    scopes: list[ScopeIn] = Field(default_factory=list)


class KeyIn(BaseModel):
    expires_in_s: int | None = Field(None, gt=0, description="Lifetime in seconds (none: no end)")


Adding = Annotated[Principal, allowed("principal.add")]
Granting = Annotated[Principal, allowed("principal.grant")]


@router.get("/principals", summary="Principals, roles, scopes and keys (never the secrets)")
async def list_principals(app: Service, who: Caller, pool: Pool) -> dict[str, Any]:
    rows = await pool.run(principal_admin.list_principals, app, who)
    return {"total": len(rows), "items": [r.as_dict() for r in rows]}


@router.post("/principals", status_code=201, summary="Register a principal with a role")
async def add_principal(body: PrincipalIn, app: Service, who: Adding, pool: Pool) -> dict[str, Any]:
    scopes = [(s.gallery, s.purpose) for s in body.scopes]
    p = await pool.run(_checked(principal_admin.add_principal), app, who, body.name,
                       body.role, scopes)  # fmt: skip
    return {"name": p.name, "role": p.role,
            "scopes": [s.model_dump() for s in body.scopes]}  # fmt: skip


@router.post("/principals/{name}/grants", status_code=201, summary="Grant a gallery scope")
async def grant(
    name: str, body: ScopeIn, app: Service, who: Granting, pool: Pool
) -> dict[str, str]:
    await pool.run(_checked(principal_admin.grant), app, who, name, body.gallery, body.purpose)
    return {"principal": name, "gallery": body.gallery, "purpose": body.purpose}


@router.delete("/principals/{name}/grants", summary="Take a gallery scope away")
async def revoke_grant(
    name: str,
    app: Service,
    who: Annotated[Principal, allowed("principal.revoke")],
    pool: Pool,
    gallery: Annotated[str, Query(description="The scope's gallery pattern")],
    purpose: Annotated[str, Query(description="The scope's purpose pattern")] = "*",
) -> dict[str, str]:
    await pool.run(_checked(principal_admin.revoke_scope), app, who, name, gallery, purpose)
    return {"principal": name, "gallery": gallery, "purpose": purpose, "revoked": "scope"}


@router.post("/principals/{name}/disable", summary="Disable a principal and revoke its keys")
async def disable(name: str, app: Service, who: Caller, pool: Pool) -> dict[str, Any]:
    await pool.run(_checked(principal_admin.disable_principal), app, who, name)
    return {"principal": name, "disabled": True}


@router.post(
    "/principals/{name}/keys", status_code=201,
    summary="Issue an API key: shown in this answer only (only its hash is stored)",
)  # fmt: skip
async def issue_key(
    name: str, app: Service, who: Caller, pool: Pool, body: KeyIn | None = None
) -> dict[str, Any]:
    life = timedelta(seconds=body.expires_in_s) if body and body.expires_in_s else None
    k = await pool.run(_checked(principal_admin.issue_key), app, who, name, expires_in=life)
    return {"key_id": k.key_id, "principal": k.principal, "key": k.secret,
            "expires_at": k.expires_at}  # fmt: skip


@router.delete("/keys/{key_id}", summary="Revoke an API key")
async def revoke_key(key_id: str, app: Service, who: Caller, pool: Pool) -> dict[str, Any]:
    await pool.run(principal_admin.revoke_key, app, who, key_id)
    return {"key_id": key_id, "revoked": True}


# -- retention ------------------------------------------------------------------------


@router.post("/purge", summary="Delete what retention says is due (templates, events, audit)")
async def purge(
    app: Service,
    who: Caller,
    pool: Pool,
    dry_run: Annotated[bool, Query(description="Report what is due; delete nothing")] = False,
) -> dict[str, object]:
    return (await pool.run(retention.purge, app, who, dry_run=dry_run)).as_dict()


# -- models ---------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@router.get("/models", summary="Registered models, checked against their manifests")
async def list_models(
    app: Service, who: Annotated[Principal, allowed("model.list")], pool: Pool
) -> dict[str, Any]:
    # Listing reads the models directory only; over the network it is an administrator's
    # (``model.list``: no role but admin has it).
    rows = await pool.run(model_admin.describe_models, app.settings)
    return {"total": len(rows), "items": [r.as_dict() for r in rows],
            "device": app.settings.device}  # fmt: skip


@router.post("/models", status_code=201, summary="Add an ONNX model file you obtained")
async def add_model(
    app: Service,
    who: Annotated[Principal, allowed("model.add")],
    pool: Pool,
    file: Annotated[UploadFile, File(description="The ONNX file")],
    family: Annotated[str, Form(description="yunet, scrfd, ..., arcface, sface, generic")],
    licence: Annotated[str | None, Form(description="SPDX id or the licence's text")] = None,
    name: Annotated[str | None, Form(description="Registry name (default: the file's)")] = None,
    kind: Annotated[
        Literal["face-detector", "face-embedder", "person-detector", "pose"] | None, Form()
    ] = None,
    source: Annotated[str | None, Form(description="Where the file came from")] = None,
    version: Annotated[str, Form()] = "1",
) -> dict[str, Any]:
    # The caller is refused (and audited) before the file touches disk (``allowed``).
    # The registry keeps the file under this name (and names the model after it by default).
    filename = Path(file.filename or "").name
    if not filename.lower().endswith(".onnx"):
        filename = f"{name or filename.rsplit('.', 1)[0]}.onnx"
    filename = _UNSAFE.sub("_", filename).lstrip("._")
    if filename.lower() in ("onnx", ""):
        filename = "model.onnx"
    folder = Path(tempfile.mkdtemp(prefix="airside-model-"))
    try:
        path = folder / filename
        with path.open("wb") as f:
            while chunk := await file.read(1 << 20):
                f.write(chunk)
        m = await pool.run(
            _checked(model_admin.register_model), app, who, path, family, licence=licence,
            name=name, kind=kind, source=source or f"upload:{file.filename or filename}",
            version=version,
        )  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result: dict[str, Any] = m.model_dump(mode="json")
    return result


@router.delete("/models/{name}", summary="Remove a model (refused while galleries use it)")
async def remove_model(
    name: str,
    app: Service,
    who: Caller,
    pool: Pool,
    force: Annotated[bool, Query(description="Remove even when galleries are bound")] = False,
) -> dict[str, str]:
    m = await pool.run(model_admin.unregister_model, app, who, name, force=force)
    return {"removed": m.name, "sha256": m.sha256}


# -- fair calibration -----------------------------------------------------------------


class FitIn(BaseModel):
    local_clusters: int = Field(40, ge=1, le=1000)
    clusters: int = Field(40, ge=1, le=1000)
    dims: int = Field(4, ge=1, le=64)
    restarts: int = Field(4, ge=1, le=64)


def _finite(summary: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: a number that is not one is null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in summary.items()}  # fmt: skip


@router.get("/calibration", summary="The fair calibration the model in use applies, if any")
async def show_calibration(app: Service, who: Caller, pool: Pool) -> dict[str, Any]:
    found = await pool.run(calibration_service.installed, app, who)
    return {"installed": None if found is None else _finite(found.as_dict())}


@router.delete("/calibration", summary="Stop applying the fair calibration")
async def remove_calibration(app: Service, who: Caller, pool: Pool) -> dict[str, bool]:
    return {"removed": await pool.run(calibration_service.remove, app, who)}


@router.post(
    "/calibration/gallery/{name}", status_code=201,
    summary="Fit and install the fair calibration on a gallery's enrolled subjects",
)  # fmt: skip
async def build_calibration(
    name: str, app: Service, who: Caller, pool: Pool, body: FitIn | None = None
) -> dict[str, Any]:
    fit = body or FitIn()
    params = FitParams(local_clusters=fit.local_clusters, clusters=fit.clusters, dims=fit.dims,
                       restarts=fit.restarts)  # fmt: skip
    summary = await pool.run(calibration_service.build_from_gallery, app, who, name,
                             params=params)  # fmt: skip
    return _finite(summary.as_dict())


# -- a gallery's own fair calibration (services/calibration_service.py, own=True) -----------


@router.get("/galleries/{name}/fair-calibration",
            summary="The gallery's own fair calibration, if any")  # fmt: skip
async def show_gallery_fair(name: str, app: Service, who: Caller, pool: Pool) -> dict[str, Any]:
    found = await pool.run(calibration_service.installed_own, app, who, name)
    return {"installed": None if found is None else _finite(found.as_dict())}


@router.post(
    "/galleries/{name}/fair-calibration", status_code=201,
    summary="Fit the gallery's own fair calibration on its enrolled subjects (used by "
    "decisions against this gallery only)",
)  # fmt: skip
async def build_gallery_fair(
    name: str, app: Service, who: Caller, pool: Pool, body: FitIn | None = None
) -> dict[str, Any]:
    fit = body or FitIn()
    params = FitParams(local_clusters=fit.local_clusters, clusters=fit.clusters, dims=fit.dims,
                       restarts=fit.restarts)  # fmt: skip
    summary = await pool.run(calibration_service.build_from_gallery, app, who, name,
                             params=params, own=True)  # fmt: skip
    return _finite(summary.as_dict())


@router.delete("/galleries/{name}/fair-calibration",
               summary="Stop applying the gallery's own fair calibration")  # fmt: skip
async def remove_gallery_fair(name: str, app: Service, who: Caller, pool: Pool) -> dict[str, bool]:
    return {"removed": await pool.run(calibration_service.remove_own, app, who, name)}


# -- a gallery's own FMR table (services/gallery_calibration.py) ---------------------------


@router.get("/galleries/{name}/calibration",
            summary="The gallery's own FMR table, fitted on its subjects, if any")  # fmt: skip
async def show_gallery_table(name: str, app: Service, who: Caller, pool: Pool) -> dict[str, Any]:
    found = await pool.run(gallery_calibration.gallery_table, app, who, name)
    return {"installed": None if found is None else _finite(found.as_dict())}


@router.post("/galleries/{name}/calibration", status_code=201,
             summary="Fit the gallery's own FMR table on its enrolled subjects")  # fmt: skip
async def fit_gallery_table(name: str, app: Service, who: Caller, pool: Pool) -> dict[str, Any]:
    summary = await pool.run(gallery_calibration.fit_gallery_table, app, who, name)
    return _finite(summary.as_dict())


@router.delete("/galleries/{name}/calibration",
               summary="Stop using the gallery's own FMR table")  # fmt: skip
async def remove_gallery_table(name: str, app: Service, who: Caller, pool: Pool) -> dict[str, bool]:
    return {"removed": await pool.run(gallery_calibration.remove_gallery_table, app, who, name)}
