"""Checks and normalisation of the values callers give about an event.

Names, stream seconds, the JSON detail and wall-clock times arrive from pipelines and the
CLI; recording, listing and purging all check and normalise them the same way, here.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any


def aware(t: datetime) -> datetime:
    """``t`` with a time zone (a naive time, as SQLite returns it, is UTC)."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def utc(t: datetime | None) -> datetime:
    """``t`` in UTC, or now when None."""
    return datetime.now(UTC) if t is None else aware(t).astimezone(UTC)


def iso(t: datetime | None) -> str | None:
    """``t`` as ISO 8601 in UTC to the millisecond, or None."""
    return None if t is None else aware(t).astimezone(UTC).isoformat(timespec="milliseconds")


def check_text(value: str, what: str, limit: int = 200) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ValueError(f"{what} must be 1-{limit} characters")
    return value


_CLIENT_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")


def check_key(value: str | None) -> str | None:
    """A client's name for an event (a UUID, say): 1-64 letters, digits, ``_ . : -``."""
    if value is not None and (not isinstance(value, str) or not _CLIENT_KEY.match(value)):
        raise ValueError("an event's client key must be 1-64 letters, digits or _ . : -")
    return value


def stream_seconds(value: float, what: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number of stream seconds")
    return v


def detail_json(detail: dict[str, Any] | None) -> str:
    """``detail`` as canonical JSON (what the ``detail`` column holds)."""
    try:
        return json.dumps(detail or {}, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"event detail must be plain JSON: {e}") from None
