"""Enrolment: a template is stored only with a legal basis covering the gallery's purpose."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from airside.errors import AirsideError, ConflictError
from airside.governance import audit, consent, pseudonyms
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.governance.template_protection import TemplateProtector
from airside.services.app import Airside
from airside.services.authz import authorize_gallery
from airside.services.captures import (
    Capture,
    ImageSource,
    Refusal,
    capture_many,
    embed_captures,
)
from airside.services.gallery_view import GalleryView, get_gallery
from airside.store.tables import Gallery, Subject
from airside.store.tables import Template as TemplateRow
from airside.vision.contract import EmbeddingContract, Template


class EnrolmentRefused(AirsideError):
    """One or more captures were refused; nothing was written."""

    code = "enrolment_refused"

    def __init__(self, message: str, refusals: list[Refusal]) -> None:
        super().__init__(message)
        self.refusals = refusals


@dataclass
class EnrolResult:
    subject: str
    gallery: str
    templates: int
    added: int
    already_enrolled: int
    qualities: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "gallery": self.gallery,
            "templates": self.templates,
            "added": self.added,
            "already_enrolled": self.already_enrolled,
            "qualities": [round(q, 1) for q in self.qualities],
        }


@dataclass(frozen=True)
class EnrolRow:
    subject: str
    image: ImageSource
    basis: BasisInput | None = None


@dataclass
class BatchResult:
    enrolled: list[EnrolResult]
    refused: list[tuple[int, str, Refusal]]  # (row number, subject, refusal)

    def as_dict(self) -> dict[str, object]:
        return {
            "enrolled": [r.as_dict() for r in self.enrolled],
            "refused": [{"row": n, "subject": s, **r.as_dict()} for n, s, r in self.refused],
        }


def _on_row(n: int, subject: str, r: Refusal) -> Refusal:
    return Refusal(r.source, r.code, f"row {n} ({subject}): {r.message}", r.reasons)


def _subject(session: Session, reference: str) -> Subject:
    subj = session.scalar(select(Subject).where(Subject.reference == reference))
    if subj is None:
        subj = Subject(reference=reference)
        session.add(subj)
        session.flush()
    return subj


def _validate_reference(reference: str) -> str:
    # The rule (printable, no separators, bounded) lives in governance/identifiers.py.
    from airside.governance.identifiers import validate_reference

    return validate_reference(reference)


def write_subject(
    session: Session,
    principal: Principal,
    gallery: GalleryView,
    contract: EmbeddingContract,
    subject_ref: str,
    basis: BasisInput | None,
    captures: Sequence[Capture],
    vectors: np.ndarray,
    protector: TemplateProtector,
) -> tuple[EnrolResult, list[tuple[int, np.ndarray]]]:
    """Store one subject's templates in ``session``; returns the result and (template id,
    vector) to index. Requires a legal basis covering the gallery's purpose (``basis`` is
    recorded first when given); audits the enrolment in the same transaction. Callers
    have authorised the request and checked ``contract`` is the gallery's."""
    subj = _subject(session, subject_ref)
    if basis is not None:
        consent.record_basis(session, subj, gallery.purpose, basis, principal.name)
    legal = consent.require_basis(session, subj, gallery.purpose)
    # Templates are stored in the gallery's secret transform and encrypted when a template
    # key is in force; a missing or wrong key refuses here, before anything is written.
    writer = protector.writer(session, gallery.id, contract.dim, gallery.name)
    added: list[tuple[int, np.ndarray]] = []
    existing = 0
    for cap, vec in zip(captures, vectors, strict=True):
        row = session.scalar(
            select(TemplateRow).where(
                TemplateRow.gallery_id == gallery.id, TemplateRow.source_sha256 == cap.sha256
            )
        )
        if row is not None:
            if row.subject_id != subj.id:
                raise ConflictError(
                    f"{cap.source}: this image is already enrolled in {gallery.name!r} "
                    "for another subject"
                )
            existing += 1
            continue
        tpl = Template.from_embedding(vec, contract)
        blob, key_id = writer.encode(
            tpl.vector,
            subject_id=subj.id,
            fingerprint=contract.fingerprint,
            source_sha256=cap.sha256,
        )
        row = TemplateRow(
            gallery_id=gallery.id,
            subject_id=subj.id,
            legal_basis_id=legal.id,
            contract_fingerprint=contract.fingerprint,
            dim=contract.dim,
            vector=blob,
            key_id=key_id,
            quality=cap.face.quality.score,
            source_sha256=cap.sha256,
        )
        session.add(row)
        session.flush()
        added.append((row.id, tpl.vector))
    if added:
        session.execute(
            update(Gallery).where(Gallery.id == gallery.id).values(revision=Gallery.revision + 1)
        )
    total = int(
        session.scalar(
            select(func.count())
            .select_from(TemplateRow)
            .where(TemplateRow.gallery_id == gallery.id, TemplateRow.subject_id == subj.id)
        )
        or 0
    )
    audit.append(
        session,
        principal,
        "enrol",
        decision="enrolled" if added else "already_enrolled",
        purpose=gallery.purpose,
        gallery=gallery.name,
        input_digest=[audit.subject_digest(subj.audit_salt, c.sha256) for c in captures],
        result={
            # By pseudonym: erasing the subject unlinks this record (governance/pseudonyms.py).
            "subject": pseudonyms.pseudonym(subj.audit_salt),
            "added": [tid for tid, _ in added],
            "existing": existing,
            "basis": legal.kind,
        },
    )
    result = EnrolResult(
        subject=subj.reference,
        gallery=gallery.name,
        templates=total,
        added=len(added),
        already_enrolled=existing,
        qualities=[c.face.quality.score for c in captures],
    )
    return result, added


