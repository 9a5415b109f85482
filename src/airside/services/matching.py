"""Verification (1:1) and identification (1:N) with thresholds set as false-match rates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from airside.biometrics.calibration import CalibrationTable, resolve_calibration
from airside.biometrics.fair_calibration import (
    RAW,
    FairCalibration,
    ImageStats,
    load_fair_calibration,
)
from airside.biometrics.index import GalleryIndex, Hit
from airside.errors import AirsideError, NotFoundError
from airside.governance import audit, consent, pseudonyms
from airside.governance.gallery_transform import GalleryTransform
from airside.governance.identifiers import validate_reference
from airside.governance.principals import Principal
from airside.governance.template_protection import StoredTemplate
from airside.services.app import Airside
from airside.services.authz import authorize, authorize_gallery
from airside.services.calibration_service import OwnFairCalibration, own_fair_calibration
from airside.services.captures import Capture, ImageSource, Refusal, capture, embed_captures
from airside.services.gallery_calibration import ORIGIN_PREFIX, table_of
from airside.services.gallery_view import GalleryView
from airside.services.review import open_case, requires_review
from airside.store.tables import Subject
from airside.store.tables import Template as TemplateRow
from airside.vision.analyzer import FaceAnalyzer, FacePolicy
from airside.vision.contract import EmbeddingContract, Template, require_same, similarity


class CaptureRefused(AirsideError):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message, code=refusal.code)
        self.refusal = refusal


@dataclass
class VerifyResult:
    score: float
    match: bool
    threshold: float
    fmr_target: float
    qualities: list[float] = field(default_factory=list)
    # Which calibration produced ``score`` (and ``threshold``): "none" for the raw similarity
    # against the model's table, else the fair calibration's name (docs/fairness.md):
    # "gallery:<gallery>/<name>" for a gallery's own.
    calibration: str = RAW
    # Which FMR -> threshold table set ``threshold`` (``_table``): "gallery:<name>" (the
    # gallery's own, fitted on its subjects: in the domain it decides in), "deployment"
    # (the data directory's), "shipped:<model>" (fitted on LFW web photos), "fair:<name>".
    threshold_table: str = ""
    threshold_in_domain: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "score": round(self.score, 6),
            "match": self.match,
            "threshold": round(self.threshold, 6),
            "fmr_target": self.fmr_target,
            "qualities": [round(q, 1) for q in self.qualities],
            "calibration": self.calibration,
            "threshold_table": self.threshold_table,
            "threshold_in_domain": self.threshold_in_domain,
        }


@dataclass
class Candidate:
    subject: str
    score: float


@dataclass
class IdentifyResult:
    match: bool
    candidates: list[Candidate]
    threshold: float
    fpir_target: float
    comparison_fmr: float
    gallery_size: int
    quality: float
    # Watchlist hits are not actionable until two reviewers confirm the case.
    review_case: int | None = None
    calibration: str = RAW  # as in VerifyResult
    threshold_table: str = ""  # as in VerifyResult
    threshold_in_domain: bool = False

    @property
    def actionable(self) -> bool:
        return self.match and self.review_case is None

    def as_dict(self) -> dict[str, object]:
        return {
            "match": self.match,
            "actionable": self.actionable,
            "review_case": self.review_case,
            "subject": self.candidates[0].subject if self.match else None,
            "candidates": [
                {"subject": c.subject, "score": round(c.score, 6)} for c in self.candidates
            ],
            "threshold": round(self.threshold, 6),
            "fpir_target": self.fpir_target,
            "comparison_fmr": self.comparison_fmr,
            "gallery_size": self.gallery_size,
            "quality": round(self.quality, 1),
            "calibration": self.calibration,
            "threshold_table": self.threshold_table,
            "threshold_in_domain": self.threshold_in_domain,
        }


def _own_fair(
    app: Airside, contract: EmbeddingContract, gallery: GalleryView, s: Session | None = None
) -> FairCalibration | None:
    """The gallery's own fair calibration, if one is fitted for the gallery's contract and
    that is ``contract`` (``s``: the caller's transaction, where it has one)."""
    if gallery.contract_fingerprint != contract.fingerprint:
        return None
    if s is None:
        with app.session(readonly=True) as own_s:
            return own_fair_calibration(own_s, gallery)
    return own_fair_calibration(s, gallery)


def _fair(
    app: Airside,
    contract: EmbeddingContract,
    gallery: GalleryView | None = None,
    s: Session | None = None,
) -> FairCalibration | None:
    """The fair calibration of a decision, if any: for one against ``gallery``, the
    gallery's own (services/calibration_service.py) first, then the one installed for
    ``contract``. Scores are then calibrated before thresholding, and thresholds come from
    its table."""
    own = None if gallery is None else _own_fair(app, contract, gallery, s)
    return own if own is not None else load_fair_calibration(contract, app.settings.data_dir)


@dataclass(frozen=True)
class _Thresholds:
    """The FMR -> threshold table a decision reads, and its name in results and records."""

    table: CalibrationTable
    name: str
    in_domain: bool = False

    def threshold_for(self, fmr: float) -> float:
        """The table's threshold for ``fmr``; an FMR it cannot set (finer than its pairs
        resolve) is refused as a bad request, naming the table, for the caller to audit."""
        try:
            return self.table.threshold_for(fmr)
        except ValueError as e:
            raise AirsideError(f"{self.name} table: {e}", code="bad_request") from None


def _table(
    app: Airside,
    contract: EmbeddingContract,
    fair: FairCalibration | None,
    gallery: GalleryView | None = None,
    s: Session | None = None,
) -> _Thresholds:
    """The table that sets a decision's threshold: the first of

    1. the fair calibration's own table, when one applies (``_fair``: the gallery's own, in
       its domain, else the one installed for ``contract``): scores are then calibrated, and
       only a table fitted on calibrated scores may threshold them;
    2. the gallery's own table (decisions against a gallery), fitted label-free on its
       subjects for its contract: in the domain it decides in (services/gallery_calibration);
    3. the deployment's table in the data directory;
    4. the table shipped for the model's weights (fitted on LFW web photos).

    ``s``: the caller's transaction, where it has one (the gallery's table is read there)."""
    if fair is not None and fair.table is not None:
        # A gallery's own was fitted on its subjects: in the domain it decides in.
        in_domain = isinstance(fair, OwnFairCalibration)
        return _Thresholds(fair.table, f"fair:{fair.name}", in_domain=in_domain)
    if gallery is not None and gallery.contract_fingerprint == contract.fingerprint:
        if s is None:
            with app.session(readonly=True) as own_s:
                own = table_of(own_s, gallery)
        else:
            own = table_of(s, gallery)
        if own is not None:
            return _Thresholds(own, f"{ORIGIN_PREFIX}{gallery.name}", in_domain=True)
    table, origin = resolve_calibration(contract, app.settings.data_dir)
    return _Thresholds(table, origin)


def _capture(
    app: Airside, src: ImageSource, policy: FacePolicy, analyzer: FaceAnalyzer | None = None
) -> Capture:
    """``src``'s face as ``analyzer`` (default: the settings' own) sees it, or refused."""
    an = app.analyzer if analyzer is None else analyzer
    res = capture(an, src, max_pixels=app.settings.max_image_pixels, policy=policy)
    if isinstance(res, Refusal):
        raise CaptureRefused(res)
    return res


def verify_images(
    app: Airside,
    principal: Principal,
    a: ImageSource,
    b: ImageSource,
    *,
    fmr: float | None = None,
    policy: FacePolicy = "single",
) -> VerifyResult:
    """Compare two photos (e.g. live capture vs document photo); nothing is stored."""
    authorize(app, principal, "verify")
    fmr_target = app.settings.default_fmr if fmr is None else fmr
    try:
        fair = _fair(app, app.analyzer.contract)
        chosen = _table(app, app.analyzer.contract, fair)
        threshold = chosen.threshold_for(fmr_target)
        caps = [_capture(app, a, policy), _capture(app, b, policy)]
    except (AirsideError, ValueError) as e:
        err = e if isinstance(e, AirsideError) else AirsideError(str(e), code="bad_request")
        app.audit_refusal(principal, "verify", err)
        raise
    va, vb = embed_captures(app.analyzer, caps)
    contract = app.analyzer.contract
    score = similarity(Template.from_embedding(va, contract), Template.from_embedding(vb, contract))
    if fair is not None:
        score = float(fair.normalise(score, fair.image_stats(va), fair.image_stats(vb))[0])
    qualities = [c.face.quality.score for c in caps]
    return _verified(
        app,
        principal,
        "verify",
        VerifyResult(
            score,
            score >= threshold,
            threshold,
            fmr_target,
            qualities,
            threshold_table=chosen.name,
            threshold_in_domain=chosen.in_domain,
        ),
        fair,
        input_digest=[app.probe_digest(c.sha256) for c in caps],
        record={"score": round(score, 6), "threshold": round(threshold, 6)},
    )


def _verified(
    app: Airside,
    principal: Principal,
    action: str,
    result: VerifyResult,
    fair: FairCalibration | None,
    *,
    input_digest: str | list[str],
    record: dict[str, object],
    purpose: str | None = None,
    gallery: str | None = None,
) -> VerifyResult:
    """``result`` named by its calibration and audited: both verifications decide the same
    way, so their records cannot drift apart."""
    if fair is not None:
        result.calibration = fair.name
    with app.session() as s:
        audit.append(
            s,
            principal,
            action,
            decision="match" if result.match else "no_match",
            purpose=purpose,
            gallery=gallery,
            input_digest=input_digest,
            result={
                **record,
                **({} if fair is None else {"calibration": fair.name}),
                "threshold_table": result.threshold_table,
                "threshold_in_domain": result.threshold_in_domain,
            },
        )
    return result


def verify_subject(
    app: Airside,
    principal: Principal,
    gallery_name: str,
    subject_ref: str,
    probe: ImageSource,
    *,
    fmr: float | None = None,
    purpose: str | None = None,
) -> VerifyResult:
    """Compare a photo with one enrolled subject (best of their templates in the gallery).

    ``purpose``, when the caller declares one, must be the gallery's."""
    subject_ref = validate_reference(subject_ref)
    gallery = authorize_gallery(app, principal, "verify.subject", gallery_name, purpose)
    fmr_target = gallery.fmr_target if fmr is None else fmr
    try:
        analyzer = app.analyzer_for(gallery.contract_fingerprint)
        with app.session() as s:
            # The gallery's own calibrations are read in this transaction, not in two more.
            fair = _fair(app, analyzer.contract, gallery, s)
            chosen = _table(app, analyzer.contract, fair, gallery, s)
            threshold = chosen.threshold_for(fmr_target)
            subj = s.scalar(select(Subject).where(Subject.reference == subject_ref))
            if subj is None:
                raise NotFoundError(f"no subject {subject_ref!r}")
            # The log names the subject by pseudonym (governance/pseudonyms.py).
            subject_ps = pseudonyms.pseudonym(subj.audit_salt)
            consent.require_basis(s, subj, gallery.purpose)
            rows = [
                StoredTemplate(*r)
                for r in s.execute(
                    select(*StoredTemplate.columns()).where(
                        TemplateRow.gallery_id == gallery.id, TemplateRow.subject_id == subj.id
                    )
                )
            ]
            if not rows:
                raise NotFoundError(f"subject {subject_ref!r} is not enrolled in {gallery_name!r}")
            # Stored templates are in the gallery's secret transform (and maybe encrypted):
            # decrypt them, and send the probe through the same transform.
            dim = EmbeddingContract.from_json(gallery.contract_json).dim
            tf = app.template_protector.gallery_transform(s, gallery.id, dim)
            refs = app.template_protector.decode(rows, dim, gallery.name)
        cap = _capture(app, probe, "single", analyzer)
    except AirsideError as e:
        app.audit_refusal(
            principal, "verify.subject", e,
            purpose=gallery.purpose, gallery=gallery.name, about=subject_ref,
        )  # fmt: skip
        raise
    q = embed_captures(analyzer, [cap])[0]
    if fair is None:
        score = float((refs @ tf.forward(q[None, :])[0]).max())
    else:
        raw = (refs @ tf.forward(q[None, :])[0]).astype(np.float64)
        ref_stats = fair.image_stats_transformed(refs, tf.forward)
        score = float(fair.normalise(raw, fair.image_stats(q), ref_stats).max())
    return _verified(
        app,
        principal,
        "verify.subject",
        VerifyResult(
            score,
            score >= threshold,
            threshold,
            fmr_target,
            [cap.face.quality.score],
            threshold_table=chosen.name,
            threshold_in_domain=chosen.in_domain,
        ),
        fair,
        input_digest=app.probe_digest(cap.sha256),
        record={"subject": subject_ps, "score": round(score, 6)},
        purpose=gallery.purpose,
        gallery=gallery.name,
    )


def identify(
    app: Airside,
    principal: Principal,
    gallery_name: str,
    probe: ImageSource,
    *,
    k: int = 5,
    fpir: float | None = None,
    policy: FacePolicy = "single",
    purpose: str | None = None,
) -> IdentifyResult:
    """Search one gallery. Open-set: the best candidate is a match only above a threshold
    chosen so that a person who is not enrolled is wrongly matched at most at rate ``fpir``
    (per-comparison FMR = FPIR / gallery size, the usual independence approximation).

    The search runs only if ``principal``'s scope covers the gallery for its purpose, and
    ``purpose``, when the caller declares one, is the gallery's."""
    if k < 1:
        raise ValueError("k must be at least 1")
    gallery = authorize_gallery(app, principal, "identify", gallery_name, purpose)
    try:
        analyzer = app.analyzer_for(gallery.contract_fingerprint)
        contract = analyzer.contract
        with app.session() as s:
            search = _prepare_search(app, s, gallery, contract, _fair(app, contract, gallery, s))
        cap = _capture(app, probe, policy, analyzer)
    except AirsideError as e:
        app.audit_refusal(principal, "identify", e, purpose=gallery.purpose, gallery=gallery.name)
        raise
    q = embed_captures(analyzer, [cap])[0]
    digest = app.probe_digest(cap.sha256)
    with app.session() as s:
        return _search_in(s, app, principal, search, q, cap.face.quality.score, digest, k, fpir)


@dataclass(frozen=True)
class Probe:
    """A face the caller already embedded (the camera pipeline embeds each track's best
    crop once): ``input_sha256`` is the SHA-256 of the crop, logged keyed, and ``context``
    (camera, track) goes into the audit record."""

    embedding: np.ndarray
    quality: float
    input_sha256: str
    context: dict[str, object] | None = None


def identify_embedding(
    app: Airside,
    principal: Principal,
    gallery_name: str,
    embedding: np.ndarray,
    *,
    contract: EmbeddingContract,
    quality: float,
    input_sha256: str,
    k: int = 5,
    fpir: float | None = None,
    purpose: str | None = None,
    context: dict[str, object] | None = None,
) -> IdentifyResult:
    """Search one gallery with one embedding the caller already computed: the same checks,
    audit and review as :func:`identify` (see :func:`identify_many`)."""
    probe = Probe(embedding, quality, input_sha256, context)
    [[result]] = identify_many(
        app, principal, [gallery_name], [probe], contract=contract, k=k, fpir=fpir,
        purpose=purpose,
    )  # fmt: skip
    return result


def identify_many(
    app: Airside,
    principal: Principal,
    gallery_names: Sequence[str],
    probes: Sequence[Probe],
    *,
    contract: EmbeddingContract,
    k: int = 5,
    fpir: float | None = None,
    purpose: str | None = None,
) -> list[list[IdentifyResult]]:
    """Search each gallery for each probe (the faces a camera identifies in one frame):
    ``result[i][j]`` is probe ``i`` in gallery ``j``.

    Each search is checked, audited and reviewed as :func:`identify` does (one record per
    probe and gallery), but the batch is one transaction, and the fair calibrations are
    looked up once for it (the contract's once, each gallery's own once), not once per
    face: a camera identifies a few faces a frame for months."""
    if k < 1:
        raise ValueError("k must be at least 1")
    galleries = [authorize_gallery(app, principal, "identify", g, purpose) for g in gallery_names]
    preparing: GalleryView | None = None
    try:
        with app.session() as s:
            searches = []
            wide: FairCalibration | None = None
            for i, gallery in enumerate(galleries):
                preparing = gallery
                if i == 0:
                    wide = _fair(app, contract)
                fair = _own_fair(app, contract, gallery, s)
                searches.append(
                    _prepare_search(app, s, gallery, contract, wide if fair is None else fair)
                )
            preparing = None
            vecs = [_probe_vector(p.embedding, contract) for p in probes]
            out = []
            for p, vec in zip(probes, vecs, strict=True):
                digest = app.probe_digest(p.input_sha256)
                out.append(
                    [
                        _search_in(s, app, principal, x, vec, p.quality, digest, k, fpir, p.context)
                        for x in searches
                    ]
                )
            return out
    except AirsideError as e:
        if preparing is not None:  # refused before any search: audited like identify's
            app.audit_refusal(
                principal, "identify", e, purpose=preparing.purpose, gallery=preparing.name
            )
        raise


def _probe_vector(embedding: np.ndarray, contract: EmbeddingContract) -> np.ndarray:
    vec = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if vec.shape[0] != contract.dim or not np.isfinite(vec).all():
        raise ValueError(f"embedding must be {contract.dim} finite numbers")
    return vec


@dataclass
class _Search:
    gallery: GalleryView
    index: GalleryIndex
    transform: GalleryTransform
    calibration: CalibrationTable
    fair: FairCalibration | None = None
    threshold_table: str = ""  # the name of ``calibration`` (``_Thresholds``)
    threshold_in_domain: bool = False


def _prepare_search(
    app: Airside,
    s: Session,
    gallery: GalleryView,
    contract: EmbeddingContract,
    fair: FairCalibration | None,
) -> _Search:
    # A missing or wrong template key refuses here (audited), when the index loads.
    ix, tf = app.index_with_transform(s, gallery)
    require_same(contract, gallery.contract_fingerprint)
    chosen = _table(app, contract, fair, gallery, s)
    return _Search(gallery, ix, tf, chosen.table, fair, chosen.name, chosen.in_domain)


# A calibrated search re-ranks the best raw candidates; it widens the raw search until no
# unseen template could beat its k-th subject, up to this many templates. Beyond that (a
# crowd of near-equal raw scores in a very large gallery) the best calibrated among these
# is taken: a true match missed there is a non-match, never a false match.
FAIR_SEARCH_LIMIT = 4096


def _fair_hits(app: Airside, s: Session, search: _Search, q: np.ndarray, k: int) -> list[Hit]:
    """Templates ranked by calibrated score, enough of them for an exact top ``k``."""
    fair = search.fair
    assert fair is not None
    probe = fair.image_stats(q)
    qt = search.transform.forward(q[None, :])
    total = len(search.index)
    want = k * 4
    while True:
        raw = search.index.search(qt, want)[0]
        if not raw:
            return []
        rows = [
            StoredTemplate(*r)
            for r in s.execute(
                select(*StoredTemplate.columns()).where(
                    TemplateRow.id.in_([h.template_id for h in raw])
                )
            )
        ]
        vecs = (
            app.template_protector.decode(rows, q.shape[0], search.gallery.name)
            if rows
            else np.zeros((0, q.shape[0]), dtype=np.float32)
        )
        at = {r.id: i for i, r in enumerate(rows)}
        owner = {r.id: r.subject_id for r in rows}
        present = [h for h in raw if h.template_id in at]  # removed meanwhile: skipped
        stats = fair.image_stats_transformed(vecs, search.transform.forward)
        idx = np.array([at[h.template_id] for h in present], dtype=np.int64)
        calibrated = fair.normalise(
            np.array([h.score for h in present], dtype=np.float64),
            probe,
            ImageStats(stats.mu[idx], stats.sigma[idx]),
        )
        hits = sorted(
            (Hit(h.template_id, float(c)) for h, c in zip(present, calibrated, strict=True)),
            key=lambda h: -h.score,
        )
        if len(raw) >= total or want >= FAIR_SEARCH_LIMIT:
            return hits
        best: dict[int, float] = {}
        for h in hits:
            best.setdefault(owner[h.template_id], h.score)
        ranked = sorted(best.values(), reverse=True)
        if len(ranked) >= k and fair.upper_bound(raw[-1].score, probe) < ranked[k - 1]:
            return hits
        want = min(want * 4, FAIR_SEARCH_LIMIT)


def _search_in(
    s: Session,
    app: Airside,
    principal: Principal,
    search: _Search,
    q: np.ndarray,
    quality: float,
    digest: str,
    k: int,
    fpir: float | None,
    context: dict[str, object] | None = None,
) -> IdentifyResult:
    """One search, its audit record and review case, in the caller's transaction."""
    gallery, ix, cal = search.gallery, search.index, search.calibration
    fpir_target = gallery.fmr_target if fpir is None else fpir
    if search.fair is None:
        # The index holds the gallery's templates in its secret transform: so must the probe.
        hits = ix.search(search.transform.forward(q[None, :]), k * 4)[0]
    else:
        hits = _fair_hits(app, s, search, q, k)
    # Every template is one comparison a non-enrolled person could falsely match.
    comparisons = len(ix)
    subject_of: dict[int, tuple[str, str]] = {
        tid: (ref, salt)
        for tid, ref, salt in s.execute(
            select(TemplateRow.id, Subject.reference, Subject.audit_salt)
            .join(Subject, Subject.id == TemplateRow.subject_id)
            .where(TemplateRow.id.in_([h.template_id for h in hits]))
        ).all()
    }
    best: dict[str, float] = {}
    salt_of: dict[str, str] = {}
    for h in hits:
        row = subject_of.get(h.template_id)
        if row is not None and row[0] not in best:
            best[row[0]] = h.score
            salt_of[row[0]] = row[1]
    candidates = [Candidate(r, sc) for r, sc in list(best.items())[:k]]
    comparison_fmr = max(fpir_target / max(1, comparisons), cal.finest_fmr)
    threshold = cal.threshold_for(comparison_fmr)
    match = bool(candidates) and candidates[0].score >= threshold
    audit.append(
        s,
        principal,
        "identify",
        decision="match" if match else "no_match",
        purpose=gallery.purpose,
        gallery=gallery.name,
        input_digest=digest,
        result={
            # Named by pseudonym: erasing a candidate unlinks this record from them.
            "candidates": [
                [pseudonyms.pseudonym(salt_of[c.subject]), round(c.score, 6)] for c in candidates
            ],
            "threshold": round(threshold, 6),
            **({} if search.fair is None else {"calibration": search.fair.name}),
            "threshold_table": search.threshold_table,
            "threshold_in_domain": search.threshold_in_domain,
            "index": ix.kind,  # which index answered (biometrics/index.py)
            **(context or {}),
        },
    )
    case_id = None
    if match and requires_review(gallery.purpose):
        case_id = open_case(
            s,
            app,
            principal,
            gallery=gallery.name,
            purpose=gallery.purpose,
            subject=candidates[0].subject,
            score=candidates[0].score,
            threshold=threshold,
            probe_digest=digest,
        ).id
    return IdentifyResult(
        match,
        candidates,
        threshold,
        fpir_target,
        comparison_fmr,
        comparisons,
        quality,
        review_case=case_id,
        calibration=RAW if search.fair is None else search.fair.name,
        threshold_table=search.threshold_table,
        threshold_in_domain=search.threshold_in_domain,
    )
