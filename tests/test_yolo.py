"""YOLO-family person detectors decode Ultralytics and YOLOX exports exactly.

Each test builds a tiny ONNX graph that ignores its image and returns known candidates,
laid out as the family's exports lay them out, runs it through the real detector (ONNX
Runtime included), and checks the boxes against values worked out by hand: decoding on
the canvas, the letterbox mapped back to the image, person class only, NMS.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from airside.cli.main import app
from airside.errors import AirsideError
from airside.services.model_admin import validate_detector
from airside.vision.model_files import add_model
from airside.vision.people import PersonDetector, build_person_detector
from airside.vision.people.yolo import (
    UltralyticsYoloDetector,
    YoloxDetector,
    build_person_model,
    cells,
    plan_letterbox,
)

SIDE = 128  # model input 128x128: 16x16 + 8x8 + 4x4 = 336 cells
N = cells(SIDE, SIDE)


def write_graph(path: Path, value: np.ndarray, *, through_exp: bool = False) -> Path:
    """A (1, 3, SIDE, SIDE) -> constant graph; ``through_exp`` puts an Exp on the output's
    path ((v + 1) - Exp(0)), as a YOLOX export that decodes its boxes has."""
    value = np.asarray(value, dtype=np.float32)
    if through_exp:
        nodes = [
            helper.make_node(
                "Constant", [], ["plus1"], value=numpy_helper.from_array(value + 1, "plus1")
            ),
            helper.make_node(
                "Constant",
                [],
                ["zero"],
                value=numpy_helper.from_array(np.zeros_like(value), "zero"),
            ),
            helper.make_node("Exp", ["zero"], ["one"]),
            helper.make_node("Sub", ["plus1", "one"], ["output0"]),
        ]
    else:
        nodes = [
            helper.make_node(
                "Constant", [], ["output0"], value=numpy_helper.from_array(value, "output0")
            )
        ]
    graph = helper.make_graph(
        nodes,
        "tiny-yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(value.shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def v8_rows(n: int, classes: int = 80) -> np.ndarray:
    return np.zeros((n, 4 + classes), dtype=np.float32)


def test_letterbox_is_centred_like_ultralytics_and_top_left_like_yolox() -> None:
    (rw, rh), place = plan_letterbox(256, 128, fixed=(128, 128), max_side=640, centre=True)
    assert (rw, rh) == (128, 64)
    assert (place.left, place.top, place.fx, place.fy) == (0, 32, 0.5, 0.5)
    _, top_left = plan_letterbox(256, 128, fixed=(128, 128), max_side=640, centre=False)
    assert (top_left.left, top_left.top) == (0, 0)
    # a free-size model: scaled to max_side and padded up to a multiple of 32
    (rw, rh), free = plan_letterbox(1000, 500, fixed=None, max_side=640, centre=True)
    assert (rw, rh, free.width, free.height) == (640, 320, 640, 320)


def test_yolov8_layout_keeps_people_only_maps_the_letterbox_back_and_applies_nms(
    tmp_path: Path,
) -> None:
    rows = v8_rows(N)
    rows[10, :4] = (64, 64, 32, 40)  # canvas cx, cy, w, h
    rows[10, 4 + 0] = 0.9  # person
    rows[11, :4] = (66, 64, 32, 40)  # the same person, weaker: suppressed by NMS
    rows[11, 4 + 0] = 0.6
    rows[12, :4] = (20, 60, 10, 10)  # a car, very sure: not a person
    rows[12, 4 + 2] = 0.99
    rows[13, :4] = (100, 80, 8, 16)  # a person below the threshold
    rows[13, 4 + 0] = 0.1
    path = write_graph(tmp_path / "yolov8n.onnx", rows.T[None])  # (1, 84, N)
    det = UltralyticsYoloDetector(path)
    found = det.detect(np.zeros((128, 256, 3), dtype=np.uint8))
    # canvas (48, 44, 80, 84); image = (canvas - (0, 32)) / 0.5
    assert len(found) == 1
    assert found[0].box == pytest.approx((96.0, 24.0, 160.0, 104.0))
    assert found[0].score == pytest.approx(0.9)
    assert found[0].keypoints is None
    assert det.layout((1, 84, N), SIDE, SIDE) == (True, False)


def test_a_transposed_v8_export_is_recognised_by_its_candidate_count(tmp_path: Path) -> None:
    rows = v8_rows(N)
    rows[5, :4] = (32, 32, 16, 16)
    rows[5, 4] = 0.8
    det = UltralyticsYoloDetector(write_graph(tmp_path / "t.onnx", rows[None]))  # (1, N, 84)
    (found,) = det.detect(np.zeros((128, 128, 3), dtype=np.uint8))
    assert found.box == pytest.approx((24.0, 24.0, 40.0, 40.0))


def test_yolov5_layout_multiplies_objectness_by_the_class_probability(tmp_path: Path) -> None:
    rows = np.zeros((3 * N, 85), dtype=np.float32)  # (1, 3 anchors x N, 5 + 80)
    rows[7, :5] = (64, 64, 20, 30, 0.8)
    rows[7, 5 + 0] = 0.5  # score 0.4
    rows[8, :5] = (30, 30, 10, 10, 0.9)
    rows[8, 5 + 0] = 0.2  # score 0.18 < 0.25
    det = UltralyticsYoloDetector(write_graph(tmp_path / "yolov5s.onnx", rows[None]))
    assert det.layout((1, 3 * N, 85), SIDE, SIDE) == (False, True)
    found = det.detect(np.zeros((256, 256, 3), dtype=np.uint8))
    assert [d.score for d in found] == pytest.approx([0.4])
    assert found[0].box == pytest.approx((108.0, 98.0, 148.0, 158.0))  # x2: 256 -> 128


def test_a_one_class_person_model_and_another_person_class_index(tmp_path: Path) -> None:
    rows = np.zeros((N, 5), dtype=np.float32)  # (1, 4 + 1, N)
    rows[3, :4] = (64, 64, 16, 16)
    rows[3, 4] = 0.7
    det = build_person_model("yolo", write_graph(tmp_path / "p.onnx", rows.T[None]))
    assert len(det.detect(np.zeros((128, 128, 3), dtype=np.uint8))) == 1
    with pytest.raises(AirsideError) as exc:
        build_person_model("yolo", tmp_path / "p.onnx", person_class=3).detect(
            np.zeros((128, 128, 3), dtype=np.uint8)
        )
    assert exc.value.code == "model_mismatch"


def yolox_rows(classes: int = 80) -> np.ndarray:
    return np.zeros((N, 5 + classes), dtype=np.float32)


def test_yolox_raw_outputs_are_decoded_on_the_stride_grids(tmp_path: Path) -> None:
    rows = yolox_rows()
    # stride 16 level starts after the 16x16 cells of stride 8; cell (col 3, row 2)
    i = 16 * 16 + 2 * 8 + 3
    rows[i, :4] = (0.5, 0.25, math.log(2), math.log(3))
    rows[i, 4] = 0.9  # objectness
    rows[i, 5 + 0] = 0.8  # person: score 0.72
    # stride 32, cell (col 1, row 3), a dog
    j = 16 * 16 + 8 * 8 + 3 * 4 + 1
    rows[j, :4] = (0, 0, 0, 0)
    rows[j, 4], rows[j, 5 + 16] = 0.9, 0.9
    det = YoloxDetector(write_graph(tmp_path / "yolox_s.onnx", rows[None]))
    assert det.decoded is False
    # 256x256 -> 128x128 at the top left: image = canvas x 2
    (found,) = det.detect(np.zeros((256, 256, 3), dtype=np.uint8))
    # cx = (0.5 + 3) x 16 = 56, cy = (0.25 + 2) x 16 = 36, w = 2 x 16, h = 3 x 16
    assert found.box == pytest.approx((80.0, 24.0, 144.0, 120.0), abs=1e-3)
    assert found.score == pytest.approx(0.72)


def test_a_yolox_graph_that_decodes_its_boxes_is_taken_as_it_is(tmp_path: Path) -> None:
    rows = yolox_rows()
    rows[0, :4] = (40, 50, 20, 30)  # exact in float32 through (v + 1) - 1
    rows[0, 4], rows[0, 5] = 1.0, 0.5
    det = YoloxDetector(write_graph(tmp_path / "decoded.onnx", rows[None], through_exp=True))
    assert det.decoded is True
    (found,) = det.detect(np.zeros((128, 128, 3), dtype=np.uint8))
    assert found.box == pytest.approx((30.0, 35.0, 50.0, 65.0))


def test_yolox_input_is_bgr_raw_pixels_padded_grey(tmp_path: Path) -> None:
    det = YoloxDetector(write_graph(tmp_path / "x.onnx", yolox_rows()[None]))
    image = np.zeros((64, 128, 3), dtype=np.uint8)
    image[..., 0] = 200  # red
    blob, place = det.prepare(image)
    assert (place.left, place.top) == (0, 0)
    assert blob[0, 2, 0, 0] == 200 and blob[0, 0, 0, 0] == 0  # BGR
    assert blob[0, 0, 127, 0] == 114  # padding below
    ultra = UltralyticsYoloDetector(write_graph(tmp_path / "u.onnx", v8_rows(N).T[None]))
    blob, place = ultra.prepare(image)
    assert place.top == 32 and blob[0, 0, 32, 0] == pytest.approx(200 / 255)
    assert blob[0, 0, 0, 0] == pytest.approx(114 / 255)


def test_models_of_other_formats_are_refused_as_mismatched(tmp_path: Path) -> None:
    with pytest.raises(AirsideError) as exc:
        YoloxDetector(write_graph(tmp_path / "small.onnx", np.zeros((1, N, 4))))
    assert exc.value.code == "model_mismatch"
    det = YoloxDetector(write_graph(tmp_path / "wrong.onnx", np.zeros((1, 100, 85))))
    with pytest.raises(AirsideError) as exc:
        det.detect(np.zeros((128, 128, 3), dtype=np.uint8))
    assert exc.value.code == "model_mismatch"
    with pytest.raises(AirsideError) as exc:
        build_person_model("detr", tmp_path / "wrong.onnx")
    assert exc.value.code == "unknown_family"


def test_a_registered_yolo_model_is_built_by_name(tmp_path: Path) -> None:
    rows = v8_rows(N)
    rows[0, :4], rows[0, 4] = (64, 64, 32, 32), 0.9
    (tmp_path / "in").mkdir()
    src = write_graph(tmp_path / "in" / "yolo11n.onnx", rows.T[None])
    models = tmp_path / "models"
    manifest = add_model(
        models, src, "yolo", licence="AGPL-3.0", name="people11", validate=validate_detector
    )
    assert (manifest.kind, manifest.family, manifest.input_size) == (
        "person-detector",
        "yolo",
        (128, 128),
    )
    det: PersonDetector = build_person_detector("people11", models_dir=models)
    assert isinstance(det, UltralyticsYoloDetector)
    assert len(det.detect(np.zeros((128, 128, 3), dtype=np.uint8))) == 1


def test_a_face_model_is_not_a_person_detector(tmp_path: Path) -> None:
    from tests.tiny_onnx import linear_embedder

    models = tmp_path / "models"
    add_model(models, linear_embedder(tmp_path / "e.onnx"), "arcface", licence="MIT", name="e")
    with pytest.raises(AirsideError) as exc:
        build_person_detector("e", models_dir=models)
    assert exc.value.code == "model_family_mismatch"


def test_cli_adds_yolo_and_yolox_files_as_person_detectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("AIRSIDE_FACE_DETECTOR", "AIRSIDE_EMBEDDER_MODEL", "AIRSIDE_MODELS_DIR"):
        monkeypatch.delenv(var, raising=False)
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(app, ["--data-dir", str(tmp_path / "data"), *args])

    rows = v8_rows(N)
    yolo = write_graph(tmp_path / "yolov8n.onnx", rows.T[None])
    yolox = write_graph(tmp_path / "yolox_nano.onnx", yolox_rows()[None])
    for path, family in ((yolo, "yolo"), (yolox, "yolox")):
        res = cli("models", "add", str(path), "--family", family, "--licence", "Apache-2.0")
        assert res.exit_code == 0, res.stderr
    listed = {m["name"]: m for m in json.loads(cli("models", "list", "--json").stdout)}
    assert listed["yolov8n"]["kind"] == "person-detector"
    assert listed["yolox_nano"]["family"] == "yolox"
    # a file that fits no YOLO layout is refused by the family check
    bad = write_graph(tmp_path / "bad.onnx", np.zeros((1, 7, 3)))
    res = cli("models", "add", str(bad), "--family", "yolox", "--licence", "MIT")
    assert res.exit_code != 0
