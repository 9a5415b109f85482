"""The in-domain experiment (evaluation/in_domain.py): a label-free table fitted on half of
each person's images keeps its FMR label on the other half, where a table fitted in
another domain does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.conftest import shared_data

from airside.biometrics.label_free import fit_label_free
from airside.config import Settings
from airside.evaluation.in_domain import measure, run, split_halves


def people(
    n: int, per: int, *, shared: float, seed: int, noise: float = 0.25, d: int = 32
) -> tuple[np.ndarray, list]:
    """``n`` people of ``per`` images; ``shared`` pulls every face towards one common
    direction, so pairs of different people score higher (another kind of photo), and
    ``noise`` spreads each person's images."""
    rng = np.random.default_rng(seed)
    common = np.zeros(d)
    common[0] = 1.0
    centres = shared * common + rng.normal(size=(n, d)) / np.sqrt(d)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.repeat(centres, per, axis=0) + noise * rng.normal(size=(n * per, d)) / np.sqrt(d)
    return x, [f"p{i // per}" for i in range(n * per)]


def test_each_persons_images_are_split_between_enrolment_and_test() -> None:
    ids = ["a"] * 5 + ["b"] * 4 + ["c"]
    enrol, test = split_halves(ids, seed=3)
    assert sorted([*enrol, *test]) == list(range(len(ids)))
    assert [sum(ids[i] == p for i in enrol) for p in "abc"] == [3, 2, 1]
    assert [sum(ids[i] == p for i in test) for p in "abc"] == [2, 2, 0]


def test_an_in_domain_table_keeps_its_label_where_a_table_from_elsewhere_does_not() -> None:
    x_web, ids_web = people(150, 4, shared=0.0, seed=1)
    elsewhere = fit_label_free(x_web, ids_web, model="m", source="web photos")
    x, ids = people(100, 6, shared=0.8, seed=2, noise=0.8)

    report = measure(x, ids, shipped=elsewhere, model="m", dataset="studio", splits=3)

    assert [r.label for r in report.results] == [1e-2, 1e-3] and not report.unresolved
    for r in report.results:
        assert 0.5 <= r.in_domain.fmr / r.label <= 2.0, r
        assert r.shipped is not None and r.shipped.fmr / r.label > 2.0, r
        # Keeping the label costs false non-matches: the threshold is higher.
        assert r.in_domain.fnmr > r.shipped.fnmr


def test_a_label_too_fine_for_the_pairs_is_reported_unresolved() -> None:
    x, ids = people(10, 2, shared=0.0, seed=4)
    report = measure(x, ids, shipped=None, model="m", dataset="small", splits=1)
    assert report.results == [] and report.unresolved == [1e-2, 1e-3]


@pytest.mark.slow
def test_on_orl_an_in_domain_table_keeps_fmr_1e2_within_2x(tmp_path: Path) -> None:
    """ORL studio portraits (40 people x 10), with the analyzer the settings give."""
    csv = shared_data("faces", "orl_att", "identities.csv")
    settings = Settings(data_dir=tmp_path)
    from airside.vision.factory import default_contract

    report = run(csv, settings, default_contract(settings), labels=(1e-2,), splits=5)

    [result] = report.results
    assert 0.5 <= result.in_domain.fmr / 1e-2 <= 2.0, report.as_dict()
