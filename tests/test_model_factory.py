"""The analyzer built from settings: registered models, loaded only when they still match
their manifests, and the right aligner for each detector and embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.conftest import png_bytes, register, shared_data
from tests.tiny_onnx import linear_embedder

from airside.config import DetectorSettings, Settings
from airside.errors import AirsideError
from airside.governance.consent import BasisInput
from airside.governance.principals import Principal
from airside.services import enrolment, galleries, matching
from airside.services.app import Airside
from airside.services.model_admin import validate_detector
from airside.vision.detectors import UltraFaceDetector, YuNetDetector
from airside.vision.dlib_models import DlibFivePointAligner, FallbackDetector
from airside.vision.face_align import ArcFaceAligner
from airside.vision.factory import default_analyzer, default_contract, providers
from airside.vision.model_files import add_model
from airside.vision.onnx_runtime import ProviderUnavailable, available_providers

ADMIN = Principal("officer", "admin")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def with_(settings: Settings, **update: object) -> Settings:
    return settings.model_copy(update=update)


def add_tiny(settings: Settings, name: str = "tiny") -> None:
    src = linear_embedder(settings.data_dir.parent / "in" / f"{name}.onnx")
    add_model(settings.model_registry, src, "arcface", name=name, licence="MIT")


def add_shared(settings: Settings, folder: str, file: str, family: str, name: str) -> None:
    path = shared_data("models", folder, file)
    add_model(settings.model_registry, path, family, name=name, licence="MIT",
              validate=validate_detector)  # fmt: skip


def test_models_live_under_the_data_directory_unless_told(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).model_registry == tmp_path / "models"
    moved = Settings(data_dir=tmp_path, models_dir=tmp_path / "elsewhere")
    assert moved.model_registry == tmp_path / "elsewhere"


def test_model_choices_are_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRSIDE_FACE_DETECTOR", "yunet")
    monkeypatch.setenv("AIRSIDE_EMBEDDER_MODEL", "w600k")
    monkeypatch.setenv("AIRSIDE_DEVICE", "auto")
    monkeypatch.setenv("AIRSIDE_EMBED_MAX_BATCH", "8")
    monkeypatch.setenv("AIRSIDE_MODELS_DIR", str(tmp_path / "m"))
    s = Settings(data_dir=tmp_path)
    assert (s.face_detector, s.embedder_model, s.device) == ("yunet", "w600k", "auto")
    assert s.embed_max_batch == 8 and s.model_registry == tmp_path / "m"


def test_nothing_names_the_default_models_and_dlib_names_dlibs(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, face_detector=" ", embedder_model="")
    assert (s.face_detector, s.embedder_model) == ("yunet", "sface")
    assert default_contract(s) == default_contract(Settings(data_dir=tmp_path))
    d = Settings(data_dir=tmp_path, face_detector="DLIB", embedder_model="Dlib")
    assert (d.face_detector, d.embedder_model) == ("dlib", "dlib")
    assert default_contract(d).model_id == "dlib-resnet"


def test_a_registered_embedder_gets_arcface_chips_and_its_own_contract(
    settings: Settings,
) -> None:
    add_tiny(settings)
    an = default_analyzer(with_(settings, embedder_model="tiny", face_detector="dlib"))
    assert isinstance(an.aligner, ArcFaceAligner)
    # dlib's HOG gives no landmarks: the eye centres come from dlib's 5-point predictor.
    assert "fallback-dlib5pt-eyes" in an.aligner.preprocessing
    assert an.contract == an.embedder.contract
    assert an.contract.model_id == "arcface:tiny" and an.contract.dim == 16
    assert an.contract != default_contract(settings)
    assert providers(an)["arcface:tiny"] == "onnxruntime:CPUExecutionProvider"


def test_the_analyzer_refuses_to_start_with_a_tampered_model(settings: Settings) -> None:
    add_tiny(settings)
    stored = settings.model_registry / "tiny.onnx"
    stored.write_bytes(stored.read_bytes()[:-1] + b"\x01")
    with pytest.raises(AirsideError, match=r"refusing model 'tiny'.*changed or replaced") as e:
        default_analyzer(with_(settings, embedder_model="tiny"))
    assert e.value.code == "model_tampered"
    app = Airside(with_(settings, embedder_model="tiny"))
    try:
        with pytest.raises(AirsideError, match="changed or replaced"):
            _ = app.analyzer
    finally:
        app.close()


def test_an_unknown_model_is_named_in_the_error(settings: Settings) -> None:
    with pytest.raises(AirsideError, match="no model named 'nope'") as e:
        default_analyzer(with_(settings, face_detector="nope"))
    assert e.value.code == "model_not_found"


def test_an_embedder_is_not_taken_for_a_detector(settings: Settings) -> None:
    add_tiny(settings)
    with pytest.raises(AirsideError, match="not a face-detector") as e:
        default_analyzer(with_(settings, face_detector="tiny"))
    assert e.value.code == "model_incompatible"


@pytest.mark.skipif("CUDAExecutionProvider" in available_providers(), reason="CUDA is usable here")
def test_a_gpu_that_is_not_there_is_refused_loudly(settings: Settings) -> None:
    add_tiny(settings)
    with pytest.raises(ProviderUnavailable, match="GPU was requested"):
        default_analyzer(with_(settings, embedder_model="tiny", device="cuda"))


def test_yunet_with_dlib_alignment_and_embedding_enrols_and_identifies_the_astronaut(
    settings: Settings, astronaut: np.ndarray, hopper: np.ndarray
) -> None:
    add_shared(settings, "yunet", "face_detection_yunet_2023mar.onnx", "yunet", "yunet")
    dlib = with_(settings, embedder_model="dlib")
    app = Airside(with_(dlib, face_detector="yunet"))
    try:
        an = app.analyzer
        assert isinstance(an.detector, YuNetDetector)  # no CNN fallback behind it ("auto")
        assert isinstance(an.aligner, DlibFivePointAligner)
        assert an.contract == default_contract(dlib)  # dlib's calibrated contract
        register(app, ADMIN)
        galleries.create_gallery(app, ADMIN, "g", "boarding")
        enrolment.enrol(app, ADMIN, "g", "astro", [png_bytes(astronaut)], BasisInput("consent"))
        enrolment.enrol(app, ADMIN, "g", "grace", [png_bytes(hopper)], BasisInput("consent"))
        res = matching.identify(app, ADMIN, "g", png_bytes(astronaut))
        assert res.match and res.candidates[0].subject == "astro"
    finally:
        app.close()


def test_yunet_landmarks_feed_arcface_alignment_without_a_fallback(settings: Settings) -> None:
    add_shared(settings, "yunet", "face_detection_yunet_2023mar.onnx", "yunet", "yunet")
    add_tiny(settings)
    an = default_analyzer(with_(settings, face_detector="yunet", embedder_model="tiny"))
    assert isinstance(an.aligner, ArcFaceAligner) and an.aligner.fallback is None


def test_ultraface_boxes_get_eye_centres_from_dlib(settings: Settings) -> None:
    add_shared(settings, "ultraface", "version-RFB-320.onnx", "ultraface", "uf")
    add_tiny(settings)
    an = default_analyzer(with_(settings, face_detector="uf", embedder_model="tiny"))
    assert isinstance(an.detector, UltraFaceDetector)
    assert isinstance(an.aligner, ArcFaceAligner) and an.aligner.fallback is not None


def test_the_cnn_fallback_can_be_forced_behind_a_registered_detector(settings: Settings) -> None:
    add_shared(settings, "yunet", "face_detection_yunet_2023mar.onnx", "yunet", "yunet")
    forced = with_(settings, face_detector="yunet", detector=DetectorSettings(fallback="cnn"))
    det = default_analyzer(forced).detector
    assert isinstance(det, FallbackDetector) and isinstance(det.primary, YuNetDetector)


def test_eval_verify_works_unchanged_with_a_registered_arcface_style_embedder(
    settings: Settings, tmp_path: Path
) -> None:
    """Issue 4: the same command, the same output shape, another model's scores."""
    import io
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from airside.cli.main import app as cli
    from airside.synthetic.clips import face_image

    add_tiny(settings)
    folder = tmp_path / "pairs"
    folder.mkdir()
    for name in ("astronaut", "hopper"):
        for k, scale in enumerate((1.0, 0.8)):
            img = Image.fromarray(face_image(name))
            img = img.resize((int(img.width * scale * 2), int(img.height * scale * 2)))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            (folder / f"{name}{k}.png").write_bytes(buf.getvalue())
    (folder / "pairs.csv").write_text(
        "img_a,img_b,same\nastronaut0.png,astronaut1.png,1\nhopper0.png,hopper1.png,1\n"
        "astronaut0.png,hopper1.png,0\nhopper0.png,astronaut1.png,0\n"
    )
    env = {"AIRSIDE_EMBEDDER_MODEL": "tiny"}
    base = ["--data-dir", str(settings.data_dir)]
    res = CliRunner().invoke(
        cli, [*base, "eval", "verify", "--pairs", str(folder / "pairs.csv"), "--json"], env=env
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert "arcface:tiny" in json.dumps(out["model"])  # scored by the registered model
    assert (out["pairs"], out["genuine_pairs"], out["impostor_pairs"]) == (4, 2, 2)
    assert out["scored_pairs"] == 4 and out["failures_to_enrol"] == 0