def _index_added(app: Airside, gallery: GalleryView, added: list[tuple[int, np.ndarray]]) -> None:
    """Bring the in-memory index up to date with what was just committed."""
    if added:
        with app.session() as s:
            app.index_after_commit(s, gallery)


def enrol(
    app: Airside,
    principal: Principal,
    gallery_name: str,
    subject_ref: str,
    images: Sequence[ImageSource],
    basis: BasisInput | None = None,
) -> EnrolResult:
    """Enrol one subject from one or more photos, all or nothing."""
    subject_ref = _validate_reference(subject_ref)
    if not images:
        raise ValueError("give at least one image")
    if basis is not None:
        basis.validate()
    gallery = authorize_gallery(app, principal, "enrol", gallery_name)
    try:
        analyzer = app.analyzer_for(gallery.contract_fingerprint)
        contract = analyzer.contract
        results = capture_many(
            analyzer,
            images,
            max_pixels=app.settings.max_image_pixels,
            quality_bar=gallery.quality_bar,
        )
        refusals = [r for r in results if isinstance(r, Refusal)]
        if refusals:
            raise EnrolmentRefused("; ".join(r.message for r in refusals), refusals)
        captures = [r for r in results if isinstance(r, Capture)]
        vectors = embed_captures(analyzer, captures)
        with app.session() as s:
            gallery = get_gallery(s, gallery_name)
            result, added = write_subject(
                s,
                principal,
                gallery,
                contract,
                subject_ref,
                basis,
                captures,
                vectors,
                app.template_protector,
            )
    except AirsideError as e:
        app.audit_refusal(
            principal, "enrol", e, purpose=gallery.purpose, gallery=gallery.name, about=subject_ref
        )
        raise
    _index_added(app, gallery, added)
    return result


def check_photo(
    app: Airside, principal: Principal, gallery_name: str, image: ImageSource
) -> dict[str, object]:
    """The quality verdict an enrolment of ``image`` into ``gallery_name`` would meet, and
    its reasons, before anything is saved (the desk shows it before the officer enrols).
    Nothing is stored but the audit record, which names the photo by keyed digest only."""
    gallery = authorize_gallery(app, principal, "enrol", gallery_name)
    (result,) = capture_many(
        app.analyzer_for(gallery.contract_fingerprint), [image],
        max_pixels=app.settings.max_image_pixels, quality_bar=gallery.quality_bar,
    )  # fmt: skip
    if isinstance(result, Refusal):
        verdict: dict[str, object] = {
            "ok": False, "code": result.code, "message": result.message, "reasons": result.reasons
        }  # fmt: skip
        digest = None
    else:
        q = result.face.quality
        verdict = {"ok": True, "quality": round(q.score, 1), "reasons": q.reasons}
        digest = app.probe_digest(result.sha256)
    verdict["quality_bar"] = gallery.quality_bar
    with app.session() as s:
        audit.append(
            s, principal, "enrol.check", decision="passed" if verdict["ok"] else "would_refuse",
            purpose=gallery.purpose, gallery=gallery.name, input_digest=digest,
            result={k: v for k, v in verdict.items() if k in ("ok", "quality", "code")},
        )  # fmt: skip
    return verdict


