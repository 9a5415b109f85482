"""Every kind of gallery index behaves the same above the index: enrolment adds without a
rebuild; erasure, withdrawal and purge reach the index (and, for Milvus, the backend's own
rows); re-keying rewrites it; the audit record names the index that answered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete, select
from tests.conftest import CliOnDir, jpeg_bytes, png_bytes, register

from airside.biometrics.index import GalleryIndex
from airside.config import Settings
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, erasure, galleries, matching, retention
from airside.services.app import Airside
from airside.services.template_keys import rekey_gallery
from airside.store.tables import AuditRecord, Gallery, Subject, Template
from airside.vision.analyzer import FaceAnalyzer

DPO = Principal("dpo", "admin")
KINDS = ["exact", "pq", "hnsw", "milvus"]
each_kind = pytest.mark.parametrize("kind", KINDS)


@pytest.fixture(autouse=True)
def _principals(app: Airside) -> None:
    register(app, DPO)


def _needs(kind: str) -> None:
    if kind == "milvus":
        pytest.importorskip("milvus_lite", reason="milvus-lite is a test extra (make test)")


def _enrol_two(app: Airside, kind: str, astronaut: np.ndarray, hopper: np.ndarray) -> None:
    _needs(kind)
    galleries.create_gallery(app, DPO, "national", "seamless-travel", index=kind)
    enrolment.enrol(app, DPO, "national", "P-1", [png_bytes(astronaut)], BasisInput("consent"))
    enrolment.enrol(app, DPO, "national", "P-2", [png_bytes(hopper)], BasisInput("consent"))


def _gallery_id(app: Airside, name: str = "national") -> int:
    with app.session() as s:
        gid = s.scalar(select(Gallery.id).where(Gallery.name == name))
    assert gid is not None
    return gid


def _template_ids(app: Airside, reference: str) -> list[int]:
    with app.session() as s:
        return list(
            s.scalars(
                select(Template.id)
                .join(Subject, Subject.id == Template.subject_id)
                .where(Subject.reference == reference)
            )
        )


def _loaded(app: Airside, name: str = "national") -> GalleryIndex:
    from airside.services.gallery_view import get_gallery

    with app.session() as s:
        return app.index(s, get_gallery(s, name))


def _in_backend(app: Airside, ix: GalleryIndex, template_ids: list[int]) -> set[int]:
    """Which of the ids the index's own storage still holds: for Milvus, asked of the
    Milvus collection itself, not of this process's handle."""
    if ix.kind == "milvus":
        rows = app.milvus_client().query(ix.collection, ids=template_ids, output_fields=["id"])
        return {int(r["id"]) for r in rows}
    return set(ix.ids().tolist()) & set(template_ids)


def _last_identify(app: Airside) -> dict[str, object]:
    with app.session() as s:
        rec = s.scalar(
            select(AuditRecord)
            .where(AuditRecord.action == "identify")
            .order_by(AuditRecord.seq.desc())
            .limit(1)
        )
    assert rec is not None
    result: dict[str, object] = json.loads(rec.result)
    return result


