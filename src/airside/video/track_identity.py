"""Per-track identity: which crops to identify, and a vote that one bad frame cannot flip.

One :class:`TrackIdentity` follows one track. The pipeline offers it every face crop the track
gets (:meth:`TrackIdentity.offer`); it keeps the few best crops by quality and says when a crop
is worth identifying: the first crop that passes the gallery's quality bar, then again only
for a clearly better one (quality at least ``better_margin`` points above the best crop
identified so far), at most ``max_identifications`` times per track. The caller embeds and
identifies that crop through the services (this module does no I/O and never touches the
store) and hands the result back (:meth:`TrackIdentity.record`). The track's identity is a
quality-weighted vote over those results with hysteresis (see ``docs/tracking.md``):

* each result is a vote for a subject, or for *unknown* (no gallery match), weighing
  ``quality / 100``;
* the first decision goes to the candidate that strictly leads once it has ``min_votes``;
* a decided **subject** is replaced only by a challenger with at least ``switch_min_votes``
  votes (default 2: a single frame can never flip it) whose weight leads the current one's by
  ``switch_margin``;
* a decided **unknown** is replaced by a subject that leads it by ``switch_margin`` with
  ``min_votes`` votes: "no match" is weak evidence, and a clearly better crop that matches is
  exactly what identifying again is for.

When the track ends, :meth:`TrackIdentity.end` keeps nothing: an unknown track's crops,
embeddings and votes are wiped (:meth:`TrackIdentity.discard`) and nothing is returned to
write; a known track's outcome is handed over once, and the object is emptied as well.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

P = TypeVar("P")  # what a crop carries (an aligned chip, a FaceObservation, ...)
S = TypeVar("S", bound=Hashable)  # how a subject is named (a subject reference, an id)


@dataclass(frozen=True)
class IdentityConfig:
    """``quality_bar`` comes from the gallery (0-100, the same scale as vision.quality)."""

    quality_bar: float = 40.0
    max_crops: int = 3
    max_identifications: int = 3
    better_margin: float = 10.0
    min_votes: int = 1
    switch_margin: float = 0.3
    switch_min_votes: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.quality_bar <= 100:
            raise ValueError("quality_bar must be between 0 and 100")
        if self.max_crops < 1 or self.max_identifications < 1:
            raise ValueError("max_crops and max_identifications must be >= 1")
        if self.better_margin < 0 or self.switch_margin < 0:
            raise ValueError("better_margin and switch_margin must be >= 0")
        if self.min_votes < 1 or self.switch_min_votes < 1:
            raise ValueError("min_votes and switch_min_votes must be >= 1")


@dataclass(frozen=True)
class Crop(Generic[P]):
    quality: float
    payload: P
    seq: int  # order of arrival within the track


@dataclass(frozen=True)
class Vote(Generic[S]):
    subject: S | None  # None: the gallery had no match for this crop
    score: float
    quality: float

    @property
    def weight(self) -> float:
        return min(1.0, max(0.0, self.quality / 100.0))


@dataclass(frozen=True)
class Decision(Generic[S]):
    """The track's identity: ``subject`` None means decided *unknown*."""

    subject: S | None
    weight: float  # summed vote weight for it
    votes: int
    score: float  # quality-weighted mean of its votes' match scores
    # Its weight minus the strongest other candidate's (its whole weight when unopposed);
    # negative while hysteresis holds it against a heavier challenger.
    lead: float


@dataclass(frozen=True)
class TrackOutcome(Generic[P, S]):
    """What a known track leaves behind when it ends: its decision and best crops."""

    decision: Decision[S]
    crops: list[Crop[P]]
    votes: list[Vote[S]]


