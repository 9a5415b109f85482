"""A detached snapshot of a gallery, and the one way services look a gallery up by name."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from airside.errors import NotFoundError
from airside.store.tables import Gallery


@dataclass(frozen=True)
class GalleryView:
    """A detached snapshot of a gallery row, safe to use across transactions."""

    id: int
    name: str
    purpose: str
    contract_fingerprint: str
    contract_json: str
    quality_bar: float
    fmr_target: float


def get_gallery(session: Session, name: str) -> GalleryView:
    g = session.scalar(select(Gallery).where(Gallery.name == name))
    if g is None:
        raise NotFoundError(
            f"no gallery named {name!r}; an administrator creates it first",
            details={"next": "gallery.create"},
        )
    return view_of(g)


def view_of(g: Gallery) -> GalleryView:
    return GalleryView(
        g.id,
        g.name,
        g.purpose,
        g.contract_fingerprint,
        g.contract_json,
        g.quality_bar,
        g.fmr_target,
    )
