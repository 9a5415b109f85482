"""Per-track identity: when to identify, how votes decide, and that an ended track keeps nothing."""

from __future__ import annotations

import numpy as np
import pytest

from airside.video.track_identity import IdentityConfig, TrackIdentity

CFG = IdentityConfig(quality_bar=40, max_crops=3, max_identifications=3, better_margin=10)


def chip(q: float) -> np.ndarray:
    return np.full((4, 4, 3), int(q), dtype=np.uint8)


def track() -> TrackIdentity[np.ndarray, str]:
    return TrackIdentity(CFG, track_id=7)


def identify(t: TrackIdentity[np.ndarray, str], q: float, who: str | None, score: float) -> None:
    """Offer a crop that must be identified, and record the result."""
    assert t.offer(q, chip(q))
    t.record(who, score, q, embedding=np.ones(8, dtype=np.float32))


def test_first_crop_that_passes_the_bar_triggers_identification() -> None:
    t = track()
    assert t.offer(55, chip(55)) is True
    assert t.identifications == 1 and t.pending == 1


def test_crops_below_the_bar_never_trigger_but_are_kept() -> None:
    t = track()
    assert [t.offer(q, chip(q)) for q in (10, 39.9, 25, 5)] == [False] * 4
    assert t.identifications == 0
    assert [c.quality for c in t.crops] == [39.9, 25, 10]  # the best three


def test_a_worse_or_only_slightly_better_crop_does_not_trigger() -> None:
    t = track()
    assert t.offer(60, chip(60))
    assert t.offer(50, chip(50)) is False
    assert t.offer(69.9, chip(69.9)) is False  # better, but not by the 10-point margin


def test_a_clearly_better_crop_triggers_again() -> None:
    t = track()
    assert t.offer(60, chip(60))
    assert t.offer(70, chip(70)) is True
    assert t.identifications == 2


def test_never_more_than_n_identifications() -> None:
    t = track()
    asked = [t.offer(q, chip(q)) for q in (41, 51, 61, 71, 81, 91, 100)]
    assert asked == [True, True, True, False, False, False, False]
    assert t.identifications == CFG.max_identifications


def test_only_the_best_k_crops_are_kept() -> None:
    t = track()
    for q in (50, 80, 45, 90, 60, 85):
        t.offer(q, chip(q))
    assert [c.quality for c in t.crops] == [90, 85, 80]
    assert [int(c.payload[0, 0, 0]) for c in t.crops] == [90, 85, 80]


def test_first_result_decides() -> None:
    t = track()
    identify(t, 60, "alice", 0.71)
    d = t.decision
    assert d is not None and (d.subject, d.votes, d.score) == ("alice", 1, 0.71)
    assert t.identity == "alice"


def test_one_bad_vote_cannot_flip_a_settled_identity() -> None:
    t = track()
    identify(t, 45, "alice", 0.6)
    identify(t, 95, "bob", 0.9)  # heavier than alice's only vote, but a single frame
    assert t.identity == "alice"


def test_a_consistent_new_identity_eventually_takes_over() -> None:
    t = track()
    identify(t, 45, "alice", 0.6)
    identify(t, 60, "bob", 0.8)
    assert t.identity == "alice"
    identify(t, 75, "bob", 0.85)  # bob: two votes, 1.35 against 0.45 (> margin 0.3)
    assert t.identity == "bob"
    d = t.decision
    assert d is not None and d.votes == 2 and d.lead == pytest.approx(0.9)


def test_a_clearly_better_match_replaces_an_early_unknown() -> None:
    t = track()
    identify(t, 45, None, 0.2)
    assert t.decision is not None and t.identity is None  # decided: unknown
    identify(t, 85, "alice", 0.8)  # leads unknown by 0.4 >= 0.3
    assert t.identity == "alice"


def test_record_without_an_identification_is_refused() -> None:
    t = track()
    with pytest.raises(RuntimeError):
        t.record("alice", 0.9, 80)


def test_discard_clears_every_crop_embedding_and_vote() -> None:
    t = track()
    identify(t, 60, None, 0.3)
    t.offer(30, chip(30))
    assert t.retained > 0
    t.discard()
    assert t.retained == 0 and t.crops == [] and t.votes == [] and t.decision is None
    with pytest.raises(RuntimeError):
        t.offer(90, chip(90))


def test_an_unknown_track_ends_with_nothing_to_write() -> None:
    t = track()
    identify(t, 60, None, 0.3)
    assert t.end() is None
    assert t.retained == 0


def test_a_known_track_hands_over_its_outcome_once_and_keeps_nothing() -> None:
    t = track()
    identify(t, 60, "alice", 0.8)
    t.offer(50, chip(50))
    outcome = t.end()
    assert outcome is not None and outcome.decision.subject == "alice"
    assert [c.quality for c in outcome.crops] == [60, 50]
    assert t.retained == 0 and t.closed


def test_a_track_stops_wanting_crops_once_none_could_be_identified() -> None:
    from airside.video.track_identity import IdentityConfig, TrackIdentity

    capped = TrackIdentity[str, str](IdentityConfig(quality_bar=40, max_identifications=1))
    assert capped.wants_crops
    assert capped.offer(60, "a")
    assert not capped.wants_crops  # the one identification is used
    top = TrackIdentity[str, str](IdentityConfig(quality_bar=40, better_margin=10))
    assert top.offer(95, "b")
    assert not top.wants_crops  # nothing can be 10 points better than 95
    mid = TrackIdentity[str, str](IdentityConfig(quality_bar=40, better_margin=10))
    assert mid.offer(70, "c")
    assert mid.wants_crops
