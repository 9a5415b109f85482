"""``airside models bench``: detectors side by side, by one stated rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.conftest import shared_data
from typer.testing import CliRunner

from airside.cli.main import app
from airside.evaluation.detector_bench import (
    hog_baselines,
    is_labelled_face,
    make_frame,
    run_bench,
    verdict,
)
from airside.vision.protocols import Detection


def det(x0: float, y0: float, x1: float, y1: float) -> Detection:
    return Detection(box=(x0, y0, x1, y1), score=1.0, detector="test")


@pytest.mark.parametrize(
    ("box", "size", "counts"),
    [
        ((75, 70, 180, 185), (250, 250), True),  # the centred face of an LFW image
        ((37, 57, 163, 221), (320, 243), True),  # a Yale face left of the centre
        ((150, 20, 240, 110), (250, 250), False),  # a face in the corner
        ((115, 115, 135, 135), (250, 250), False),  # a small box at the centre (an eye)
        ((0, 0, 250, 250), (250, 250), False),  # the whole image
    ],
)
def test_the_labelled_face_is_a_face_sized_box_near_the_centre(
    box: tuple[float, float, float, float], size: tuple[int, int], counts: bool
) -> None:
    assert is_labelled_face(det(*box), *size) is counts


def test_frames_are_640x480_with_the_face_image_centred(astronaut: np.ndarray) -> None:
    frame = make_frame(astronaut)
    assert frame.shape == (480, 640, 3)
    assert (frame[:, :80] == 128).all() and (frame[:, -80:] == 128).all()


@pytest.fixture
def centred_faces(tmp_path: Path, astronaut: np.ndarray) -> Path:
    """A 3-image dataset: the astronaut cropped so that her face is centred."""
    folder = tmp_path / "faces"
    folder.mkdir()
    crop = astronaut[0:250, 99:349]
    rows = ["image,identity"]
    for i, scale in enumerate((1.0, 0.9, 1.1)):
        size = round(250 * scale)
        Image.fromarray(crop).resize((size, size)).save(folder / f"a{i}.png")
        rows.append(f"a{i}.png,astronaut")
    (folder / "identities.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_the_bench_measures_latency_and_recall_and_skips_absent_data(
    centred_faces: Path, tmp_path: Path
) -> None:
    hog = hog_baselines()[:1]
    steps: list[int] = []
    result = run_bench(
        hog,
        frames=2,
        repeats=2,
        datasets={"faces": centred_faces, "absent": tmp_path / "nothing"},
        progress=steps.append,
        on_total=lambda n: steps.append(-n),
    )
    data = result.as_dict()
    (row,) = data["detectors"]
    assert row["latency_calls"] == 4 and 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
    assert row["recall"]["faces"] == {
        "images": 3, "found": 3, "recall": 1.0, "other_per_image": 0.0
    }  # fmt: skip
    assert "absent" in data["skipped"] and data["datasets"] == {"faces": 3}
    assert -steps[0] == sum(steps[1:]) == 2 + 3  # frames, then images, per detector


def test_no_dataset_at_all_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no face dataset is present"):
        run_bench(hog_baselines()[:1], datasets={"lfw": tmp_path / "lfw"})


def test_the_verdict_compares_yunet_with_each_hog_baseline() -> None:
    rec = {"d": {"recall": 0.9}}
    rows = [
        {"detector": "dlib-hog (a)", "latency_p50_ms": 100.0, "recall": rec},
        {"detector": "yunet:y", "latency_p50_ms": 20.0, "recall": {"d": {"recall": 0.95}}},
    ]
    (line,) = verdict({"detectors": rows})
    assert "5.0x faster" in line and "meets the 3x target" in line


def test_models_bench_runs_small_on_the_development_data(tmp_path: Path) -> None:
    yunet = shared_data("models", "yunet", "face_detection_yunet_2023mar.onnx")
    shared_data("faces", "lfw_view1", "identities.csv")
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "data")]
    added = runner.invoke(
        app, [*base, "models", "add", str(yunet), "--family", "yunet", "--licence", "MIT"]
    )
    assert added.exit_code == 0, added.stderr
    res = runner.invoke(app, [*base, "models", "bench", "--images", "5", "--json"])
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    names = [d["detector"] for d in data["detectors"]]
    assert names[0].startswith("dlib-hog") and "yunet:face_detection_yunet_2023mar" in names
    assert all(v == 5 for v in data["datasets"].values())
    assert data["verdict"] and data["frame"] == "640x480"
