"""The kinds of stored event and their severities.

One vocabulary for recording, listing and the pipelines that decide what to record. The
severities are the scene files' (``analytics/scene.py``), which sit below the services.
"""

from __future__ import annotations

from airside.analytics.scene import SEVERITIES

IDENTITY = "identity"
WATCHLIST_HIT = "watchlist_hit"
RETRACTED = "_retracted"  # suffix: an identity or watchlist hit its track later overturned
SYSTEM = "system"
# System events that need someone's attention (everything else is informational).
SYSTEM_WARNINGS = frozenset({"stream_lost"})
# Safety events (analytics/rules.py and abandoned objects): the Event's type is the rule's.
SAFETY_TYPES = frozenset(
    {"intrusion", "loitering", "crowding", "running", "fall", "line_cross", "abandoned_object"}
)

__all__ = [
    "IDENTITY",
    "RETRACTED",
    "SAFETY_TYPES",
    "SEVERITIES",
    "SYSTEM",
    "SYSTEM_WARNINGS",
    "WATCHLIST_HIT",
]
