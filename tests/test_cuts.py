"""Hard cuts end every track: a box where a tracked face was is someone else after one."""

from __future__ import annotations

import numpy as np
import pytest

from airside.synthetic.clips import Sprite, background, render
from airside.video.cuts import CutDetector, content_change, content_thumbnail

SIZE = (640, 480)


def test_faces_moving_through_one_view_are_not_a_cut() -> None:
    clip = render(
        40,
        SIZE,
        [
            Sprite("a", "astronaut", (150, 180), ((100, 150), (500, 300))),
            Sprite("h", "hopper", (150, 180), ((550, 300), (120, 200)), start=10),
        ],
    )
    cuts = CutDetector()
    assert not any(cuts.update(img, i / 25) for i, img in enumerate(clip.images))


def test_another_view_is_a_cut() -> None:
    a = background(SIZE)
    b = (255 - background(SIZE, seed=1)) // 2
    cuts = CutDetector()
    assert [cuts.update(img, t) for t, img in enumerate((a, a, b, b))] == [
        False,
        False,
        True,
        False,
    ]
    assert cuts.last_score < 1.0


def test_a_flash_ends_the_tracks_once_not_twice() -> None:
    view = background(SIZE)
    flash = np.full_like(view, 250)
    cuts = CutDetector(min_gap_s=0.5)
    frames = [view, flash, view, view]
    assert [cuts.update(img, i * 0.04) for i, img in enumerate(frames)] == [
        False,
        True,
        False,
        False,
    ]


def test_the_score_ignores_the_frame_size() -> None:
    small, large = background((320, 240)), background((1280, 960))
    assert content_change(content_thumbnail(small), content_thumbnail(large)) < 3.0


@pytest.mark.parametrize("threshold", [0.0, -1.0, 300.0])
def test_a_threshold_outside_the_score_range_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        CutDetector(threshold)
