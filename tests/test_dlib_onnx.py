"""The ONNX conversion of dlib's face ResNet must reproduce dlib's descriptors on real faces."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

dlib = pytest.importorskip("dlib")
pytest.importorskip("onnxruntime")

from airside.vision.dlib_onnx import (  # noqa: E402 - after the importorskip guards
    DESCRIPTOR_DIM,
    OnnxResNetEmbedder,
    build_onnx,
    default_model_path,
    load_or_convert,
    parse_dlib_resnet,
)

TOLERANCE = 1e-4


@pytest.fixture(scope="session")
def dat_path() -> Path:
    path = default_model_path()
    if not path.is_file():
        pytest.skip(f"dlib model not installed at {path}")
    return path


@pytest.fixture(scope="session")
def onnx_path(dat_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Convert once per session; later tests reuse the cached graph."""
    return load_or_convert(dat_path, tmp_path_factory.mktemp("onnx_cache"))


@pytest.fixture(scope="session")
def embedder(onnx_path: Path) -> OnnxResNetEmbedder:
    return OnnxResNetEmbedder(onnx_path, threads=1)


@pytest.fixture(scope="session")
def dlib_model(dat_path: Path) -> object:
    return dlib.face_recognition_model_v1(str(dat_path))


def _sample_images() -> list[np.ndarray]:
    skdata = pytest.importorskip("skimage.data")
    cbook = pytest.importorskip("matplotlib.cbook")
    image = pytest.importorskip("PIL.Image")
    hopper_path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with image.open(hopper_path) as im:
        hopper = np.asarray(im.convert("RGB"))
    return [np.ascontiguousarray(skdata.astronaut()), np.ascontiguousarray(hopper)]


@pytest.fixture(scope="session")
def chips(dat_path: Path) -> np.ndarray:
    """Aligned 150x150 chips of the real faces in the two sample images."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dat_path.parent / "shape_predictor_5_face_landmarks.dat"))
    found = []
    for img in _sample_images():
        # No upsampling: with 1x upsampling the astronaut's mission patch is a false positive.
        dets = detector(img, 0)
        assert len(dets) == 1, "expected exactly one face in each sample image"
        shape = predictor(img, dets[0])
        found.append(dlib.get_face_chip(img, shape, size=150, padding=0.25))
    return np.stack(found).astype(np.uint8)


def _dlib_descriptors(model: object, chips: np.ndarray) -> np.ndarray:
    return np.array([np.asarray(model.compute_face_descriptor(c)) for c in chips])


def test_parse_reads_whole_file(dat_path: Path) -> None:
    net = parse_dlib_resnet(dat_path.read_bytes())
    assert net.input.rows == net.input.cols == 150
    # dlib's input_rgb_image_sized defaults: 122.782, 117.001, 104.298
    np.testing.assert_allclose(net.input.means, (122.782, 117.001, 104.298), atol=1e-4)
    assert net.distance_threshold == pytest.approx(0.6)


def test_matches_dlib_on_real_faces(
    embedder: OnnxResNetEmbedder, dlib_model: object, chips: np.ndarray
) -> None:
    expected = _dlib_descriptors(dlib_model, chips)
    for chip, want in zip(chips, expected, strict=True):
        got = embedder.embed(chip[None])
        assert got.shape == (1, DESCRIPTOR_DIM)
        assert got.dtype == np.float32
        diff = float(np.max(np.abs(got[0] - want)))
        print(f"max |onnx - dlib| = {diff:.3g}")
        assert diff < TOLERANCE


def test_batch_equals_one_at_a_time(
    embedder: OnnxResNetEmbedder, dlib_model: object, chips: np.ndarray
) -> None:
    # Mirrored and brightened chips give a batch of distinct, still face-like inputs.
    brighter = np.clip(chips.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    batch = np.concatenate([chips, chips[:, :, ::-1], brighter])
    together = embedder.embed(batch)
    singly = np.concatenate([embedder.embed(c[None]) for c in batch])
    assert together.shape == (len(batch), DESCRIPTOR_DIM)
    np.testing.assert_allclose(together, singly, rtol=0, atol=1e-5)
    expected = _dlib_descriptors(dlib_model, batch)
    np.testing.assert_allclose(together, expected, rtol=0, atol=TOLERANCE)


def test_embed_rejects_wrong_shape(embedder: OnnxResNetEmbedder) -> None:
    with pytest.raises(ValueError, match="150,150,3"):
        embedder.embed(np.zeros((150, 150, 3), dtype=np.uint8))
    assert embedder.embed(np.zeros((0, 150, 150, 3), dtype=np.uint8)).shape == (0, 128)


def test_cache_is_reused(dat_path: Path, onnx_path: Path) -> None:
    before = onnx_path.stat().st_mtime_ns
    again = load_or_convert(dat_path, onnx_path.parent)
    assert again == onnx_path
    assert again.stat().st_mtime_ns == before
    assert not list(onnx_path.parent.glob("*.tmp"))


def test_truncated_file_raises_clear_error(dat_path: Path, tmp_path: Path) -> None:
    data = dat_path.read_bytes()
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"byte offset \d+.*truncated"):
        build_onnx(truncated)


def test_garbage_file_raises_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"byte offset \d+"):
        build_onnx(garbage)


def test_wrong_layer_version_names_expectation(dat_path: Path) -> None:
    data = dat_path.read_bytes()
    corrupted = data.replace(b"\x15input_rgb_image_sized", b"\x15input_rgb_image_sizeX", 1)
    with pytest.raises(ValueError, match="expected version string 'input_rgb_image_sized'"):
        parse_dlib_resnet(corrupted)


@pytest.mark.skipif(not os.environ.get("AIRSIDE_BENCH"), reason="set AIRSIDE_BENCH=1 to time")
def test_benchmark(onnx_path: Path, dlib_model: object, chips: np.ndarray) -> None:
    """Per-chip latency: dlib vs ONNX Runtime (batch 1 / 16, threads 1 / 2)."""
    batch16 = np.resize(chips, (16, *chips.shape[1:]))

    def per_chip(fn: object, n_chips: int, repeats: int) -> float:
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / (repeats * n_chips) * 1000

    one = chips[0]
    dlib_ms = per_chip(lambda: dlib_model.compute_face_descriptor(one), 1, 20)
    print(f"\ndlib compute_face_descriptor: {dlib_ms:.1f} ms/chip")
    for threads in (1, 2):
        emb = OnnxResNetEmbedder(onnx_path, threads=threads)
        b1 = per_chip(lambda e=emb: e.embed(one[None]), 1, 50)
        b16 = per_chip(lambda e=emb: e.embed(batch16), 16, 5)
        print(f"onnxruntime threads={threads}: batch1 {b1:.1f} ms/chip, batch16 {b16:.1f} ms/chip")
