"""The pipeline benchmark measures what it says, on a small clip (slow: it embeds every face
of every frame for the naive baseline)."""

from __future__ import annotations

import pytest

from airside.evaluation import watch_bench
from airside.vision.analyzer import FaceAnalyzer


@pytest.mark.slow
def test_the_pipeline_embeds_far_less_than_the_naive_approach_for_the_same_subjects(
    analyzer: FaceAnalyzer,
) -> None:
    res = watch_bench.run(analyzer, frames=6, detect_every=(3,))
    row, with_safety = res["pipeline"]
    assert with_safety["safety"] and with_safety["subjects"] == ["PNR-1"]
    assert res["analytics_ms_per_frame"] is not None
    assert row["tracks"] >= 8 and row["subjects"] == ["PNR-1"]
    assert res["naive"]["subjects"] == ["PNR-1"] and res["same_subjects"]
    assert res["naive"]["embedding_calls"] >= 5 * row["embedding_calls"]
    assert row["realtime_factor"] > 0 and row["event_latency_ms"] is not None
