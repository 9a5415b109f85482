"""The models directory: only verified, licensed, untampered models are ever loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from airside.errors import AirsideError
from airside.model_registry import Manifest, list_models, load_model, verify_models
from airside.model_registry.manifest import Normalisation
from airside.vision.embedders.onnx_models import embedder_from_manifest
from airside.vision.model_files import add_model


def tiny_model(path: Path, input_shape: list[int | str], out_dim: int = 8, seed: int = 0) -> Path:
    """flatten(x) @ w: an embedder when x is a 112x112 image, otherwise just a graph."""
    n_in = int(np.prod([d for d in input_shape[1:] if isinstance(d, int)]))
    w = np.random.default_rng(seed).normal(size=(n_in, out_dim)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [input_shape[0], out_dim])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def embedder_file(tmp_path: Path) -> Path:
    return tiny_model(tmp_path / "src" / "mbf.onnx", ["N", 3, 112, 112])


@pytest.fixture(autouse=True)
def _src_dir(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()


def test_an_added_model_is_listed_with_its_sha256(tmp_path: Path, embedder_file: Path) -> None:
    models = tmp_path / "models"
    added = add_model(models, embedder_file, "arcface", licence="MIT", source="built in test")
    assert [m.name for m in list_models(models)] == ["mbf"]
    listed = list_models(models)[0]
    assert listed.sha256 == hashlib.sha256(embedder_file.read_bytes()).hexdigest()
    assert listed == added
    assert (models / "mbf.onnx").read_bytes() == embedder_file.read_bytes()


def test_an_embedder_manifest_records_kind_size_normalisation_and_dim(
    tmp_path: Path, embedder_file: Path
) -> None:
    m = add_model(tmp_path / "models", embedder_file, "arcface", licence="MIT")
    assert m.kind == "face-embedder"
    assert m.input_size == (112, 112)
    assert m.normalisation == Normalisation(mean=127.5, std=127.5)
    assert m.output.dim == 8


def test_a_loaded_model_builds_its_embedder(tmp_path: Path, embedder_file: Path) -> None:
    models = tmp_path / "models"
    add_model(models, embedder_file, "sface", licence="Apache-2.0", name="sf")
    manifest, path = load_model(models, "sf")
    emb = embedder_from_manifest(manifest, path)
    assert emb.contract.model_id == "sface:sf"
    assert emb.contract.weights_sha256 == manifest.sha256
    assert emb.embed(np.zeros((2, 112, 112, 3), dtype=np.uint8)).shape == (2, 8)


def test_a_changed_byte_is_reported_and_the_model_refused(
    tmp_path: Path, embedder_file: Path
) -> None:
    models = tmp_path / "models"
    add_model(models, embedder_file, "arcface", licence="MIT")
    data = bytearray((models / "mbf.onnx").read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    (models / "mbf.onnx").write_bytes(bytes(data))

    [(manifest, ok, problem)] = verify_models(models)
    assert manifest is not None and manifest.name == "mbf"
    assert not ok and problem is not None and "sha256" in problem
    with pytest.raises(AirsideError) as err:
        load_model(models, "mbf")
    assert err.value.code == "model_tampered"


def test_a_healthy_directory_verifies_clean(tmp_path: Path, embedder_file: Path) -> None:
    models = tmp_path / "models"
    add_model(models, embedder_file, "arcface", licence="MIT")
    assert [(ok, problem) for _, ok, problem in verify_models(models)] == [(True, None)]


def test_a_missing_model_file_is_reported(tmp_path: Path, embedder_file: Path) -> None:
    models = tmp_path / "models"
    add_model(models, embedder_file, "arcface", licence="MIT")
    (models / "mbf.onnx").unlink()
    [(_, ok, problem)] = verify_models(models)
    assert not ok and problem is not None and "missing" in problem
    with pytest.raises(AirsideError) as err:
        load_model(models, "mbf")
    assert err.value.code == "model_missing"


def test_an_unreadable_manifest_is_reported(tmp_path: Path, embedder_file: Path) -> None:
    models = tmp_path / "models"
    add_model(models, embedder_file, "arcface", licence="MIT")
    (models / "mbf.manifest.json").write_text("{not json")
    [(manifest, ok, problem)] = verify_models(models)
    assert manifest is None and not ok and problem is not None and "mbf" in problem


def test_a_manifest_pointing_outside_the_directory_is_unreadable(
    tmp_path: Path, embedder_file: Path
) -> None:
    models = tmp_path / "models"
    m = add_model(models, embedder_file, "arcface", licence="MIT")
    evil = m.model_dump(mode="json") | {"file": "../src/mbf.onnx"}
    (models / "mbf.manifest.json").write_text(json.dumps(evil))
    with pytest.raises(AirsideError) as err:
        load_model(models, "mbf")
    assert err.value.code == "model_manifest_invalid"


@pytest.mark.parametrize("licence", [None, "", "   "])
def test_a_model_without_a_licence_is_refused(
    tmp_path: Path, embedder_file: Path, licence: str | None
) -> None:
    models = tmp_path / "models"
    with pytest.raises(AirsideError) as err:
        add_model(models, embedder_file, "arcface", licence=licence)
    assert err.value.code == "licence_required"
    assert list_models(models) == []


def test_a_detector_shaped_model_is_refused_as_an_embedder(tmp_path: Path) -> None:
    det = tiny_model(tmp_path / "src" / "det.onnx", [1, 3, 64, 64])
    models = tmp_path / "models"
    with pytest.raises(AirsideError, match=r"family 'arcface'.*64x64") as err:
        add_model(models, det, "arcface", licence="MIT")
    assert err.value.code == "model_family_mismatch"
    assert list(models.iterdir()) == []  # nothing left behind


def test_a_model_without_an_image_input_is_refused_as_a_detector(tmp_path: Path) -> None:
    vec = tiny_model(tmp_path / "src" / "vec.onnx", ["N", 128])
    with pytest.raises(AirsideError, match="not an image") as err:
        add_model(tmp_path / "models", vec, "yunet", licence="MIT")
    assert err.value.code == "model_family_mismatch"


def test_a_detector_with_an_image_input_is_added(tmp_path: Path) -> None:
    det = tiny_model(tmp_path / "src" / "det.onnx", [1, 3, 64, 64])
    m = add_model(tmp_path / "models", det, "yunet", licence="MIT")
    assert (m.kind, m.input_size, m.normalisation) == ("face-detector", (64, 64), None)


def test_the_validation_hook_can_refuse_a_model(tmp_path: Path) -> None:
    det = tiny_model(tmp_path / "src" / "det.onnx", [1, 3, 64, 64])
    seen: list[str] = []

    def needs_three_outputs(manifest: Manifest, path: Path) -> None:
        seen.append(path.name)
        if len(manifest.output.names) < 3:
            raise AirsideError(
                "scrfd needs score, box and landmark outputs", code="model_family_mismatch"
            )

    with pytest.raises(AirsideError, match="landmark outputs"):
        add_model(tmp_path / "models", det, "scrfd", licence="MIT", validate=needs_three_outputs)
    assert seen == ["det.onnx"]
    assert list_models(tmp_path / "models") == []


def test_a_kind_that_contradicts_the_family_is_refused(tmp_path: Path, embedder_file: Path) -> None:
    with pytest.raises(AirsideError) as err:
        add_model(tmp_path / "models", embedder_file, "arcface", kind="pose", licence="MIT")
    assert err.value.code == "model_family_mismatch"


def test_a_generic_embedder_needs_its_normalisation(tmp_path: Path, embedder_file: Path) -> None:
    with pytest.raises(AirsideError) as err:
        add_model(tmp_path / "models", embedder_file, "generic", licence="MIT")
    assert err.value.code == "model_normalisation_required"


def test_a_generic_embedder_records_the_normalisation_given(
    tmp_path: Path, embedder_file: Path
) -> None:
    m = add_model(
        tmp_path / "models",
        embedder_file,
        "generic",
        licence="MIT",
        mean=0.5,
        std=0.5,
        scale=1 / 255,
        channels="BGR",
    )
    assert m.normalisation == Normalisation(mean=0.5, std=0.5, scale=1 / 255, channels="BGR")


def test_the_same_name_with_a_different_file_is_refused(
    tmp_path: Path, embedder_file: Path
) -> None:
    models = tmp_path / "models"
    add_model(models, embedder_file, "arcface", licence="MIT", name="face")
    other = tiny_model(tmp_path / "src" / "other.onnx", ["N", 3, 112, 112], seed=1)
    with pytest.raises(AirsideError) as err:
        add_model(models, other, "arcface", licence="MIT", name="face")
    assert err.value.code == "model_exists"
    assert load_model(models, "face")[0].file == "mbf.onnx"


def test_a_different_file_of_the_same_file_name_is_not_overwritten(
    tmp_path: Path, embedder_file: Path
) -> None:
    models = tmp_path / "models"
    add_model(models, embedder_file, "arcface", licence="MIT", name="first")
    before = (models / "mbf.onnx").read_bytes()
    (tmp_path / "src2").mkdir()
    other = tiny_model(tmp_path / "src2" / "mbf.onnx", ["N", 3, 112, 112], seed=1)
    with pytest.raises(AirsideError) as err:
        add_model(models, other, "arcface", licence="MIT", name="second")
    assert err.value.code == "model_exists"
    assert (models / "mbf.onnx").read_bytes() == before


def test_adding_the_same_file_twice_is_a_no_op(tmp_path: Path, embedder_file: Path) -> None:
    models = tmp_path / "models"
    first = add_model(models, embedder_file, "arcface", licence="MIT")
    assert add_model(models, embedder_file, "arcface", licence="MIT") == first
    assert len(list_models(models)) == 1


def test_a_manifest_round_trips_through_json(tmp_path: Path, embedder_file: Path) -> None:
    m = add_model(tmp_path / "models", embedder_file, "arcface", licence="MIT", source="test")
    assert Manifest.from_json(m.to_json()) == m
    assert Manifest.from_json((tmp_path / "models" / "mbf.manifest.json").read_text()) == m


def test_an_unknown_model_name_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(AirsideError) as err:
        load_model(tmp_path, "../etc/passwd")
    assert err.value.code == "model_not_found"


def test_the_registry_runs_no_model_code_itself(tmp_path: Path) -> None:
    """Files are opened by the inspector the caller gives (vision's ONNX one in Airside);
    importing the registry loads nothing of vision."""
    import subprocess
    import sys

    from airside.model_registry import ModelIO, ModelSpec, add_model_file

    code = (
        "import sys, airside.model_registry; "
        "sys.exit(any(m.startswith('airside.vision') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

    class Inspector:
        def open(self, path: Path) -> ModelIO:
            return ModelIO([1, 3, 48, 64], ["scores", "boxes"])

        def default_normalisation(self, family: str, path: Path) -> Normalisation | None:
            raise AssertionError("only embedders have default pixels")

        def embedder_geometry(self, manifest: Manifest, path: Path) -> tuple[int, int, int]:
            raise AssertionError("a detector is not built as an embedder")

    src = tmp_path / "src" / "det.bin"
    src.write_bytes(b"not opened by the registry")
    m = add_model_file(
        tmp_path / "models", src, ModelSpec("yunet", licence="MIT"), inspector=Inspector()
    )
    assert (m.kind, m.input_size, m.output.names) == (
        "face-detector",
        (64, 48),
        ["scores", "boxes"],
    )
    assert load_model(tmp_path / "models", "det")[0] == m
