"""Moving a gallery to another embedding model: what can honestly be done.

A gallery is bound to one embedding contract, and templates of different contracts are
never compared, so a new model means new templates, made from face images. Airside keeps
no source images (a template keeps only its image's SHA-256), so nothing can be re-enrolled
from what is stored. What migration does instead:

- lists every subject of the gallery who must be captured again;
- re-enrols, into a new gallery bound to the new contract (``G@model`` unless named), the
  subjects for whom the operator supplies images now (a folder or a CSV of
  subject,image). The new gallery keeps the old one's purpose, quality bar, FMR target
  and retention, so the legal basis recorded for that purpose carries over (consent is
  per purpose), and each new template keeps the retention clock of the subject's newest
  old template: migrating never extends how long anyone is kept. Subjects past retention
  are not migrated.

The old gallery is left as it is, still searchable with the old model, until its
retention purges it or the operator erases it. Running the migration again with more
images continues into the same new gallery.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from airside.config import Settings
from airside.errors import AirsideError, ConflictError
from airside.governance import audit
from airside.governance.principals import Principal
from airside.services.app import Airside
from airside.services.authz import authorize_gallery
from airside.services.captures import Capture, ImageSource, Refusal, capture_many, embed_captures
from airside.services.enrolment import write_subject
from airside.services.galleries import validate_gallery_name
from airside.services.gallery_view import GalleryView, get_gallery
from airside.store.tables import Gallery, Subject, Template
from airside.vision.analyzer import FaceAnalyzer
from airside.vision.contract import EmbeddingContract

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm"})
NO_RETAINED_IMAGE = "no retained source image (Airside keeps none): capture again"


@dataclass
class MigrationReport:
    source: str
    target: str
    model: str
    contract: str
    dry_run: bool
    created: bool = False
    # Source images Airside could re-enrol from by itself: none, it keeps no images.
    retained_images: int = 0
    reenrolled: list[str] = field(default_factory=list)
    recapture: list[dict[str, str]] = field(default_factory=list)  # subject, reason
    not_in_gallery: list[str] = field(default_factory=list)  # supplied, never enrolled

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def analyzer_for_model(settings: Settings, model: str) -> FaceAnalyzer:
    """The analyzer these settings describe with ``model`` as the embedder (``sface``: the
    default; ``dlib``: dlib's ResNet; ``fused``: both). Model files are checked against
    their manifests or published digests."""
    from airside.vision.factory import default_analyzer

    name = model.strip()
    name = name.lower() if name.lower() in ("dlib", "fused") else name
    return default_analyzer(settings.model_copy(update={"embedder_model": name}))


def images_from_dir(folder: Path) -> dict[str, list[Path]]:
    """``DIR/<subject>/*.jpg`` (any image suffix) or ``DIR/<subject>.jpg``."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    out: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            files = sorted(
                p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if files:
                out.setdefault(entry.name, []).extend(files)
        elif entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            out.setdefault(entry.stem, []).append(entry)
    if not out:
        raise ValueError(f"{folder}: no images (expected DIR/SUBJECT/*.jpg or DIR/SUBJECT.jpg)")
    return out


def images_from_csv(path: Path) -> dict[str, list[Path]]:
    """A CSV with columns subject,image (image paths relative to the CSV's folder)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    out: dict[str, list[Path]] = {}
    try:
        cols = set(reader.fieldnames or [])
        if not {"subject", "image"} <= cols:
            raise ValueError(f"{path}: needs columns subject,image (found {sorted(cols)})")
        for row in reader:
            subject = (row["subject"] or "").strip()
            raw = (row["image"] or "").strip()
            if not subject or not raw:
                raise ValueError(
                    f"{path}, line {reader.line_num}: every row needs a subject and an image"
                )
            image = Path(raw)
            out.setdefault(subject, []).append(
                image if image.is_absolute() else path.parent / image
            )
    except csv.Error as e:  # a field over csv.field_size_limit(), a stray quote...
        raise ValueError(
            f"{path}, line {reader.reader.line_num}: not a valid CSV file ({e})"
        ) from None
    if not out:
        raise ValueError(f"{path}: no rows")
    return out


def _enrolled(app: Airside, gallery: GalleryView) -> dict[str, datetime]:
    """Subject reference -> when their newest template in ``gallery`` was made."""
    with app.session() as s:
        rows = s.execute(
            select(Subject.reference, func.max(Template.created_at))
            .join(Template, Template.subject_id == Subject.id)
            .where(Template.gallery_id == gallery.id)
            .group_by(Subject.reference)
        ).all()
    return {ref: _aware(t) for ref, t in rows}


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _retention(app: Airside, gallery: GalleryView) -> tuple[int | None, datetime | None]:
    with app.session() as s:
        row = s.execute(
            select(Gallery.retain_seconds, Gallery.retain_until).where(Gallery.id == gallery.id)
        ).one()
    return row[0], None if row[1] is None else _aware(row[1])


def _past_retention(
    newest: datetime, retain_seconds: int | None, retain_until: datetime | None, now: datetime
) -> bool:
    if retain_until is not None and retain_until <= now:
        return True
    return retain_seconds is not None and newest <= now - timedelta(seconds=retain_seconds)


def _target(app: Airside, source: GalleryView, name: str, contract: EmbeddingContract) -> bool:
    """Whether the target gallery exists already (then it must fit); refuses a misfit."""
    with app.session() as s:
        g = s.scalar(select(Gallery).where(Gallery.name == name))
        if g is None:
            return False
        if g.purpose != source.purpose or g.contract_fingerprint != contract.fingerprint:
            raise ConflictError(
                f"gallery {name!r} exists with purpose {g.purpose!r} and contract "
                f"{g.contract_fingerprint}; migrating {source.name!r} needs purpose "
                f"{source.purpose!r} and contract {contract.fingerprint}: name another new gallery",
                code="gallery_exists",
                details={"field": "into"},
            )
        return True


def migrate_gallery(
    app: Airside,
    principal: Principal,
    gallery_name: str,
    model: str,
    *,
    images: Mapping[str, Sequence[ImageSource]] | None = None,
    into: str | None = None,
    dry_run: bool = False,
    analyzer: FaceAnalyzer | None = None,
) -> MigrationReport:
    """Migrate ``gallery_name`` to ``model`` (a registered embedder, or ``dlib``).

    ``images``: subject reference -> face images the operator supplies now. ``analyzer``
    replaces the one ``model`` describes (it must be what ``model`` names). Authorised as
    ``gallery.migrate`` (administrators) and audited; refusals too.
    """
    source = authorize_gallery(app, principal, "gallery.migrate", gallery_name)
    target = into or f"{source.name}@{model}"
    extra = {"model": model, "into": target}
    try:
        validate_gallery_name(target)
        an = analyzer or analyzer_for_model(app.settings, model)
        contract = an.contract
        if contract.fingerprint == source.contract_fingerprint:
            raise AirsideError(
                f"gallery {source.name!r} is already bound to {contract.fingerprint}",
                code="same_contract",
            )
        try:
            app.calibration(contract).threshold_for(source.fmr_target)
        except (FileNotFoundError, ValueError) as e:
            raise AirsideError(
                f"model {model!r} cannot set a threshold for FMR {source.fmr_target:g}: {e}. "
                "Fit its calibration table on labelled faces first",
                code="no_calibration",
                details={"next": "calibration.fit"},
            ) from e
        exists = _target(app, source, target, contract)
        report = _plan(app, source, target, model, contract, images or {}, dry_run)
        if not dry_run:
            _run(app, principal, source, target, exists, an, contract, images or {}, report)
    except AirsideError as e:
        app.audit_refusal(
            principal, "gallery.migrate", e, purpose=source.purpose, gallery=source.name,
            extra=extra,
        )  # fmt: skip
        raise
    return report


def _plan(
    app: Airside,
    source: GalleryView,
    target: str,
    model: str,
    contract: EmbeddingContract,
    images: Mapping[str, Sequence[ImageSource]],
    dry_run: bool,
) -> MigrationReport:
    """Who can be re-enrolled now (listed in ``reenrolled`` until it is done)."""
    report = MigrationReport(source.name, target, model, contract.fingerprint, dry_run)
    enrolled = _enrolled(app, source)
    retain_seconds, retain_until = _retention(app, source)
    now = datetime.now(UTC)
    report.not_in_gallery = sorted(set(images) - set(enrolled))
    for ref in sorted(enrolled):
        if _past_retention(enrolled[ref], retain_seconds, retain_until, now):
            report.recapture.append({"subject": ref, "reason": "past retention: not migrated"})
        elif images.get(ref):
            report.reenrolled.append(ref)
        else:
            report.recapture.append({"subject": ref, "reason": NO_RETAINED_IMAGE})
    return report


def _run(
    app: Airside,
    principal: Principal,
    source: GalleryView,
    target: str,
    exists: bool,
    analyzer: FaceAnalyzer,
    contract: EmbeddingContract,
    images: Mapping[str, Sequence[ImageSource]],
    report: MigrationReport,
) -> None:
    # Faces first (the expensive part), outside any transaction; a subject any of whose
    # images is refused must be captured again, as in enrolment (all or nothing).
    subjects = list(report.reenrolled)
    flat = [(ref, img) for ref in subjects for img in images[ref]]
    results = capture_many(
        analyzer,
        [img for _, img in flat],
        max_pixels=app.settings.max_image_pixels,
        quality_bar=source.quality_bar,
        threads=app.settings.capture_threads or 1,
    )
    caps: dict[str, list[Capture]] = {ref: [] for ref in subjects}
    refused: dict[str, Refusal] = {}
    for (ref, _), res in zip(flat, results, strict=True):
        if isinstance(res, Refusal):
            refused.setdefault(ref, res)
        else:
            caps[ref].append(res)
    good = [ref for ref in subjects if ref not in refused]
    vectors = embed_captures(analyzer, [c for ref in good for c in caps[ref]])
    enrolled = _enrolled(app, source)
    report.reenrolled = []
    for ref, r in refused.items():
        report.recapture.append({"subject": ref, "reason": f"image refused: {r.message}"})

    with app.session() as s:
        if not exists:
            _create_like(s, source, target, contract)
            report.created = True
        view = get_gallery(s, target)
        start = 0
        for ref in good:
            n = len(caps[ref])
            vecs = vectors[start : start + n]
            start += n
            try:
                with s.begin_nested():
                    _, added = write_subject(
                        s, principal, view, contract, ref, None, caps[ref], vecs,
                        app.template_protector,
                    )  # fmt: skip
                    # The retention clock of the subject's newest old template carries over.
                    ids = [tid for tid, _ in added]
                    if ids:
                        s.execute(
                            update(Template)
                            .where(Template.id.in_(ids))
                            .values(created_at=enrolled[ref])
                        )
            except AirsideError as e:
                report.recapture.append({"subject": ref, "reason": f"{e.code}: {e}"})
                continue
            report.reenrolled.append(ref)
        report.recapture.sort(key=lambda r: r["subject"])
        audit.append(
            s,
            principal,
            "gallery.migrate",
            decision="migrated",
            purpose=source.purpose,
            gallery=source.name,
            result={
                "into": target,
                "created": report.created,
                "model": report.model,
                "contract": contract.fingerprint,
                "from_contract": source.contract_fingerprint,
                "reenrolled": len(report.reenrolled),
                "recapture": len(report.recapture),
                "retained_images": report.retained_images,
            },
        )
    if report.reenrolled:
        with app.session() as s:
            app.index_after_commit(s, get_gallery(s, target))


def _create_like(s: Session, source: GalleryView, name: str, contract: EmbeddingContract) -> None:
    row = s.get(Gallery, source.id)
    if row is None:
        raise ConflictError(f"gallery {source.name!r} was removed meanwhile", code="not_found")
    s.add(
        Gallery(
            name=name,
            purpose=source.purpose,
            contract_fingerprint=contract.fingerprint,
            contract_json=contract.to_json(),
            quality_bar=source.quality_bar,
            fmr_target=source.fmr_target,
            retain_seconds=row.retain_seconds,
            retain_until=row.retain_until,
            index_kind=row.index_kind,  # a national gallery stays on its index (Milvus...)
        )
    )
    s.flush()
