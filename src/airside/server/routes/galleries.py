"""Galleries, their subjects, and enrolment (multipart photos with the legal basis)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from pydantic import BaseModel, Field

from airside.errors import AirsideError
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.server.auth import Caller, Service, allowed
from airside.server.uploads import read_images
from airside.server.work import Pool
from airside.services import enrolment, galleries, subjects

router = APIRouter(tags=["galleries"])


class GalleryIn(BaseModel):
    name: str = Field(examples=["boarding-KE123-2026-12-03"], pattern=galleries.NAME_PATTERN)
    purpose: str = Field(examples=["boarding:KE123"], pattern=r"\S", max_length=200)
    departs: datetime | None = Field(None, description="Departure: templates are purged after it")
    retain_until: datetime | None = None
    retain_seconds: int | None = Field(None, gt=0)
    fmr: float | None = Field(None, gt=0, lt=1, description="The FMR target of decisions")
    quality_bar: float | None = Field(None, ge=0, le=100)
    embedder: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="sface (default), dlib, fused (high-assurance 1:1) or a registered model",
    )  # fmt: skip
    index: Literal["exact", "pq", "hnsw", "milvus"] | None = Field(
        None, description="What answers its searches (default: the installation's, auto by size)"
    )


def _page(items: list[Any], offset: int, limit: int) -> dict[str, Any]:
    return {"total": len(items), "offset": offset, "limit": limit,
            "items": items[offset : offset + limit]}  # fmt: skip


Offset = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.post("/galleries", status_code=201, summary="Create a purpose-bound gallery")
async def create_gallery(
    body: GalleryIn, app: Service, who: Annotated[Principal, allowed("gallery.create")], pool: Pool
) -> dict[str, object]:
    try:
        info = await pool.run(
            galleries.create_gallery, app, who, body.name, body.purpose,
            quality_bar=body.quality_bar, fmr_target=body.fmr,
            retain_seconds=body.retain_seconds, retain_until=body.retain_until,
            departs=body.departs, embedder=body.embedder, index=body.index,
        )  # fmt: skip
    except ValueError as e:  # a value the service refuses (a retention end already past...)
        raise AirsideError(str(e), code="validation") from None
    return info.as_dict()


@router.get("/galleries", summary="The galleries the caller's scopes reach (paged)")
async def list_galleries(app: Service, who: Caller, pool: Pool, offset: Offset = 0,
                         limit: Limit = 100) -> dict[str, Any]:  # fmt: skip
    found = await pool.run(galleries.list_galleries, app, who)
    return _page([g.as_dict() for g in found], offset, limit)


@router.get("/galleries/{name}/subjects", summary="The subjects enrolled in a gallery (paged)")
async def list_subjects(name: str, app: Service, who: Caller, pool: Pool,
                        offset: Offset = 0, limit: Limit = 100) -> dict[str, Any]:  # fmt: skip
    found = await pool.run(subjects.list_subjects, app, who, name)
    return _page([s.as_dict() for s in found], offset, limit)


@router.post(
    "/galleries/{name}/quality",
    summary="The quality verdict a photo would meet in this gallery (nothing is saved)",
)
async def check_quality(
    name: str,
    app: Service,
    who: Annotated[Principal, allowed("enrol")],
    pool: Pool,
    image: Annotated[UploadFile, File(description="The photo to check")],
) -> dict[str, object]:
    (photo,) = await read_images([image])
    verdict: dict[str, object] = await pool.run(enrolment.check_photo, app, who, name, photo)
    return verdict


@router.post(
    "/galleries/{name}/subjects/{subject}/enrolments", status_code=201,
    summary="Enrol a subject from one or more photos, with the legal basis",
)  # fmt: skip
async def enrol(
    name: str,
    subject: str,
    app: Service,
    who: Annotated[Principal, allowed("enrol")],
    pool: Pool,
    image: Annotated[list[UploadFile], File(description="One or more photos")],
    basis: Annotated[str, Form(description="consent, contract, legal_obligation, ...")],
    basis_ref: Annotated[str | None, Form()] = None,
    expires: Annotated[datetime | None, Form()] = None,
) -> dict[str, object]:
    photos = await read_images(image)
    res = await pool.run(
        enrolment.enrol, app, who, name, subject, photos,
        BasisInput(basis, reference=basis_ref, expires_at=expires),
    )  # fmt: skip
    return {**res.as_dict(), "refused": []}
