"""The webhook deliverer: sends what the outbox holds, signed, until it is acknowledged.

The outbox is in the store and is filled in the transaction that records each event
(``services/events/outbox.py``), so a delivery survives a crash or a restart: whatever a
server did not get acknowledged, the next one sends (at least once; a receiver
de-duplicates by ``X-Airside-Delivery`` or the event id). Each POST carries the event as
JSON and ``X-Airside-Signature: sha256=<hex HMAC-SHA256 of the body under the
destination's secret>``; a 2xx answer is success, anything else (or no answer within
``webhook_timeout_s``) is retried with exponential back-off, and every attempt is in the
delivery log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client import Counter

from airside.errors import AirsideError
from airside.governance import outbound
from airside.server.events_out import event_payload
from airside.server.metrics import REGISTRY
from airside.services import webhooks
from airside.services.app import Airside
from airside.services.webhooks import DueDelivery

log = logging.getLogger("airside.server.webhooks")

WEBHOOK_ATTEMPTS = Counter(
    "airside_webhook_attempts_total",
    "webhook delivery attempts by outcome (delivered, failed, gave_up)",
    ["outcome"],
    registry=REGISTRY,
)
SIGNATURE_HEADER = "X-Airside-Signature"
BATCH = 16
PRUNE_EVERY_S = 3600.0


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Airside-Signature`` value of ``body`` under ``secret``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def body_of(due: DueDelivery) -> bytes:
    """The JSON body: the event (ids and decisions), with its crop only when the
    destination asked for crops."""
    payload = event_payload(due.event)
    if due.crop is not None:
        payload["crop_jpeg_base64"] = base64.b64encode(due.crop).decode()
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


class Deliverer:
    """Claims due deliveries from the store and POSTs them, ``BATCH`` at a time."""

    def __init__(self, airside: Airside) -> None:
        self.airside = airside
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def run(self) -> None:
        st = self.airside.settings
        last_prune = 0.0
        async with httpx.AsyncClient(
            timeout=st.webhook_timeout_s,
            follow_redirects=False,
            headers={"User-Agent": "airside-webhooks/1"},
        ) as client:
            while not self._stopping.is_set():
                try:
                    if time.monotonic() - last_prune > PRUNE_EVERY_S:
                        last_prune = time.monotonic()
                        cutoff = datetime.now(UTC) - timedelta(days=st.event_retention_days)
                        await asyncio.to_thread(webhooks.prune_deliveries, self.airside, cutoff)
                    if await asyncio.to_thread(webhooks.has_due, self.airside):
                        due = await asyncio.to_thread(
                            webhooks.claim_due,
                            self.airside,
                            limit=BATCH,
                            lease_s=st.webhook_timeout_s + 30,
                        )
                        if due:
                            await asyncio.gather(*(self.send(client, d) for d in due))
                            continue
                except Exception as e:  # the deliverer outlives a bad moment of the store
                    log.error("webhook delivery round failed: %s", type(e).__name__)
                await self._pause(st.events_poll_s)

    async def send(self, client: httpx.AsyncClient, due: DueDelivery) -> str:
        """POST one delivery and record the attempt; returns its outcome."""
        body = body_of(due)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(due.secret, body),
            "X-Airside-Event": str(due.event.id),
            "X-Airside-Delivery": str(due.outbox_id),
            "X-Airside-Attempt": str(due.attempt),
        }
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            # Checked again now: the name may have been re-pointed since (DNS rebinding).
            await asyncio.to_thread(outbound.check_url, self.airside.settings, due.url)
            res = await client.post(due.url, content=body, headers=headers)
            status = res.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}"
        except AirsideError as e:  # url_not_allowed: not sent, retried as a failure
            error = f"{e.code}: {e}"
        ms = (time.perf_counter() - started) * 1000
        outcome = await asyncio.to_thread(
            webhooks.record_attempt,
            self.airside,
            due,
            delivered=error is None,
            status_code=status,
            error=error,
            duration_ms=ms,
        )
        WEBHOOK_ATTEMPTS.labels(outcome).inc()
        if outcome != "delivered":
            log.warning(
                "webhook %s: event %d attempt %d %s (%s)",
                due.webhook, due.event.id, due.attempt, outcome, error,
            )  # fmt: skip
        return outcome