def enrol_batch(
    app: Airside,
    principal: Principal,
    gallery_name: str,
    rows: Sequence[EnrolRow],
    *,
    skip_refused: bool = False,
    progress: Callable[[int], None] | None = None,
) -> BatchResult:
    """Enrol many subjects. By default all or nothing; with ``skip_refused`` the good rows
    are enrolled and the refused ones listed."""
    gallery = authorize_gallery(app, principal, "enrol.batch", gallery_name)
    analyzer = app.analyzer_for(gallery.contract_fingerprint)
    contract = analyzer.contract
    refused: list[tuple[int, str, Refusal]] = []
    good: list[tuple[int, EnrolRow, Capture]] = []
    seen: dict[str, tuple[str, int]] = {}
    valid: list[tuple[int, str, EnrolRow]] = []
    for n, row in enumerate(rows, start=1):
        try:
            ref = _validate_reference(row.subject)
            if row.basis is not None:
                row.basis.validate()
        except (ValueError, AirsideError) as e:
            refused.append((n, row.subject, Refusal(str(row.image), "bad_row", str(e))))
            if progress:
                progress(1)
            continue
        valid.append((n, ref, row))
    results = capture_many(
        analyzer,
        [row.image for _, _, row in valid],
        max_pixels=app.settings.max_image_pixels,
        quality_bar=gallery.quality_bar,
        progress=progress,
        threads=app.settings.capture_threads or os.cpu_count() or 1,
    )
    for (n, ref, row), res in zip(valid, results, strict=True):
        if isinstance(res, Refusal):
            refused.append((n, ref, res))
            continue
        other = seen.get(res.sha256)
        if other is not None and other[0] != ref:
            # Named by row, not by the other subject's reference: the audit keeps this
            # message, and it must not name a person who is not the row's subject.
            message = f"{res.source}: same image as row {other[1]} (another subject)"
            refused.append((n, ref, Refusal(res.source, "conflict", message)))
            continue
        seen.setdefault(res.sha256, (ref, n))
        good.append((n, EnrolRow(ref, row.image, row.basis), res))

    if refused and not skip_refused:
        err = EnrolmentRefused(
            f"{len(refused)} of {len(rows)} rows refused; nothing was enrolled "
            "(a batch that skips refused rows enrols the good ones)",
            [_on_row(n, s, r) for n, s, r in sorted(refused, key=lambda t: t[0])],
        )
        err.details = {"field": "skip_refused"}
        app.audit_refusal(
            principal,
            "enrol.batch",
            err,
            purpose=gallery.purpose,
            gallery=gallery.name,
            extra={"refused_rows": [n for n, _, _ in refused]},
        )
        raise err

    vectors = embed_captures(analyzer, [c for _, _, c in good])
    by_subject: dict[str, list[int]] = {}
    for i, (_, row, _) in enumerate(good):
        by_subject.setdefault(row.subject, []).append(i)
    enrolled: list[EnrolResult] = []
    all_added: list[tuple[int, np.ndarray]] = []
    try:
        _write_batch(
            app,
            principal,
            gallery_name,
            contract,
            good,
            vectors,
            by_subject,
            skip_refused,
            enrolled,
            all_added,
            refused,
        )
    except AirsideError as e:
        redacted = e
        with app.session(readonly=True) as s:
            for ref in by_subject:  # the message may name the subject it stopped at
                redacted = pseudonyms.redact(redacted, ref, pseudonyms.of_reference(s, ref))
        app.audit_refusal(
            principal, "enrol.batch", redacted, purpose=gallery.purpose, gallery=gallery.name
        )
        raise
    _index_added(app, gallery, all_added)
    refused.sort(key=lambda t: t[0])
    for n, subject_ref, r in refused:
        # The image's file name can name the person too: the record says "row N" instead.
        message = r.message.replace(str(r.source), f"row {n}")
        app.audit_refusal(
            principal,
            "enrol",
            EnrolmentRefused(message, [r]),
            purpose=gallery.purpose,
            gallery=gallery.name,
            extra={"row": n, "code": r.code},
            about=subject_ref,
        )
    return BatchResult(enrolled=enrolled, refused=refused)


def _write_batch(
    app: Airside,
    principal: Principal,
    gallery_name: str,
    contract: EmbeddingContract,
    good: list[tuple[int, EnrolRow, Capture]],
    vectors: np.ndarray,
    by_subject: dict[str, list[int]],
    skip_refused: bool,
    enrolled: list[EnrolResult],
    all_added: list[tuple[int, np.ndarray]],
    refused: list[tuple[int, str, Refusal]],
) -> None:
    with app.session() as s:
        gallery = get_gallery(s, gallery_name)
        for subject_ref, idxs in by_subject.items():
            basis = next((good[i][1].basis for i in idxs if good[i][1].basis), None)
            try:
                with s.begin_nested():
                    res, added = write_subject(
                        s,
                        principal,
                        gallery,
                        contract,
                        subject_ref,
                        basis,
                        [good[i][2] for i in idxs],
                        vectors[idxs],
                        app.template_protector,
                    )
            except AirsideError as e:
                if not skip_refused:
                    raise
                for i in idxs:
                    ref = Refusal(good[i][2].source, e.code, str(e))
                    refused.append((good[i][0], subject_ref, ref))
                continue
            enrolled.append(res)
            all_added.extend(added)
