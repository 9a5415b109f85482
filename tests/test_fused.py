"""The fused 1:1 mode: dlib's ResNet and SFace in one template, one score, one contract."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import shared_data

from airside.biometrics.calibration import CalibrationTable, shipped_calibration
from airside.config import Settings
from airside.errors import ContractMismatchError
from airside.vision.analyzer import FaceAnalyzer
from airside.vision.contract import Template, require_same, similarity
from airside.vision.factory import default_analyzer, default_contract
from airside.vision.frame_faces import video_engine
from airside.vision.fused import FUSION_WEIGHTS, FusedAnalyzer, FusionWeights, fused_contract


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fused")


@pytest.fixture(scope="module")
def fused(data_dir: Path) -> FaceAnalyzer:
    return default_analyzer(Settings(data_dir=data_dir, embedder_model="fused"))


@pytest.fixture(scope="module")
def dlib(data_dir: Path) -> FaceAnalyzer:
    return default_analyzer(Settings(data_dir=data_dir, embedder_model="dlib"))


@pytest.fixture(scope="module")
def sface(data_dir: Path) -> FaceAnalyzer:
    return default_analyzer(Settings(data_dir=data_dir, embedder_model="sface"))


@pytest.fixture(scope="module")
def table(fused: FaceAnalyzer) -> CalibrationTable:
    found = shipped_calibration(fused.contract)
    assert found is not None, f"no shipped table for {fused.contract.fingerprint}"
    return found


def template(analyzer: FaceAnalyzer, image: np.ndarray) -> np.ndarray:
    faces = analyzer.observe(image)
    face = analyzer.select(faces, "largest", image.shape)
    vec: np.ndarray = analyzer.embed([face])[0]
    return vec


def test_the_fused_embedder_is_chosen_by_setting(fused: FaceAnalyzer) -> None:
    assert isinstance(fused, FusedAnalyzer)
    assert fused.contract.model_id == "fused"


def test_a_fused_template_is_one_unit_vector_holding_both_models(
    fused: FaceAnalyzer, dlib: FaceAnalyzer, sface: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    v = template(fused, astronaut)
    assert v.shape == (dlib.contract.dim + sface.contract.dim,) == (256,)
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5


def test_each_half_is_that_models_own_template_scaled_by_its_weight(
    fused: FaceAnalyzer, dlib: FaceAnalyzer, sface: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    v = template(fused, astronaut)
    w = FUSION_WEIGHTS
    np.testing.assert_allclose(v[:128], np.sqrt(w.dlib) * template(dlib, astronaut), atol=1e-5)
    np.testing.assert_allclose(v[128:], np.sqrt(w.sface) * template(sface, astronaut), atol=1e-5)


def test_the_fused_score_is_the_weighted_sum_of_the_two_models_cosines(
    fused: FaceAnalyzer,
    dlib: FaceAnalyzer,
    sface: FaceAnalyzer,
    astronaut: np.ndarray,
    hopper: np.ndarray,
) -> None:
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    for a, b in ((astronaut, hopper), (astronaut, mirrored)):
        cos_dlib = float(template(dlib, a) @ template(dlib, b))
        cos_sface = float(template(sface, a) @ template(sface, b))
        got = float(template(fused, a) @ template(fused, b))
        want = FUSION_WEIGHTS.dlib * cos_dlib + FUSION_WEIGHTS.sface * cos_sface
        assert abs(got - want) < 1e-5


def test_the_weighted_sum_ranks_pairs_as_the_sum_of_standardised_scores() -> None:
    sd_dlib, sd_sface = 0.05, 0.08
    w = FusionWeights.from_impostor_spread(sd_dlib, sd_sface, "spreads given here")
    rng = np.random.default_rng(3)
    cos = rng.uniform(-0.2, 1.0, size=(200, 2))
    fused = w.dlib * cos[:, 0] + w.sface * cos[:, 1]
    standardised = cos[:, 0] / sd_dlib + cos[:, 1] / sd_sface  # each model's mean shifts both
    slope, intercept = np.polyfit(standardised, fused, 1)
    assert slope > 0
    np.testing.assert_allclose(slope * standardised + intercept, fused, atol=1e-4)


def test_the_same_face_flipped_or_cropped_passes_the_fmr_1e3_threshold(
    fused: FaceAnalyzer, table: CalibrationTable, astronaut: np.ndarray
) -> None:
    ref = template(fused, astronaut)
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    cropped = np.ascontiguousarray(astronaut[20:300, 60:340])
    threshold = table.threshold_for(1e-3)
    for probe in (flipped, cropped):
        assert float(ref @ template(fused, probe)) > threshold


def test_another_face_is_refused_at_the_fmr_1e2_threshold(
    fused: FaceAnalyzer, table: CalibrationTable, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    score = float(template(fused, astronaut) @ template(fused, hopper))
    assert score < table.threshold_for(1e-2)


def test_the_fused_contract_is_neither_models_and_names_both(
    fused: FaceAnalyzer, dlib: FaceAnalyzer, sface: FaceAnalyzer
) -> None:
    c = fused.contract
    assert c.fingerprint not in (dlib.contract.fingerprint, sface.contract.fingerprint)
    assert dlib.contract.preprocessing in c.preprocessing
    assert sface.contract.preprocessing in c.preprocessing
    assert FUSION_WEIGHTS.tag in c.preprocessing
    assert len(c.fingerprint) <= 200  # what a gallery row can hold


def test_other_weights_make_another_contract(
    dlib: FaceAnalyzer, sface: FaceAnalyzer, fused: FaceAnalyzer
) -> None:
    other = replace(FUSION_WEIGHTS, dlib=round(FUSION_WEIGHTS.dlib + 0.01, 4))
    c = fused_contract(dlib.contract, sface.contract, other)
    assert c.weights_sha256 != fused.contract.weights_sha256
    assert c.fingerprint != fused.contract.fingerprint


def test_single_view_settings_make_another_fused_contract(data_dir: Path) -> None:
    tta = default_contract(Settings(data_dir=data_dir, embedder_model="fused"))
    single = default_contract(
        Settings(data_dir=data_dir, embedder_model="fused", embed_views="single")
    )
    assert single.fingerprint != tta.fingerprint


def test_a_gallery_of_one_contract_refuses_a_probe_of_another(
    fused: FaceAnalyzer, dlib: FaceAnalyzer, sface: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    probe = Template.from_embedding(template(fused, astronaut), fused.contract)
    for single in (dlib, sface):
        enrolled = Template.from_embedding(template(single, astronaut), single.contract)
        with pytest.raises(ContractMismatchError):
            require_same(single.contract, fused.contract)
        with pytest.raises(ContractMismatchError):
            similarity(enrolled, probe)


def test_no_faces_embed_to_no_rows(fused: FaceAnalyzer) -> None:
    assert fused.embed([]).shape == (0, 256)


def test_quality_is_judged_on_dlibs_canonical_chip(
    fused: FaceAnalyzer, dlib: FaceAnalyzer, astronaut: np.ndarray
) -> None:
    [f] = fused.observe(astronaut)
    [d] = dlib.observe(astronaut)
    np.testing.assert_array_equal(f.chip, d.chip)
    assert f.quality.score == d.quality.score


def test_the_video_engine_embeds_a_fused_template_that_matches_the_photos(
    fused: FaceAnalyzer, table: CalibrationTable, astronaut: np.ndarray
) -> None:
    engine = video_engine(fused)
    assert engine.contract == fused.contract
    [det] = engine.detect(astronaut)
    crop = engine.crop(astronaut, det)
    assert crop is not None
    [vec] = engine.embed_many([crop])
    assert vec.shape == (256,)
    assert float(vec @ template(fused, astronaut)) > table.threshold_for(1e-4)


# --------------------------------------------------------------------------------------------
# LFW View 1, held out (slow; skipped without ../shared/data)


@pytest.mark.slow
def test_on_held_out_lfw_fused_accepts_at_least_as_many_as_the_better_model_at_far_1e3(
    pytestconfig: pytest.Config,
) -> None:
    """The fused scores of all devtest pairs are derived from the two models' own templates
    (a fused template is their weighted concatenation: the tests above), which saves
    embedding devtest a third time; a sample of devtest images embedded by the real fused
    analyzer holds the derivation to 1e-4 on LFW itself."""
    from airside.evaluation import metrics
    from airside.evaluation.datasets import read_identities, read_pairs
    from airside.evaluation.fusion import images_of, model_settings
    from airside.evaluation.templates import extract_templates
    from airside.evaluation.verification import all_pairs, identity_templates

    lfw = shared_data("faces", "lfw_view1")
    assert pytestconfig.cache is not None
    # The LFW tests' template cache (tests/test_lfw.py): each image is embedded once.
    settings = Settings(data_dir=Path(pytestconfig.cache.mkdir("airside-lfw")))
    devtest = images_of(
        read_identities(lfw / "identities.csv"), read_pairs(lfw / "pairs_devtest.csv")
    )
    own = {}
    for model in ("dlib", "sface"):
        s = model_settings(settings, model)
        own[model] = identity_templates(devtest, s, default_contract(s))
    both = sorted(set(own["dlib"].kept) & set(own["sface"].kept))
    row = {m: {k: r for r, k in enumerate(t.kept)} for m, t in own.items()}
    w = FUSION_WEIGHTS
    fused = np.concatenate(
        [
            np.sqrt(w.dlib) * own["dlib"].vectors[[row["dlib"][k] for k in both]],
            np.sqrt(w.sface) * own["sface"].vectors[[row["sface"][k] for k in both]],
        ],
        axis=1,
    )
    # The derivation against the fused analyzer, on 40 devtest images.
    sample = [both[k] for k in np.random.default_rng(0).choice(len(both), 40, replace=False)]
    fs = model_settings(settings, "fused")
    real = extract_templates([devtest.images[k] for k in sample], fs, default_contract(fs))
    for k in sample:
        vec = real[devtest.images[k]].vector
        assert vec is not None, devtest.images[k]
        np.testing.assert_allclose(vec, fused[both.index(k)], atol=1e-4)

    tar = {}
    for name, vectors, who in (
        ("dlib", own["dlib"].vectors, own["dlib"].identities),
        ("sface", own["sface"].vectors, own["sface"].identities),
        ("fused", fused, [devtest.identities[k] for k in both]),
    ):
        _, _, scores, same = all_pairs(vectors, who)
        assert int((~same).sum()) >= 100_000  # FAR 1e-3 rests on a hundred impostors or more
        tar[name] = metrics.tar_at_far(scores[same], scores[~same], 1e-3)
    assert tar["fused"] >= max(tar["dlib"], tar["sface"]), tar