@each_kind
def test_identification_is_the_same_whichever_index_answers(
    app: Airside, kind: str, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    _enrol_two(app, kind, astronaut, hopper)
    res = matching.identify(app, DPO, "national", jpeg_bytes(astronaut, 70))
    assert res.match and res.candidates[0].subject == "P-1"
    audited = _last_identify(app)
    assert audited["index"] == ("exact-flat" if kind == "exact" else kind)
    assert audited["threshold"] == pytest.approx(res.threshold, abs=1e-6)


@each_kind
def test_enrolment_adds_to_the_index_without_rebuilding_it(
    app: Airside, kind: str, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    _needs(kind)
    galleries.create_gallery(app, DPO, "national", "seamless-travel", index=kind)
    enrolment.enrol(app, DPO, "national", "P-1", [png_bytes(astronaut)], BasisInput("consent"))
    before = _loaded(app)
    enrolment.enrol(app, DPO, "national", "P-2", [png_bytes(hopper)], BasisInput("consent"))
    after = _loaded(app)
    assert after is before
    assert len(after) == 2
    assert _in_backend(app, after, _template_ids(app, "P-2")) == set(_template_ids(app, "P-2"))


@each_kind
def test_an_erased_person_is_gone_from_the_index_and_its_backend(
    app: Airside, kind: str, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    _enrol_two(app, kind, astronaut, hopper)
    ids = _template_ids(app, "P-1")
    ix = _loaded(app)
    assert _in_backend(app, ix, ids) == set(ids)
    erasure.erase_subject(app, DPO, "P-1")
    assert _loaded(app) is ix  # replayed, not rebuilt
    assert _in_backend(app, ix, ids) == set()
    probe = matching.identify(app, DPO, "national", jpeg_bytes(astronaut, 70))
    assert not probe.match
    assert all(c.subject != "P-1" for c in probe.candidates)
    assert len(ix) == 1


@each_kind
def test_withdrawn_consent_reaches_the_index(
    app: Airside, kind: str, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    _enrol_two(app, kind, astronaut, hopper)
    ids = _template_ids(app, "P-2")
    erasure.withdraw_basis(app, DPO, "P-2", "seamless-travel")
    assert _in_backend(app, _loaded(app), ids) == set()
    assert not matching.identify(app, DPO, "national", jpeg_bytes(hopper, 70)).match


@each_kind
def test_a_retention_purge_reaches_the_index(
    app: Airside, kind: str, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    _needs(kind)
    galleries.create_gallery(app, DPO, "flight", "boarding:KE1", retain_seconds=3600, index=kind)
    enrolment.enrol(app, DPO, "flight", "P-1", [png_bytes(astronaut)], BasisInput("consent"))
    ids = _template_ids(app, "P-1")
    ix = _loaded(app, "flight")
    assert _in_backend(app, ix, ids) == set(ids)
    retention.purge(app, DPO, now=datetime.now(UTC) + timedelta(hours=2))
    assert _in_backend(app, _loaded(app, "flight"), ids) == set()
    assert len(_loaded(app, "flight")) == 0


@each_kind
def test_a_row_deleted_behind_the_services_back_leaves_the_index(
    app: Airside, kind: str, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    """A writer with database access deletes a template (no journal entry) and bumps the
    revision: the count disagrees, and the index is reconciled id by id."""
    _enrol_two(app, kind, astronaut, hopper)
    ix = _loaded(app)
    ids = _template_ids(app, "P-1")
    gallery_id = _gallery_id(app)
    with app.session() as s:
        s.execute(delete(Template).where(Template.id.in_(ids)))
        g = s.get(Gallery, gallery_id)
        assert g is not None
        g.revision += 1
    assert _in_backend(app, _loaded(app), ids) == set()
    assert len(ix) == 1


@each_kind
def test_rekeying_rewrites_the_index_in_the_new_transform(
    app: Airside, kind: str, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    _enrol_two(app, kind, astronaut, hopper)
    before = _loaded(app)
    held_before = before.search(np.eye(1, 128, dtype=np.float32), 2)[0]
    rekey_gallery(app, DPO, "national")
    after = _loaded(app)
    assert after is not before
    held_after = after.search(np.eye(1, 128, dtype=np.float32), 2)[0]
    assert [h.score for h in held_after] != pytest.approx([h.score for h in held_before])
    assert matching.identify(app, DPO, "national", jpeg_bytes(astronaut, 70)).match
    if kind == "milvus":
        names = app.milvus_client().list_collections()
        mine = [n for n in names if n.startswith(f"airside_g{_gallery_id(app)}_")]
        assert mine == [after.collection]  # the old collection was dropped


def test_auto_turns_approximate_from_the_configured_size(
    tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    app = Airside(
        Settings(data_dir=tmp_path / "auto", ann_from=2), analyzer_factory=lambda _s: analyzer
    )
    try:
        register(app, DPO)
        galleries.create_gallery(app, DPO, "national", "seamless-travel")
        enrolment.enrol(app, DPO, "national", "P-1", [png_bytes(astronaut)], BasisInput("consent"))
        assert _loaded(app).kind == "exact-flat"
        enrolment.enrol(app, DPO, "national", "P-2", [png_bytes(hopper)], BasisInput("consent"))
        assert _loaded(app).kind == "pq"
        assert matching.identify(app, DPO, "national", jpeg_bytes(hopper, 70)).match
        assert _last_identify(app)["index"] == "pq"
    finally:
        app.close()


def test_exact_galleries_scan_int8_when_the_setting_says_so(
    tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    app = Airside(
        Settings(data_dir=tmp_path / "int8", index_dtype="int8"),
        analyzer_factory=lambda _s: analyzer,
    )
    try:
        register(app, DPO)
        _enrol_two(app, "exact", astronaut, hopper)
        assert _loaded(app).kind == "exact-int8"
        res = matching.identify(app, DPO, "national", jpeg_bytes(hopper, 70))
        assert res.match and res.candidates[0].subject == "P-2"
        assert _last_identify(app)["index"] == "exact-int8"
        erasure.erase_subject(app, DPO, "P-2")
        assert not matching.identify(app, DPO, "national", jpeg_bytes(hopper, 70)).match
    finally:
        app.close()


def test_an_unknown_index_kind_is_refused(app: Airside) -> None:
    with pytest.raises(ValueError, match="index must be one of exact, pq, hnsw, milvus"):
        galleries.create_gallery(app, DPO, "national", "seamless-travel", index="lsh")


@pytest.fixture
def second_server(app: Airside, analyzer: FaceAnalyzer) -> Iterator[Airside]:
    """Another Airside on the same store and the same Milvus (a second server process:
    its own indexes, nothing shared but the store and the collection)."""
    other = Airside(app.settings, analyzer_factory=lambda _s: analyzer)
    yield other
    other.close()


def test_a_milvus_collection_is_shared_not_reuploaded_by_another_server(
    app: Airside,
    second_server: Airside,
    astronaut: np.ndarray,
    hopper: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airside.biometrics import milvus_index

    _enrol_two(app, "milvus", astronaut, hopper)
    uploaded: list[int] = []
    real_add = milvus_index.MilvusIndex.add

    def counting_add(self: milvus_index.MilvusIndex, ids: np.ndarray, v: np.ndarray) -> None:
        uploaded.extend(np.asarray(ids).tolist())
        real_add(self, ids, v)

    monkeypatch.setattr(milvus_index.MilvusIndex, "add", counting_add)
    assert matching.identify(second_server, DPO, "national", jpeg_bytes(hopper, 70)).match
    assert uploaded == []  # the second server found the collection full
    # It erases; the first server's next search sees the row gone from the collection.
    ids = _template_ids(app, "P-2")
    erasure.erase_subject(second_server, DPO, "P-2")
    assert _in_backend(app, _loaded(app), ids) == set()
    assert not matching.identify(app, DPO, "national", jpeg_bytes(hopper, 70)).match


def test_the_cli_creates_a_gallery_on_the_index_it_names(cli_on_dir: CliOnDir) -> None:
    made = cli_on_dir("gallery", "create", "national", "--purpose", "travel", "--index", "hnsw")
    assert made.exit_code == 0, made.output
    listed = cli_on_dir("galleries", "--json")
    assert [g["index"] for g in json.loads(listed.output)] == ["hnsw"]
    refused = cli_on_dir("gallery", "create", "g2", "--purpose", "p", "--index", "lsh")
    assert refused.exit_code != 0 and "index must be one of" in refused.output


def test_every_index_gives_the_same_candidates_scores_and_threshold(
    app: Airside, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    _needs("milvus")
    results = {}
    for kind in KINDS:
        galleries.create_gallery(app, DPO, f"g-{kind}", "seamless-travel", index=kind)
        for ref, face in (("P-1", astronaut), ("P-2", hopper)):
            enrolment.enrol(app, DPO, f"g-{kind}", ref, [png_bytes(face)], BasisInput("consent"))
        results[kind] = matching.identify(app, DPO, f"g-{kind}", jpeg_bytes(astronaut, 70), k=2)
    exact = results["exact"]
    for kind in ("pq", "hnsw", "milvus"):
        res = results[kind]
        assert (res.match, res.threshold, res.gallery_size) == (
            exact.match,
            exact.threshold,
            exact.gallery_size,
        )
        assert [c.subject for c in res.candidates] == [c.subject for c in exact.candidates]
        # HNSW keeps fp16 vectors: scores agree to fp16's precision.
        assert [c.score for c in res.candidates] == pytest.approx(
            [c.score for c in exact.candidates], abs=2e-3
        )


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_milvus_that_does_not_answer_is_a_clear_retryable_error(
    tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    from airside.errors import AirsideError
    from airside.server.problems import STATUS_OF

    _needs("milvus")
    down = Settings(data_dir=tmp_path / "down", milvus_uri=f"http://127.0.0.1:{_closed_port()}")
    app = Airside(down, analyzer_factory=lambda _s: analyzer)
    try:
        register(app, DPO)
        galleries.create_gallery(app, DPO, "national", "seamless-travel", index="milvus")
        # The enrolment is committed and audited; the index catches up when Milvus answers.
        enrolment.enrol(app, DPO, "national", "P-1", [png_bytes(astronaut)], BasisInput("consent"))
        assert _template_ids(app, "P-1")
        with pytest.raises(AirsideError) as refused:
            matching.identify(app, DPO, "national", jpeg_bytes(astronaut, 70))
        assert refused.value.code == "index_unavailable"
        assert STATUS_OF["index_unavailable"] == 503
    finally:
        app.close()


def test_an_erasure_made_while_milvus_was_unreachable_reaches_it_on_the_next_sync(
    app: Airside, analyzer: FaceAnalyzer, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    _enrol_two(app, "milvus", astronaut, hopper)
    ids = _template_ids(app, "P-1")
    ix = _loaded(app)
    cut_off = app.settings.model_copy(update={"milvus_uri": f"http://127.0.0.1:{_closed_port()}"})
    other = Airside(cut_off, analyzer_factory=lambda _s: analyzer)
    try:
        erasure.erase_subject(other, DPO, "P-1")  # committed; its Milvus did not answer
    finally:
        other.close()
    assert _in_backend(app, ix, ids) == set(ids)  # still there: nobody synced yet
    assert app.sync_shared_indexes() == 1  # the purge scheduler's tick
    assert _in_backend(app, ix, ids) == set()


def test_auto_keeps_galleries_of_dlib_exact_at_any_size(
    tmp_path: Path, analyzer: FaceAnalyzer
) -> None:
    """dlib's scores crowd into a narrow band that 4-bit codes blur (docs/scale.md: PQ lost
    5 points of rank-1 at 1M), so ``auto`` never moves a dlib gallery off exact search."""
    from dataclasses import replace

    app = Airside(
        Settings(data_dir=tmp_path / "auto", ann_from=2), analyzer_factory=lambda _s: analyzer
    )
    try:
        dlib = replace(analyzer.contract, model_id="dlib-resnet")
        assert app._index_kind(None, 10**6, None, dlib) == "exact"
        assert app._index_kind(None, 10**6, None, analyzer.contract) == "pq"
        assert app._index_kind("pq", 10, None, dlib) == "pq"  # a gallery's own choice stands
    finally:
        app.close()
