"""Every operation of the HTTP API fuzzed against its own OpenAPI document (schemathesis):
generated requests, valid and not, on a real server over loopback with the admin key, must
never get a server error and must get answers the document describes (a documented status
code, its content type, its body schema).

The cases are driven here, not by ``schema.parametrize()``: schemathesis's pytest plugin
(4.32) reads ``request.node._nodeid``, which pytest 9 no longer has. Uploads are generated
too (multipart parts of arbitrary bytes, never a face): they reach the decoders' refusals,
not a match. Deterministic (``derandomize``); about two minutes on two cores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, CheckFunction, GenerationMode, checks
from tests.conftest import png_bytes
from tests.server_harness import Server, running

from airside.config import Settings
from airside.services.app import Airside
from airside.vision.analyzer import FaceAnalyzer

EXAMPLES = 10  # per operation and generation mode (positive, negative)
EXISTING = {"name": "g1", "subject": "S1"}


@pytest.fixture
def fuzz_server(tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray) -> Iterator[Server]:
    # Generated requests may carry bad credentials: no lockout of the loopback address.
    app = Airside(Settings(data_dir=tmp_path / "data", auth_fail_limit=1_000_000),
                  analyzer_factory=lambda _s: analyzer)  # fmt: skip
    try:
        with running(app) as server, server.client(server.admin_key) as c:
            # State for the operations with path parameters to find now and then.
            res = c.post("/api/v1/galleries", json={"name": "g1", "purpose": "fuzz"})
            assert res.status_code == 201, res.text
            photo = ("a.png", png_bytes(astronaut), "image/png")
            res = c.post("/api/v1/galleries/g1/subjects/S1/enrolments",
                         files=[("image", photo)], data={"basis": "consent"})  # fmt: skip
            assert res.status_code == 201, res.text
            yield server
    finally:
        app.close()


def _cases(operation: APIOperation, mode: GenerationMode) -> st.SearchStrategy[Case]:
    """Generated cases, half of them on the gallery and subject that exist."""
    names = {p.name for p in operation.path_parameters}
    known = {k: v for k, v in EXISTING.items() if k in names}
    generated = operation.as_strategy(generation_mode=mode)
    if not known:
        return generated
    return st.one_of(generated, operation.as_strategy(generation_mode=mode, path_parameters=known))


def _excluded(operation: APIOperation) -> list[CheckFunction]:
    # ``positive_data_acceptance`` wants every schema-valid request accepted; the API's
    # 4xx answers to some enforce what OpenAPI cannot say: rules across fields (a departure
    # time or a retention end, not both; galleries or a scene), an upload's content (an
    # empty file is no image), the store's state (calibration needs enough subjects).
    excluded = [checks.positive_data_acceptance]
    if operation.body and all(b.media_type == "multipart/form-data" for b in operation.body):
        # A multipart part is text on the wire: a "boolean" or "integer" mutant of a
        # string part ("false", "0") is a valid string, and no mutation of it is invalid.
        excluded.append(checks.negative_data_rejection)
    return excluded


def _fuzz(operation: APIOperation, mode: GenerationMode, server: Server, sent: list[str]) -> None:
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    excluded = _excluded(operation)

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=_cases(operation, mode))
    def run(case: Case) -> None:
        sent.append(operation.label)
        case.call_and_validate(base_url=server.url, headers=auth, excluded_checks=excluded)

    run()


def test_every_operation_answers_as_documented(fuzz_server: Server) -> None:
    with fuzz_server.client(fuzz_server.admin_key) as c:
        res = c.get("/api/v1/openapi.json")
    assert res.status_code == 200, res.text
    schema = schemathesis.openapi.from_dict(res.json())
    failures: list[str] = []
    sent: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, fuzz_server, sent)
            except Unsatisfiable:  # nothing in the operation can be made invalid (no input)
                continue
            except (Exception, BaseExceptionGroup) as e:  # reported below, all operations'
                failures.append(f"{operation.label} [{mode.value}]: {e}")
    print(f"{len(set(sent))} operations, {len(sent)} requests")
    assert len(set(sent)) > 60, "the document lists the API's operations"
    assert not failures, "\n\n".join(failures)
