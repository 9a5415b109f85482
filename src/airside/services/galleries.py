"""Create and list purpose-bound galleries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from airside.biometrics.index import INDEX_KINDS
from airside.errors import AirsideError, ConflictError
from airside.governance import access, audit
from airside.governance.access import GalleryRef
from airside.governance.principals import Principal
from airside.services.app import Airside
from airside.services.authz import authorize
from airside.store.tables import Gallery, Template

# "@" names a migrated copy: ``G@model`` (services/migration.py).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9:._@\-]{0,199}$"
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class GalleryInfo:
    name: str
    purpose: str
    contract: str
    quality_bar: float
    fmr_target: float
    subjects: int
    templates: int
    retain_seconds: int | None = None
    retain_until: str | None = None
    # What the gallery chose ("exact", "hnsw", "milvus"), or the installation's setting.
    index: str = "auto"

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def validate_gallery_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"gallery name {name!r} must start with a letter or digit and use only "
            "letters, digits and : . _ @ -"
        )
    return name


def create_gallery(
    app: Airside,
    principal: Principal,
    name: str,
    purpose: str,
    *,
    quality_bar: float | None = None,
    fmr_target: float | None = None,
    retain_seconds: int | None = None,
    retain_until: datetime | None = None,
    departs: datetime | None = None,
    embedder: str | None = None,
    index: str | None = None,
) -> GalleryInfo:
    """Create a purpose-bound gallery. Retention: ``retain_seconds`` caps a template's age,
    ``retain_until`` ends the whole gallery; ``departs`` (a flight's departure) sets
    ``retain_until`` to departure plus the boarding retention (12 h by default). Boarding
    galleries without either keep templates at most ``boarding_default_retention_hours``.

    ``embedder`` (default: the settings') binds the gallery to that model's embedding
    contract for good: ``sface``, ``dlib``, ``fused`` (both, for high-assurance 1:1) or a
    registered model. ``index`` (default: the settings', ``auto`` by size) chooses what
    answers its searches: ``exact``, ``hnsw`` or ``milvus`` (docs/scale.md)."""
    authorize(app, principal, "gallery.create")
    if index is not None and index not in INDEX_KINDS:
        raise ValueError(f"index must be one of {', '.join(INDEX_KINDS)} (not {index!r})")
    validate_gallery_name(name)
    if not purpose.strip():
        raise ValueError("a gallery needs a purpose")
    bar = app.settings.default_quality_bar if quality_bar is None else quality_bar
    fmr = app.settings.default_fmr if fmr_target is None else fmr_target
    if not 0 <= bar <= 100:
        raise ValueError("quality bar must be between 0 and 100")
    if not 0 < fmr < 1:
        raise ValueError("target false-match rate must be between 0 and 1")
    retain_seconds, retain_until = retention_for(
        app, purpose.strip(), retain_seconds, retain_until, departs
    )
    analyzer = app.analyzer if embedder is None else app.analyzer_named(embedder)
    contract = analyzer.contract
    app.calibration(contract).threshold_for(fmr)  # refuse an FMR the calibration cannot set
    with app.session() as s:
        if s.scalar(select(Gallery.id).where(Gallery.name == name)) is not None:
            raise ConflictError(f"gallery {name!r} already exists")
        g = Gallery(
            name=name,
            purpose=purpose.strip(),
            contract_fingerprint=contract.fingerprint,
            contract_json=contract.to_json(),
            quality_bar=bar,
            fmr_target=fmr,
            retain_seconds=retain_seconds,
            retain_until=retain_until,
            index_kind=index,
        )
        s.add(g)
        s.flush()
        audit.append(
            s,
            principal,
            "gallery.create",
            decision="created",
            purpose=g.purpose,
            gallery=name,
            result={
                "contract": contract.fingerprint,
                "quality_bar": bar,
                "fmr_target": fmr,
                "retain_seconds": retain_seconds,
                "retain_until": retain_until.isoformat() if retain_until else None,
                "index": index or app.settings.index,
            },
        )
    return GalleryInfo(
        name,
        g.purpose,
        contract.fingerprint,
        bar,
        fmr,
        0,
        0,
        retain_seconds,
        retain_until.isoformat() if retain_until else None,
        index or app.settings.index,
    )


def retention_for(
    app: Airside,
    purpose: str,
    retain_seconds: int | None,
    retain_until: datetime | None,
    departs: datetime | None,
) -> tuple[int | None, datetime | None]:
    if retain_seconds is not None and retain_seconds <= 0:
        raise ValueError("retention must be a positive duration")
    if departs is not None:
        if retain_until is not None:
            raise AirsideError(
                "give a departure time or a retention end, not both",
                code="bad_request",
                details={"fields": ["departs", "retain_until"]},
            )
        departs = departs if departs.tzinfo else departs.replace(tzinfo=UTC)
        retain_until = departs + timedelta(hours=app.settings.boarding_retention_hours)
    if retain_until is not None:
        retain_until = retain_until if retain_until.tzinfo else retain_until.replace(tzinfo=UTC)
        if retain_until <= datetime.now(UTC):
            raise ValueError(f"retention end {retain_until.isoformat()} is already past")
    if purpose.startswith("boarding") and retain_seconds is None and retain_until is None:
        retain_seconds = int(app.settings.boarding_default_retention_hours * 3600)
    return retain_seconds, retain_until


def list_galleries(app: Airside, principal: Principal) -> list[GalleryInfo]:
    """The galleries the principal's scopes reach (all of them for global roles)."""
    authorize(app, principal, "gallery.list")
    with app.session() as s:
        counts = dict(
            s.execute(
                select(
                    Template.gallery_id,
                    func.count(func.distinct(Template.subject_id)),
                ).group_by(Template.gallery_id)
            ).all()
        )
        tcounts = dict(
            s.execute(select(Template.gallery_id, func.count()).group_by(Template.gallery_id)).all()
        )
        out = [
            GalleryInfo(
                g.name,
                g.purpose,
                g.contract_fingerprint,
                g.quality_bar,
                g.fmr_target,
                int(counts.get(g.id, 0)),
                int(tcounts.get(g.id, 0)),
                g.retain_seconds,
                g.retain_until.isoformat() if g.retain_until else None,
                g.index_kind or app.settings.index,
            )
            for g in s.scalars(select(Gallery).order_by(Gallery.name))
        ]
        visible = {
            g.name
            for g in access.visible_galleries(
                s, principal, [GalleryRef(i.name, i.purpose) for i in out]
            )
        }
        out = [i for i in out if i.name in visible]
        audit.append(s, principal, "gallery.list", decision="listed", result={"n": len(out)})
    return out
