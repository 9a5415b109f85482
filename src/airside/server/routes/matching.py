"""1:1 verification and 1:N identification over HTTP."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from airside.errors import AirsideError
from airside.server.auth import Caller, Service
from airside.server.metrics import DECISIONS, EMBEDDINGS
from airside.server.work import Pool
from airside.services import matching
from airside.services.authz import authorize

router = APIRouter(tags=["matching"])


@router.post("/verify", summary="Compare two photos, or one photo with an enrolled subject")
async def verify(
    app: Service,
    who: Caller,
    pool: Pool,
    image_a: Annotated[UploadFile | None, File()] = None,
    image_b: Annotated[UploadFile | None, File()] = None,
    image: Annotated[UploadFile | None, File()] = None,
    subject: Annotated[str | None, Form()] = None,
    gallery: Annotated[str | None, Form()] = None,
    purpose: Annotated[str | None, Form()] = None,
    fmr: Annotated[float | None, Form(gt=0, lt=1)] = None,
) -> dict[str, object]:
    if image_a is not None and image_b is not None and image is None and subject is None:
        a, b = await image_a.read(), await image_b.read()
        res = await pool.run(matching.verify_images, app, who, a, b, fmr=fmr)
    elif image is not None and subject and gallery and image_a is None and image_b is None:
        probe = await image.read()
        res = await pool.run(matching.verify_subject, app, who, gallery, subject, probe,
                             fmr=fmr, purpose=purpose)  # fmt: skip
    else:  # a caller without the right is refused before being told how to ask
        await pool.run(authorize, app, who, "verify")
        raise AirsideError(
            "give two photos (image_a and image_b), or one photo (image) with the subject "
            "and gallery to compare it with",
            code="validation", details={"fields": ["image_a", "image_b", "image", "subject",
                                                   "gallery"]},
        )  # fmt: skip
    DECISIONS.labels("verify", "match" if res.match else "no_match").inc()
    EMBEDDINGS.labels("verify").inc(2 if image is None else 1)
    return res.as_dict()


@router.post("/galleries/{name}/identify", summary="Search a gallery for the face in a photo")
async def identify(
    name: str,
    app: Service,
    who: Caller,
    pool: Pool,
    image: Annotated[UploadFile, File()],
    top_k: Annotated[int, Form(ge=1, le=100)] = 5,
    purpose: Annotated[str | None, Form()] = None,
) -> dict[str, object]:
    probe = await image.read()
    res = await pool.run(matching.identify, app, who, name, probe, k=top_k, purpose=purpose)
    DECISIONS.labels("identify", "match" if res.match else "no_match").inc()
    EMBEDDINGS.labels("identify").inc()
    return res.as_dict()
