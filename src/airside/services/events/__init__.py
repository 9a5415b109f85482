"""Events: what cameras saw and pipelines noticed, stored, listed, purged and erased.

One model (``store.tables.Event``) for identity matches, watchlist hits (which name the
review case they opened), safety events (``record_safety_event``: no identity, a
face-blurred snapshot at most) and system events (a stream lost). An
identity event is a biometric operation on a person: it is authorised on its gallery
(``event.record``), audited in the same transaction, linked to the subject row so that
erasure and withdrawal remove it, and it may carry evidence: the track's best face crop
(JPEG), kept only while the settings and the gallery's own retention allow
(``evidence_until``), and sealed (AES-256-GCM under the template key ring, bound to the
event row) whenever template protection is in force. System events carry no personal
data and are not audited. ``purge_events`` is run by the retention purge.

One idea per module: ``kinds`` (types and severities), ``fields`` (checking what callers
give), ``view`` (what callers get back), ``scope`` (authorising an action on one event),
``evidence`` (crops and snapshots: retention, sealing, reading), ``recording``,
``listing`` and ``purge``; ``outbox`` (webhooks queued with each event) and ``stream``
(following the store: event streams and publishers). This package re-exports their
public names, so callers keep ``from airside.services import events;
events.record_identity_event(...)``.
"""

from airside.services.events.evidence import (
    MAX_CROP_BYTES,
    crop_until,
    event_crop,
    safety_snapshot_until,
)
from airside.services.events.kinds import (
    IDENTITY,
    RETRACTED,
    SAFETY_TYPES,
    SEVERITIES,
    SYSTEM,
    SYSTEM_WARNINGS,
    WATCHLIST_HIT,
)
from airside.services.events.listing import MAX_LIST, list_events
from airside.services.events.purge import purge_events
from airside.services.events.recording import (
    MAX_SAFETY_TRACKS,
    event_for_key,
    record_identity_event,
    record_safety_event,
    record_system_event,
    retract_identity_event,
    update_event_seen,
)
from airside.services.events.stream import (
    StreamBatch,
    events_after,
    events_for_publisher,
    load_cursor,
    open_stream,
    save_cursor,
    stream_head,
)
from airside.services.events.view import EventView, view_of

__all__ = [
    "IDENTITY",
    "MAX_CROP_BYTES",
    "MAX_LIST",
    "MAX_SAFETY_TRACKS",
    "RETRACTED",
    "SAFETY_TYPES",
    "SEVERITIES",
    "SYSTEM",
    "SYSTEM_WARNINGS",
    "WATCHLIST_HIT",
    "EventView",
    "StreamBatch",
    "crop_until",
    "event_crop",
    "event_for_key",
    "events_after",
    "events_for_publisher",
    "list_events",
    "load_cursor",
    "open_stream",
    "purge_events",
    "record_identity_event",
    "record_safety_event",
    "record_system_event",
    "retract_identity_event",
    "safety_snapshot_until",
    "save_cursor",
    "stream_head",
    "update_event_seen",
    "view_of",
]
