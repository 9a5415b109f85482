"""Structured input fuzzing (issue 18, hardening): scene files, cameras.toml, CSV manifests and
pair lists, model files and JSON bodies to the API, generated with hypothesis.

Each loader either accepts its input or refuses it with a clear error that names the line
(or field) where it knows it: never a traceback, never a 5xx. ``max_examples`` keep the
file's run within about a minute.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import register
from tests.server_harness import running
from tests.tiny_onnx import linear_embedder

from airside.analytics.scene import SceneError, parse_scene
from airside.errors import AirsideError
from airside.evaluation.datasets import read_identities, read_pairs
from airside.governance.principals import Principal
from airside.server.cameras.config import CameraConfigError, parse_cameras
from airside.services.app import Airside
from airside.services.migration import images_from_csv
from airside.services.model_admin import register_model

PROBLEM = "application/problem+json"
ADMIN = Principal("fuzz-admin", "admin")
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure is reproducible
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- building blocks ------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
# TOML has no null; its integers are 64-bit
toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
keys = st.one_of(
    st.sampled_from(
        ["camera", "zones", "lines", "calibration", "schedules", "rules", "points", "in", "kind",
         "zone", "line", "name", "source", "fps", "image", "ground", "days", "start", "end",
         "schedule", "severity", "cooldown", "seconds", "max_people", "max_density", "type",
         "galleries", "enabled", "detect_every"]
    ),
    st.text(min_size=1, max_size=8),
)  # fmt: skip
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
toml_docs = st.dictionaries(keys, toml_values, max_size=5)


def mutate(text: str, rng: random.Random) -> str:
    """A few random edits to ``text``: a deleted, duplicated or garbled line or character."""
    lines = text.splitlines() or [""]
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        what = rng.randrange(5)
        if what == 0:
            lines.pop(i) if len(lines) > 1 else None
        elif what == 1:
            lines.insert(i, lines[i])
        elif what == 2 and lines[i]:
            j = rng.randrange(len(lines[i]))
            lines[i] = lines[i][:j] + rng.choice('[]{}="\\,.#\n\x00\x7f') + lines[i][j + 1 :]
        elif what == 3:
            lines.insert(i, rng.choice(("[zones]", "[[rules]]", "x = ", "= 1", '"', "[a.b.c]")))
        else:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
    return "\n".join(lines)


VALID_SCENE = """camera = "gate-3"

[zones.apron]
points = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]

[lines.door]
points = [[0.5, 0.0], [0.5, 1.0]]
in = "left"

[schedules.night]
days = ["mon", "tue"]
start = "22:00"
end = "06:00"

[[rules]]
type = "intrusion"
zone = "apron"
schedule = "night"

[[rules]]
type = "loitering"
zone = "apron"
seconds = 30

[[rules]]
type = "line_count"
line = "door"
"""

VALID_CAMERAS = """[[camera]]
name = "gate-3"
source = "rtsp://10.0.0.3/stream"

