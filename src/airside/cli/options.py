"""Options and value parsers shared by the CLI's command modules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
FaceOpt = Annotated[
    str,
    typer.Option(
        "--face",
        help="Which face to use when an image has several: central (LFW-style), largest, "
        "or single (refuse).",
    ),
]
WorkersOpt = Annotated[int | None, typer.Option(help="Worker processes (default: all cores).")]

_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """'90s', '30m', '12h', '30d' -> seconds."""
    t = text.strip().lower()
    if len(t) < 2 or t[-1] not in _DURATION or not t[:-1].replace(".", "", 1).isdigit():
        raise ValueError(f"duration {text!r} must look like 90s, 30m, 12h or 30d")
    return int(float(t[:-1]) * _DURATION[t[-1]])


def local_time(t: datetime | None) -> datetime | None:
    """A time given on the command line, made aware: one without a zone is local time."""
    return t.astimezone() if t is not None else None


def face_policy(face: str) -> Any:
    """``--face``: central, largest or single (anything else is refused)."""
    if face not in ("central", "largest", "single"):
        raise ValueError("--face must be central, largest or single")
    return face
