"""The webhook outbox: every event recorded is queued for each destination that wants it,
in the transaction that records it.

Because the queue row commits (or rolls back) with the event, an event is never lost
between being stored and being sent, whichever process recorded it and however often the
server restarts: the deliverer (``services/webhooks.py``) sends what the outbox holds until
the destination acknowledges it. A queued row goes with its event (erasure, withdrawal,
purge: what was erased is not sent afterwards) and with its destination.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from airside.store.tables import Event, Webhook, WebhookOutbox


def wants(webhook: Webhook, camera: str, type_: str) -> bool:
    """Whether ``webhook``'s filters (cameras, types; NULL: all) let an event through."""
    cameras = json.loads(webhook.cameras) if webhook.cameras else None
    types = json.loads(webhook.types) if webhook.types else None
    return (cameras is None or camera in cameras) and (types is None or type_ in types)


def enqueue(s: Session, ev: Event) -> int:
    """Queue the flushed event ``ev`` for every destination that wants it, in ``s``'s
    transaction; returns how many rows were queued."""
    now = datetime.now(UTC)
    n = 0
    for hook in s.scalars(select(Webhook).order_by(Webhook.id)):
        if wants(hook, ev.camera, ev.type):
            s.add(WebhookOutbox(webhook_id=hook.id, event_id=ev.id, attempts=0,
                                next_attempt_at=now, created_at=now))  # fmt: skip
            n += 1
    return n