class _Unknown:
    """The vote key for "no match" (distinct from any subject, including a subject None)."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


class TrackIdentity(Generic[P, S]):
    def __init__(self, config: IdentityConfig | None = None, track_id: int | None = None) -> None:
        self.config = config or IdentityConfig()
        self.track_id = track_id
        self._crops: list[Crop[P]] = []
        self._embeddings: list[np.ndarray] = []
        self._votes: list[Vote[S]] = []
        self._seq = 0
        self._granted = 0
        self._best_identified: float | None = None
        self._current: S | _Unknown | None = None  # None: undecided
        self._closed = False

    # -- crops

    def offer(self, quality: float, payload: P) -> bool:
        """Keep ``payload`` if it is among the best crops; True when it should be identified
        now (passes the bar; first, or clearly better than the best identified so far;
        under the limit). A True answer uses up one identification."""
        self._check_open()
        q = float(quality)
        if not np.isfinite(q):
            raise ValueError("quality must be a finite number")
        cfg = self.config
        crop = Crop(q, payload, self._seq)
        self._seq += 1
        if len(self._crops) < cfg.max_crops or q > self._crops[-1].quality:
            self._crops.append(crop)
            self._crops.sort(key=lambda c: (-c.quality, c.seq))
            del self._crops[cfg.max_crops :]
        identify = (
            q >= cfg.quality_bar
            and self._granted < cfg.max_identifications
            and (self._best_identified is None or q >= self._best_identified + cfg.better_margin)
        )
        if identify:
            self._granted += 1
            self._best_identified = q
        return identify

    @property
    def wants_crops(self) -> bool:
        """Whether any crop could still be identified: False once the limit is reached or
        the best identified crop is so good that none can beat it by the margin (quality
        tops out at 100). Callers skip cutting and scoring crops then."""
        cfg = self.config
        if self._closed or self._granted >= cfg.max_identifications:
            return False
        return self._best_identified is None or self._best_identified + cfg.better_margin <= 100

    @property
    def crops(self) -> list[Crop[P]]:
        """The kept crops, best first."""
        return list(self._crops)

    @property
    def identifications(self) -> int:
        """How many identifications :meth:`offer` has asked for."""
        return self._granted

    @property
    def pending(self) -> int:
        """Identifications asked for whose result has not been recorded yet."""
        return self._granted - len(self._votes)

    # -- votes

    def record(
        self,
        subject: S | None,
        score: float,
        quality: float,
        embedding: np.ndarray | None = None,
    ) -> Decision[S] | None:
        """Add the result of one identification (``subject`` None: no match) as a vote;
        return the decision after it. ``embedding`` is kept only until the track ends."""
        self._check_open()
        if self.pending <= 0:
            raise RuntimeError("record() without an identification that offer() asked for")
        if not 0 <= quality <= 100:
            raise ValueError("quality must be between 0 and 100")
        self._votes.append(Vote(subject, float(score), float(quality)))
        if embedding is not None:
            self._embeddings.append(embedding)
        self._current = self._decide()
        return self.decision

    @property
    def votes(self) -> list[Vote[S]]:
        return list(self._votes)

    @property
    def identity(self) -> S | None:
        """The decided subject, or None (undecided, or decided unknown)."""
        d = self.decision
        return None if d is None else d.subject

    @property
    def decision(self) -> Decision[S] | None:
        """None while undecided; otherwise the decided subject or unknown, with its support."""
        if self._current is None:
            return None
        return self._decision_for(self._current)

    def _tally(self) -> dict[S | _Unknown, tuple[float, int]]:
        out: dict[S | _Unknown, tuple[float, int]] = {}
        for v in self._votes:
            key: S | _Unknown = UNKNOWN if v.subject is None else v.subject
            w, n = out.get(key, (0.0, 0))
            out[key] = (w + v.weight, n + 1)
        return out

    def _decide(self) -> S | _Unknown | None:
        cfg = self.config
        tally = self._tally()
        ranked = sorted(tally.items(), key=lambda kv: -kv[1][0])
        cur = self._current
        if cur is None:
            (lead_key, (w, n)) = ranked[0]
            runner = ranked[1][1][0] if len(ranked) > 1 else 0.0
            return lead_key if n >= cfg.min_votes and w > runner else None
        cur_w = tally.get(cur, (0.0, 0))[0]
        for key, (w, n) in ranked:
            if key == cur:
                continue
            need = cfg.min_votes if isinstance(cur, _Unknown) else cfg.switch_min_votes
            if n >= need and w - cur_w >= cfg.switch_margin - 1e-9:
                return key
            break  # only the strongest challenger can take over
        return cur

    def _decision_for(self, key: S | _Unknown) -> Decision[S]:
        mine = [v for v in self._votes if (UNKNOWN if v.subject is None else v.subject) == key]
        weight = sum(v.weight for v in mine)
        score = (
            sum(v.weight * v.score for v in mine) / weight
            if weight > 0
            else (float(np.mean([v.score for v in mine])) if mine else 0.0)
        )
        others = [w for k, (w, _) in self._tally().items() if k != key]
        subject: S | None = None if isinstance(key, _Unknown) else key
        return Decision(subject, weight, len(mine), score, weight - max(others, default=0.0))

    # -- end of track

    def discard(self) -> None:
        """Wipe every crop, embedding and vote; the object cannot be used again."""
        self._crops.clear()
        self._embeddings.clear()
        self._votes.clear()
        self._current = None
        self._best_identified = None
        self._closed = True
        assert self.retained == 0

    def end(self) -> TrackOutcome[P, S] | None:
        """The track ended. Unknown or undecided: everything is discarded and None returned
        (nothing about it is to be written). Known: its outcome is returned once, and this
        object keeps nothing either."""
        self._check_open()
        d = self.decision
        outcome = None
        if d is not None and d.subject is not None:
            outcome = TrackOutcome(d, list(self._crops), list(self._votes))
        self.discard()
        return outcome

    @property
    def retained(self) -> int:
        """How many crops, embeddings and votes this object still holds."""
        return len(self._crops) + len(self._embeddings) + len(self._votes)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this track's identity was discarded")
