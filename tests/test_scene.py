"""Scene files: the example loads; bad input is refused with the line and the problem."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from airside.analytics import geometry
from airside.analytics.scene import (
    CrowdingRule,
    IntrusionRule,
    LineCountRule,
    LoiteringRule,
    SceneError,
    load_scene,
    parse_scene,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "scene.toml"

BASE = """\
camera = "cam-1"

[zones.apron]
points = [[0.1, 0.5], [0.6, 0.5], [0.6, 0.9], [0.1, 0.9]]

[lines.door]
points = [[0.2, 0.6], [0.8, 0.6]]
in = "down"

[schedules.night]
timezone = "Europe/Berlin"
windows = [{ days = ["mon-fri"], from = "22:00", to = "06:00" }]
"""


def refused(text: str) -> SceneError:
    with pytest.raises(SceneError) as e:
        parse_scene(text, source="s.toml")
    return e.value


def line_of(text: str, marker: str) -> int:
    (n,) = [i + 1 for i, line in enumerate(text.splitlines()) if marker in line]
    return n


def rule(body: str) -> str:
    return BASE + "\n[[rules]]\n" + body + "\n"


# --------------------------------------------------------------------------------------------
# what a good file gives


def test_the_example_scene_loads() -> None:
    scene = load_scene(EXAMPLE)
    assert scene.camera == "gate-12"
    assert set(scene.zones) == {"apron_door", "waiting"}
    assert [r.type for r in scene.rules] == [
        "intrusion",
        "loitering",
        "crowding",
        "running",
        "fall",
        "line_count",
    ]
    assert scene.speed_unit == "m/s"
    assert scene.zones["waiting"].area_m2 is not None and scene.zones["waiting"].area_m2 > 0


def test_defaults_fill_in_severity_cooldown_and_names() -> None:
    scene = parse_scene(rule('type = "intrusion"\nzone = "apron"'))
    (r,) = scene.rules
    assert isinstance(r, IntrusionRule)
    assert (r.name, r.severity, r.cooldown, r.min_inside, r.line) == (
        "intrusion:apron",
        "critical",
        60.0,
        0.0,
        None,
    )
    assert scene.speed_unit == "image heights/s"


def test_each_rule_records_the_line_it_starts_on() -> None:
    text = rule('type = "line_count"\nline = "door"')
    (r,) = parse_scene(text).rules
    assert isinstance(r, LineCountRule) and r.line_no == line_of(text, "[[rules]]")


def test_calibration_maps_its_own_points_and_gives_areas_in_square_metres() -> None:
    scene = load_scene(EXAMPLE)
    cal = scene.calibration
    assert cal is not None
    ground, ok = cal.to_ground(np.array(cal.image))
    assert ok.all() and np.allclose(ground, cal.ground, atol=1e-9)
    # The calibration quad itself is a 6 x 12 m rectangle on the floor.
    quad = parse_scene(
        EXAMPLE.read_text().replace(
            "[zones.waiting]",
            "[zones.quad]\npoints = " + str([list(p) for p in cal.image]) + "\n\n[zones.waiting]",
        )
    )
    assert quad.zones["quad"].area_m2 == pytest.approx(72.0)


def test_an_overnight_schedule_runs_past_midnight_in_its_timezone() -> None:
    night = parse_scene(BASE).schedules["night"]
    berlin = datetime(2026, 1, 6, 22, 30, tzinfo=UTC)  # Tue 23:30 in Berlin (UTC+1)
    assert night.active(berlin)
    assert night.active(datetime(2026, 1, 7, 4, 0, tzinfo=UTC))  # Wed 05:00 Berlin
    assert not night.active(datetime(2026, 1, 7, 5, 30, tzinfo=UTC))  # Wed 06:30
    assert not night.active(datetime(2026, 1, 6, 20, 0, tzinfo=UTC))  # Tue 21:00
    assert night.active(datetime(2026, 1, 10, 3, 0, tzinfo=UTC))  # Sat 04:00, from Fri 22:00
    assert not night.active(datetime(2026, 1, 10, 22, 0, tzinfo=UTC))  # Sat 23:00
    # Summer time: 21:30 UTC is 23:30 in Berlin (UTC+2).
    assert night.active(datetime(2026, 7, 7, 21, 30, tzinfo=UTC))


def test_a_whole_day_window_and_day_ranges_over_the_weekend() -> None:
    text = BASE.replace(
        'windows = [{ days = ["mon-fri"], from = "22:00", to = "06:00" }]',
        'windows = [{ days = ["sat-mon"], from = "00:00", to = "24:00" }]',
    )
    sched = parse_scene(text).schedules["night"]
    assert sched.active(datetime(2026, 1, 11, 12, 0, tzinfo=UTC))  # Sunday
    assert sched.active(datetime(2026, 1, 12, 12, 0, tzinfo=UTC))  # Monday
    assert not sched.active(datetime(2026, 1, 13, 12, 0, tzinfo=UTC))  # Tuesday


def test_keys_are_located_in_multi_line_arrays_and_inline_tables() -> None:
    text = BASE.replace(
        "points = [[0.1, 0.5], [0.6, 0.5], [0.6, 0.9], [0.1, 0.9]]",
        "points = [\n  [0.1, 0.5],  # top left\n  [0.6, 0.5],\n  [0.6, 1.9],\n  [0.1, 0.9],\n]",
    )
    e = refused(text)
    assert e.line == line_of(text, "[0.6, 1.9]")
    assert "zone 'apron' point 3 (0.6, 1.9) is outside the frame" in str(e)
    assert str(e).startswith(f"s.toml line {e.line}: ")


# --------------------------------------------------------------------------------------------
# bad input: each refusal names the line and the problem


def test_a_self_intersecting_polygon_is_refused() -> None:
    text = BASE.replace(
        "[[0.1, 0.5], [0.6, 0.5], [0.6, 0.9], [0.1, 0.9]]",
        "[[0.1, 0.5], [0.6, 0.9], [0.6, 0.5], [0.1, 0.9]]",  # a bow tie
    )
    e = refused(text)
    assert e.line == line_of(text, "[0.6, 0.9], [0.6, 0.5]")
    assert "zone 'apron' is self-intersecting: edge 1-2 crosses edge 3-4" in e.problem


def test_coordinates_outside_the_frame_are_refused() -> None:
    text = BASE.replace("[[0.2, 0.6], [0.8, 0.6]]", "[[0.2, 0.6], [1.2, 0.6]]")
    e = refused(text)
    assert e.line == line_of(text, "[1.2, 0.6]")
    assert "outside the frame" in e.problem and "normalised to [0, 1]" in e.problem


def test_pixel_coordinates_are_refused_as_outside_the_frame() -> None:
    text = BASE.replace("[0.6, 0.9], [0.1, 0.9]]", "[640, 480], [0.1, 0.9]]")
    e = refused(text)
    assert e.line == line_of(text, "[640, 480]") and "(640, 480)" in e.problem


def test_an_unknown_rule_is_refused() -> None:
    text = rule('type = "tailgating"\nzone = "apron"')
    e = refused(text)
    assert e.line == line_of(text, "tailgating")
    assert "unknown rule 'tailgating'" in e.problem and "loitering" in e.problem


def test_an_unknown_parameter_is_refused() -> None:
    text = rule('type = "loitering"\nzone = "apron"\ndwel = 30')
    e = refused(text)
    assert e.line == line_of(text, "dwel =")
    assert "unknown key 'dwel'" in e.problem


def test_a_negative_duration_is_refused() -> None:
    text = rule('type = "loitering"\nzone = "apron"\ndwell = 30\ngrace = -1')
    e = refused(text)
    assert e.line == line_of(text, "grace = -1") and "grace must be >= 0 seconds" in e.problem


def test_a_zero_dwell_is_refused() -> None:
    text = rule('type = "loitering"\nzone = "apron"\ndwell = 0')
    e = refused(text)
    assert e.line == line_of(text, "dwell = 0") and "dwell must be > 0" in e.problem


def test_a_zero_count_limit_is_refused() -> None:
    text = rule('type = "crowding"\nzone = "apron"\nmax_count = 0')
    e = refused(text)
    assert e.line == line_of(text, "max_count") and "at least 1" in e.problem


def test_a_zero_speed_limit_is_refused() -> None:
    text = rule('type = "running"\nmax_speed = 0.0')
    e = refused(text)
    assert e.line == line_of(text, "max_speed") and "max_speed must be > 0" in e.problem


def test_a_negative_cooldown_is_refused() -> None:
    text = rule('type = "fall"\ncooldown = -5')
    e = refused(text)
    assert e.line == line_of(text, "cooldown") and "cooldown must be >= 0" in e.problem


def test_an_impossible_torso_angle_is_refused() -> None:
    text = rule('type = "fall"\ntorso_angle = 120')
    e = refused(text)
    assert e.line == line_of(text, "torso_angle") and "(0, 90] degrees" in e.problem


def test_a_text_where_a_number_belongs_is_refused() -> None:
    text = rule('type = "loitering"\nzone = "apron"\ndwell = "5 min"')
    e = refused(text)
    assert e.line == line_of(text, "dwell =") and "must be a number" in e.problem


def test_a_missing_required_parameter_names_the_rule() -> None:
    text = rule('type = "loitering"\nzone = "apron"')
    e = refused(text)
    assert e.line == line_of(text, "[[rules]]") and "needs dwell" in e.problem


def test_an_unknown_zone_reference_is_refused() -> None:
    text = rule('type = "intrusion"\nzone = "apronn"')
    e = refused(text)
    assert e.line == line_of(text, 'zone = "apronn"')
    assert "unknown zone 'apronn' (defined: apron)" in e.problem


def test_an_unknown_line_reference_is_refused() -> None:
    text = rule('type = "line_count"\nline = "gate"')
    e = refused(text)
    assert e.line == line_of(text, 'line = "gate"') and "unknown line 'gate'" in e.problem


def test_an_unknown_schedule_reference_is_refused() -> None:
    text = rule('type = "intrusion"\nzone = "apron"\nschedule = "nights"')
    e = refused(text)
    assert e.line == line_of(text, "schedule =") and "unknown schedule 'nights'" in e.problem


def test_a_calibration_with_collinear_points_is_not_invertible() -> None:
    text = (
        BASE
        + "\n[calibration]\nimage = [[0.1, 0.9], [0.5, 0.9], [0.9, 0.9], [0.5, 0.5]]\n"
        + "ground = [[0, 0], [5, 0], [10, 0.1], [5, 10]]\n"
    )
    e = refused(text)
    assert e.line == line_of(text, "image =")
    assert "not invertible: image points 1, 2 and 3 are (nearly) on one line" in e.problem


def test_a_calibration_with_degenerate_ground_points_is_not_invertible() -> None:
    text = (
        BASE
        + "\n[calibration]\nimage = [[0.1, 0.9], [0.9, 0.9], [0.7, 0.5], [0.3, 0.5]]\n"
        + "ground = [[0, 0], [6, 0], [6, 0], [0, 12]]\n"
    )
    e = refused(text)
    assert e.line == line_of(text, "ground =") and "not invertible" in e.problem


def test_a_calibration_in_the_wrong_order_folds_the_ground_and_is_refused() -> None:
    text = (
        BASE
        + "\n[calibration]\nimage = [[0.1, 0.9], [0.9, 0.9], [0.7, 0.5], [0.3, 0.5]]\n"
        + "ground = [[0, 0], [6, 0], [0, 12], [6, 12]]\n"
    )
    e = refused(text)
    assert e.line == line_of(text, "ground =") and "not in the same order" in e.problem


def test_a_density_limit_needs_a_calibration() -> None:
    text = rule('type = "crowding"\nzone = "apron"\nmax_density = 2.0')
    e = refused(text)
    assert e.line == line_of(text, "max_density") and "needs a [calibration]" in e.problem


def test_a_crowding_rule_needs_exactly_one_limit() -> None:
    e = refused(rule('type = "crowding"\nzone = "apron"'))
    assert "one of max_count or max_density" in e.problem


def test_a_line_crossed_along_itself_is_refused() -> None:
    text = BASE.replace('in = "down"', 'in = "left"')
    e = refused(text)
    assert e.line == line_of(text, 'in = "left"') and "ambiguous" in e.problem


def test_an_unknown_timezone_is_refused() -> None:
    text = BASE.replace("Europe/Berlin", "Europe/Atlantis")
    e = refused(text)
    assert e.line == line_of(text, "Atlantis") and "unknown timezone" in e.problem


def test_a_time_that_is_not_a_time_of_day_is_refused() -> None:
    text = BASE.replace('to = "06:00"', 'to = "25:00"')
    e = refused(text)
    assert e.line == line_of(text, "25:00") and "not a time of day" in e.problem


def test_an_unknown_day_is_refused() -> None:
    text = BASE.replace('["mon-fri"]', '["mon-fry"]')
    e = refused(text)
    assert e.line == line_of(text, "mon-fry") and "unknown day 'mon-fry'" in e.problem


def test_two_rules_with_one_name_are_refused() -> None:
    text = (
        rule('type = "intrusion"\nzone = "apron"')
        + '\n[[rules]]\ntype = "intrusion"\nzone = "apron"\n'
    )
    e = refused(text)
    assert e.line == [i + 1 for i, s in enumerate(text.splitlines()) if s == "[[rules]]"][1]
    assert "used twice" in e.problem


def test_invalid_toml_names_the_line() -> None:
    text = BASE + "\n[[rules]]\ntype = intrusion\n"
    e = refused(text)
    assert e.line == line_of(text, "type = intrusion") and "not valid TOML" in e.problem


def test_a_key_repeated_on_the_last_line_names_that_line() -> None:
    # Without a final newline, tomllib finds it only once the whole text is read, and says
    # "at end of document"
    text = BASE + '\n[[rules]]\ntype = "intrusion"\nzone = "apron"\nzone = "apron"'
    e = refused(text)
    assert e.line == len(text.rstrip().splitlines()) and "not valid TOML" in e.problem
    assert "end of document" not in e.problem


def test_a_scene_needs_a_camera() -> None:
    e = refused(BASE.replace('camera = "cam-1"', ""))
    assert "needs camera" in e.problem


def test_a_zone_with_two_points_is_refused() -> None:
    text = BASE.replace(
        "[[0.1, 0.5], [0.6, 0.5], [0.6, 0.9], [0.1, 0.9]]", "[[0.1, 0.5], [0.6, 0.5]]"
    )
    e = refused(text)
    assert e.line == line_of(text, "[[0.1, 0.5], [0.6, 0.5]]") and "at least 3 points" in e.problem


def test_a_missing_file_is_a_scene_error(tmp_path: Path) -> None:
    with pytest.raises(SceneError, match="cannot read the scene file"):
        load_scene(tmp_path / "nope.toml")


def test_crowding_and_loitering_rules_parse_their_parameters() -> None:
    scene = parse_scene(
        rule('type = "crowding"\nzone = "apron"\nmax_count = 4\nsustain = 0')
        + '\n[[rules]]\ntype = "loitering"\nzone = "apron"\ndwell = 30\ngrace = 1.5\n'
    )
    crowd, loiter = scene.rules
    assert isinstance(crowd, CrowdingRule) and (crowd.max_count, crowd.sustain) == (4, 0.0)
    assert isinstance(loiter, LoiteringRule) and (loiter.dwell, loiter.grace) == (30.0, 1.5)


def test_homography_agrees_with_a_known_projective_map() -> None:
    h = np.array([[2.0, 0.3, 1.0], [0.1, 1.5, -2.0], [0.05, 0.2, 1.0]])
    src = np.array([[0.1, 0.2], [0.9, 0.1], [0.8, 0.9], [0.2, 0.7]])
    dst, _ = geometry.project(h, src)
    est = geometry.homography(src, dst)
    pts = np.random.default_rng(0).random((50, 2))
    assert np.allclose(geometry.project(est, pts)[0], geometry.project(h, pts)[0], atol=1e-9)