[[camera]]
name = "gate-4"
source = "clip.mp4"
"""


def assert_names_where(error: Exception, text: str) -> None:
    """A refusal names its line when it has one, and the line is in the file."""
    msg = str(error)
    assert msg.strip() and "Traceback" not in msg
    line = getattr(error, "line", None)
    if line is not None:
        assert f"line {line}" in msg, msg
        assert 1 <= line <= text.count("\n") + 2, (line, msg)
    field = getattr(error, "field", None)
    if field is not None:
        assert str(field) in msg, msg


# -- scene files ----------------------------------------------------------------------------


def check_scene(text: str) -> None:
    try:
        parse_scene(text, source="scene.toml")
    except SceneError as e:
        assert_names_where(e, text)
        if "not valid TOML" in str(e):
            assert e.line is not None, f"a TOML syntax error without its line: {e}"


@FUZZ
@given(doc=toml_docs)
def test_scene_tables_of_any_shape_are_refused_naming_the_line(doc: dict[str, Any]) -> None:
    check_scene(tomli_w.dumps(doc))


@FUZZ
@given(seed=st.integers(0, 2**32))
def test_damaged_scene_files_are_refused_naming_the_line(seed: int) -> None:
    check_scene(mutate(VALID_SCENE, random.Random(seed)))


@settings(FUZZ, max_examples=100)
@given(doc=st.dictionaries(st.sampled_from(["zones", "lines", "rules", "schedules",
                                            "calibration"]), toml_values, max_size=3))  # fmt: skip
def test_scene_sections_with_wrong_values_are_refused(doc: dict[str, Any]) -> None:
    check_scene(tomli_w.dumps({"camera": "gate-3", **doc}))


def test_a_scene_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    from airside.analytics.scene import load_scene
    from airside.services.scenes import read_scene_tables

    path = tmp_path / "scene.toml"
    path.write_bytes(b'camera = "g\xff\xfe"\n')
    with pytest.raises(SceneError, match="scene file"):
        load_scene(path)
    with pytest.raises(AirsideError, match=r"scene\.toml cannot be read") as err:
        read_scene_tables(path)
    assert err.value.code == "bad_scene"


# -- cameras.toml ---------------------------------------------------------------------------


def check_cameras(text: str) -> None:
    try:
        parse_cameras(text, source="cameras.toml")
    except CameraConfigError as e:
        assert_names_where(e, text)
        assert e.code == "bad_camera_config"


camera_tables = st.dictionaries(keys, toml_values, max_size=6)
cameras_lists = st.lists(camera_tables, max_size=3)


@FUZZ
@given(doc=st.one_of(toml_docs, st.builds(lambda c: {"camera": c}, cameras_lists)))
def test_cameras_files_of_any_shape_are_refused_naming_the_line(doc: dict[str, Any]) -> None:
    check_cameras(tomli_w.dumps(doc))


@FUZZ
@given(camera=toml_values)
def test_a_camera_that_is_not_a_table_is_refused(camera: Any) -> None:
    check_cameras(tomli_w.dumps({"camera": [camera]}))


@FUZZ
@given(seed=st.integers(0, 2**32))
def test_damaged_cameras_files_are_refused_naming_the_line(seed: int) -> None:
    check_cameras(mutate(VALID_CAMERAS, random.Random(seed)))


# -- CSV manifests and pair lists -----------------------------------------------------------

cells = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["1", "0", "true", "same", "", '"', '""', "a,b", "x\ny", "\x00", "é"]),
)
csv_header = st.lists(
    st.sampled_from(["subject", "image", "img_a", "img_b", "same", "fold", "identity", "basis",
                     "basis_ref", "group", ""]), min_size=0, max_size=6)  # fmt: skip


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """Mostly CSV-shaped bytes: a header, rows of any width, quoting, stray bytes."""
    header = draw(csv_header)
    rows = draw(st.lists(st.lists(cells, max_size=6), max_size=6))
    sep = draw(st.sampled_from([",", ";", "\t"]))
    text = "\n".join(sep.join(r) for r in [header, *rows])
    data = text.encode()
    extra = draw(st.sampled_from(["none", "bom", "latin1", "huge", "binary", "crlf", "quote"]))
    if extra == "bom":
        data = b"\xef\xbb\xbf" + data
    elif extra == "latin1":
        data += b"\nx,caf\xe9,1\n"
    elif extra == "huge":  # a field over csv.field_size_limit() (131,072)
        data += b'\n"' + b"x" * 140_000 + b'",b,1\n'
    elif extra == "binary":
        data = draw(st.binary(max_size=200))
    elif extra == "crlf":
        data = data.replace(b"\n", b"\r\n")
    elif extra == "quote":
        data += b'\n"unterminated,1\n'
    return data


CSV_READERS = {
    "pairs": read_pairs,
    "identities": read_identities,
    "migration": images_from_csv,
}


def _enrol_csv(path: Path) -> Any:
    from airside.cli.enrolment_cmds import _read_enrol_csv

    return _read_enrol_csv(path, None, None)


def _groups(path: Path) -> Any:
    from airside.cli.fairness_cmds import _group_column

    return _group_column(path, "group")


CSV_READERS.update({"enrol_batch": _enrol_csv, "fairness_groups": _groups})


@FUZZ
@given(data=csv_files(), reader=st.sampled_from(sorted(CSV_READERS)))
def test_csv_files_are_refused_naming_the_file_and_line(
    data: bytes, reader: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("csv") / "list.csv"
    path.write_bytes(data)
    try:
        CSV_READERS[reader](path)
    except (ValueError, AirsideError) as e:
        msg = str(e)
        assert str(path) in msg, msg  # names the file
        low = msg.lower()
        if "utf-8" in low or "valid csv" in low:
            assert "line " in msg, msg  # ...and the line, where the reader knows it


@pytest.mark.parametrize("reader", ["pairs", "identities", "migration"])
def test_a_csv_that_is_not_utf8_or_not_csv_names_its_line(reader: str, tmp_path: Path) -> None:
    head = {"pairs": "img_a,img_b,same", "identities": "image,identity",
            "migration": "subject,image"}[reader]  # fmt: skip
    path = tmp_path / "list.csv"
    path.write_bytes(f"{head}\na,b,1\n".encode() + b"caf\xe9,b,1\n")
    with pytest.raises(ValueError, match=r"list\.csv, line 3: not UTF-8 text"):
        CSV_READERS[reader](path)
    path.write_bytes(f"{head}\na,b,1\n".encode() + b'"' + b"x" * 140_000 + b'",b,1\n')
    with pytest.raises(ValueError, match=r"list\.csv, line 3: not a valid CSV file"):
        CSV_READERS[reader](path)


# -- model files through the registry ------------------------------------------------------


@pytest.fixture(scope="module")
def valid_onnx(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return linear_embedder(tmp_path_factory.mktemp("onnx") / "tiny.onnx").read_bytes()


MODEL_CODES = {"model_invalid", "model_incompatible", "model_output_invalid", "model_exists",
               "model_name_invalid", "model_family_mismatch", "model_normalisation_invalid",
               "model_normalisation_required", "licence_required", "conflict"}  # fmt: skip


@st.composite
def model_bytes(draw: st.DrawFn, valid: bytes) -> bytes:
    how = draw(st.sampled_from(["random", "truncated", "bitflip", "empty", "zeros", "text",
                                "appended", "protobuf"]))  # fmt: skip
    if how == "random":
        return draw(st.binary(min_size=1, max_size=2048))
    if how == "truncated":
        return valid[: draw(st.integers(1, len(valid) - 1))]
    if how == "bitflip":
        out = bytearray(valid)
        for pos in draw(st.lists(st.integers(0, min(len(out), 4096) - 1), min_size=1, max_size=16)):
            out[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if how == "empty":
        return b""
    if how == "zeros":
        return b"\x00" * draw(st.integers(1, 100_000))
    if how == "text":
        return draw(st.text(max_size=200)).encode()
    if how == "appended":
        return valid + draw(st.binary(min_size=1, max_size=64))
    # a protobuf-looking header (field 1 varint: ir_version) then garbage
    return b"\x08" + bytes([draw(st.integers(0, 255))]) + draw(st.binary(max_size=256))


def test_malformed_model_files_are_refused_with_a_model_code(
    app: Airside, valid_onnx: bytes, tmp_path: Path
) -> None:
    register(app, ADMIN)
    seen: list[str] = []

    @settings(FUZZ, max_examples=100)
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        blob = data.draw(model_bytes(valid_onnx))
        name = f"m{len(seen)}"
        path = tmp_path / f"{name}.onnx"  # a file name of its own: the registry keeps it
        path.write_bytes(blob)
        try:
            register_model(app, ADMIN, path, "generic", licence="MIT", name=name, mean=127.5,
                           std=127.5)  # fmt: skip
            seen.append("added")
        except AirsideError as e:
            assert str(e).strip() and "Traceback" not in str(e)
            assert e.code in MODEL_CODES, (e.code, str(e))
            seen.append(e.code)
        except ValueError as e:
            assert str(e).strip()
            seen.append("value_error")

    one()
    print("\nmodel files, outcomes:", dict(Counter(seen)))
    assert "model_invalid" in seen


# -- JSON bodies to the API -----------------------------------------------------------------

json_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                     st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10,
)  # fmt: skip
ROUTES = {
    "/api/v1/galleries": ["name", "purpose", "departs", "retain_until", "retain_seconds", "fmr",
                          "quality_bar", "embedder", "index"],
    "/api/v1/principals": ["name", "role", "scopes"],
    "/api/v1/webhooks": ["name", "url", "include_crops", "cameras", "types"],
    "/api/v1/principals/fuzz-admin/grants": ["gallery", "purpose"],
    "/api/v1/review/1/confirm": ["note"],
    "/api/v1/session": ["key"],
}  # fmt: skip
API_CODES = {"validation", "bad_request", "not_found", "conflict", "gallery_exists", "forbidden",
             "bad_reference", "model_not_found", "unknown_family", "method_not_allowed",
             "payload_too_large", "bad_key", "bad_url", "expired", "out_of_scope",
             "principal_exists", "unknown_principal", "csrf_failed", "too_many_attempts",
             "url_not_allowed"}  # fmt: skip


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    route = draw(st.sampled_from(sorted(ROUTES)))
    fields = ROUTES[route]
    how = draw(st.sampled_from(["fields", "fields", "any", "deep", "huge", "utf8", "junk"]))
    if how == "fields":  # the route's fields (and unknown ones) with values of any type
        doc = draw(st.dictionaries(st.sampled_from([*fields, "unknown", ""]), json_values,
                                   max_size=len(fields) + 1))  # fmt: skip
        return route, json.dumps(doc).encode()
    if how == "any":
        return route, json.dumps(draw(json_values)).encode()
    if how == "deep":
        depth = draw(st.sampled_from([100, 1000, 5000, 100_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = opener * depth + "1" + closer * depth
        return route, f'{{"{fields[0]}": {inner}}}'.encode()
    if how == "huge":
        number = draw(st.sampled_from(["1" + "0" * 5000, "1e999", "-1e999", "1" * 100_000,
                                       "123456789012345678901234567890"]))  # fmt: skip
        return route, f'{{"{draw(st.sampled_from(fields))}": {number}}}'.encode()
    if how == "utf8":  # a body that is not UTF-8
        return route, b'{"' + fields[0].encode() + b'": "\xff\xfe\xc3"}'
    return route, draw(st.binary(max_size=300))


def test_json_bodies_of_any_shape_get_a_4xx_problem_naming_the_field(app: Airside) -> None:
    register(app, ADMIN)
    outcomes: dict[str, int] = {}
    with running(app) as server, server.client(server.admin_key) as client:

        @settings(FUZZ, max_examples=300)
        @given(case=bodies())
        def one(case: tuple[str, bytes]) -> None:
            route, body = case
            res = client.post(route, content=body,
                              headers={"Content-Type": "application/json"})  # fmt: skip
            check_problem(res, route, body, outcomes)

        one()
    print("\nJSON bodies, outcomes:", dict(sorted(outcomes.items())))
    assert any(k.startswith("422") for k in outcomes)


def check_problem(res: httpx.Response, route: str, body: bytes, outcomes: dict[str, int]) -> None:
    where = f"POST {route} {body[:120]!r}"
    assert res.status_code < 500, f"{where}: {res.status_code} {res.text[:300]}"
    if res.status_code < 300:
        outcomes["2xx"] = outcomes.get("2xx", 0) + 1
        return
    assert res.headers.get("content-type") == PROBLEM, f"{where}: {res.text[:200]}"
    problem = res.json()
    code = problem.get("code")
    assert isinstance(code, str) and code, f"{where}: {problem}"
    assert code in API_CODES, f"{where}: unexpected code {code!r}: {problem}"
    assert "Traceback" not in res.text
    if code == "validation" and "fields" in problem:
        assert problem["fields"], f"{where}: {problem}"
        for f in problem["fields"]:
            assert f["problem"], f"{where}: {problem}"
    key = f"{res.status_code} {code}"
    outcomes[key] = outcomes.get(key, 0) + 1
