"""Options and value parsers shared by the CLI's command modules."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]

_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """'90s', '30m', '12h', '30d' -> seconds."""
    t = text.strip().lower()
    if len(t) < 2 or t[-1] not in _DURATION or not t[:-1].replace(".", "", 1).isdigit():
        raise ValueError(f"duration {text!r} must look like 90s, 30m, 12h or 30d")
    return int(float(t[:-1]) * _DURATION[t[-1]])
