"""Safety analytics without identity: scene files (zones, lines, calibration, schedules)
and the rules that turn people's tracks into safety events (docs/analytics.md)."""

from airside.analytics.rules import LineCount, PersonTrack, RuleEngine, SafetyEvent
from airside.analytics.scene import Scene, SceneError, load_scene, parse_scene

__all__ = [
    "LineCount",
    "PersonTrack",
    "RuleEngine",
    "SafetyEvent",
    "Scene",
    "SceneError",
    "load_scene",
    "parse_scene",
]
