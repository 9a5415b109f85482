"""Webhook destinations, their outbox and the delivery log.

An administrator adds a destination (``webhook.add``): a URL, optional filters (cameras,
event types) and, only when asked, the inclusion of face crops. Airside generates the
signing secret and shows it once; it is kept sealed (AES-256-GCM under the template key
ring, bound to the destination's name) whenever template protection is in force, because
the server must sign with it, and is never listed. Adding and removing are authorised,
done and audited in one transaction; listings are authorised.

Every event recorded is queued for each destination in the transaction that records it
(``events/outbox.py``). The server's deliverer claims due rows (``claim_due``: a lease,
so that two servers on one store rarely send the same row twice), POSTs them and records
each attempt (``record_attempt``): a 2xx removes the row, anything else schedules a retry
with exponential back-off until ``webhook_max_attempts`` is spent. A destination gets each
camera's events in order: an event waits while an older one of its camera is undelivered.
Every attempt is in the delivery log (``list_deliveries``). The deliverer acts on the
administrator's configuration, not for a caller; a face crop it sends is audited
(``webhook.crop``).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, aliased

from airside.errors import AirsideError, ConflictError, NotFoundError
from airside.governance import access, audit, outbound, pseudonyms
from airside.governance.principals import SYSTEM, Principal
from airside.governance.template_protection import event_crop_aad
from airside.services.app import Airside
from airside.services.events.fields import aware, iso
from airside.services.events.view import EventView, view_of
from airside.store.tables import Event, Webhook, WebhookDelivery, WebhookOutbox

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,99}$")
SECRET_PREFIX = "whsec_"
MAX_FILTERS = 100
MAX_LIST = 10_000


def secret_aad(name: str, key_id: str) -> bytes:
    """What a destination's sealed secret is bound to: its name."""
    return json.dumps(["airside/webhook-secret/v1", name, key_id]).encode()


def redact_url(url: str) -> str:
    """``url`` without a password in it (what listings and the audit log show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def backoff_s(settings_base: float, settings_max: float, attempt: int) -> float:
    """The wait before retry number ``attempt`` (1 = the first retry): doubling from the
    base, never above the maximum."""
    return float(min(settings_max, settings_base * 2 ** max(0, attempt - 1)))


@dataclass(frozen=True)
class WebhookInfo:
    """A destination as listings show it: never its secret."""

    name: str
    url: str
    include_crops: bool
    cameras: list[str] | None
    types: list[str] | None
    created_at: str
    created_by: str
    pending: int
    given_up: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AddedWebhook:
    """A new destination and its signing secret, shown this once."""

    webhook: WebhookInfo
    secret: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.webhook.as_dict(), "secret": self.secret}


@dataclass(frozen=True)
class DeliveryInfo:
    """One delivery attempt."""

    id: int
    webhook: str
    event: int
    attempt: int
    at: str
    outcome: str
    status_code: int | None
    error: str | None
    duration_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DueDelivery:
    """An outbox row claimed for sending: where, with which key, what."""

    outbox_id: int
    webhook_id: int
    webhook: str
    url: str
    secret: bytes
    attempt: int
    event: EventView
    crop: bytes | None


def _check_url(url: str) -> str:
    if not isinstance(url, str) or not 1 <= len(url) <= 2000:
        raise AirsideError("the URL must be 1-2000 characters", code="validation",
                           details={"field": "url"})  # fmt: skip
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AirsideError(
            "the URL must be an absolute http:// or https:// URL", code="validation",
            details={"field": "url"},
        )  # fmt: skip
    return url.strip()


def _check_list(values: list[str] | None, what: str) -> list[str] | None:
    if values is None:
        return None
    if (
        not isinstance(values, list | tuple)
        or not 1 <= len(values) <= MAX_FILTERS
        or any(not isinstance(v, str) or not v.strip() or len(v) > 200 for v in values)
    ):
        raise AirsideError(
            f"{what} must be a list of 1-{MAX_FILTERS} names of 1-200 characters",
            code="validation", details={"field": what},
        )  # fmt: skip
    return sorted(set(values))


def _info(s: Session, hook: Webhook) -> WebhookInfo:
    pending = s.scalar(
        select(func.count())
        .select_from(WebhookOutbox)
        .where(WebhookOutbox.webhook_id == hook.id, WebhookOutbox.given_up_at.is_(None))
    )
    given_up = s.scalar(
        select(func.count())
        .select_from(WebhookOutbox)
        .where(WebhookOutbox.webhook_id == hook.id, WebhookOutbox.given_up_at.is_not(None))
    )
    return WebhookInfo(
        name=hook.name,
        url=redact_url(hook.url),
        include_crops=bool(hook.include_crops),
        cameras=json.loads(hook.cameras) if hook.cameras else None,
        types=json.loads(hook.types) if hook.types else None,
        created_at=iso(hook.created_at) or "",
        created_by=hook.created_by,
        pending=int(pending or 0),
        given_up=int(given_up or 0),
    )


def add_webhook(
    app: Airside,
    principal: Principal,
    name: str,
    url: str,
    *,
    include_crops: bool = False,
    cameras: list[str] | None = None,
    types: list[str] | None = None,
) -> AddedWebhook:
    """Add the destination ``name``: events (of ``cameras`` and ``types`` when given) are
    POSTed to ``url``, signed with a new secret returned here and never shown again.
    ``include_crops``: the body carries the event's face crop or snapshot when one is
    kept (default: never; the evidence stays behind its authorised URL)."""
    try:
        with app.session() as s:
            access.authorize(s, principal, "webhook.add")
            if not isinstance(name, str) or not _NAME.match(name):
                raise AirsideError(
                    "a webhook name must be 1-100 letters, digits or . _ : - and start with "
                    "a letter or digit", code="validation", details={"field": "name"},
                )  # fmt: skip
            url = _check_url(url)
            outbound.check_url(app.settings, url)  # not this machine, not cloud metadata
            cams = _check_list(cameras, "cameras")
            kinds = _check_list(types, "types")
            secret = SECRET_PREFIX + secrets.token_urlsafe(32)
            if s.scalar(select(Webhook.id).where(Webhook.name == name)) is not None:
                raise ConflictError(f"a webhook named {name!r} already exists")
            key = app.template_protector.write_key()
            blob, kid = secret.encode(), None
            if key is not None:
                kid, k = key
                blob = app.template_protector.seal(kid, k, blob, secret_aad(name, kid))
            hook = Webhook(
                name=name, url=url, secret=blob, secret_key_id=kid,
                include_crops=bool(include_crops),
                cameras=json.dumps(cams) if cams else None,
                types=json.dumps(kinds) if kinds else None,
                created_at=datetime.now(UTC), created_by=principal.name,
            )  # fmt: skip
            s.add(hook)
            s.flush()
            audit.append(
                s, principal, "webhook.add", decision="added",
                result={"webhook": name, "url": redact_url(url),
                        "include_crops": bool(include_crops), "cameras": cams,
                        "types": kinds, "secret_sealed": kid is not None},
            )  # fmt: skip
            return AddedWebhook(_info(s, hook), secret)
    except AirsideError as e:
        app.audit_refusal(principal, "webhook.add", e, extra={"webhook": str(name)[:100]})
        raise


def list_webhooks(app: Airside, principal: Principal) -> list[WebhookInfo]:
    """The destinations, oldest first, with how many deliveries each has pending."""
    try:
        with app.session(readonly=True) as s:
            access.authorize(s, principal, "webhook.list")
            return [_info(s, h) for h in s.scalars(select(Webhook).order_by(Webhook.id))]
    except AirsideError as e:
        app.audit_refusal(principal, "webhook.list", e)
        raise


def remove_webhook(app: Airside, principal: Principal, name: str) -> int:
    """Remove the destination ``name`` and what it still had to be sent (the delivery log
    stays); returns how many queued deliveries were dropped."""
    try:
        with app.session() as s:
            access.authorize(s, principal, "webhook.remove")
            hook = s.scalar(select(Webhook).where(Webhook.name == name))
            if hook is None:
                raise NotFoundError(f"no webhook {name!r}")
            dropped = int(
                s.scalar(
                    select(func.count())
                    .select_from(WebhookOutbox)
                    .where(WebhookOutbox.webhook_id == hook.id)
                )
                or 0
            )
            s.execute(delete(WebhookOutbox).where(WebhookOutbox.webhook_id == hook.id))
            s.delete(hook)
            audit.append(s, principal, "webhook.remove", decision="removed",
                         result={"webhook": name, "dropped": dropped})  # fmt: skip
            return dropped
    except AirsideError as e:
        app.audit_refusal(principal, "webhook.remove", e, extra={"webhook": str(name)[:100]})
        raise


def list_deliveries(
    app: Airside,
    principal: Principal,
    *,
    webhook: str | None = None,
    event: int | None = None,
    limit: int = 100,
) -> list[DeliveryInfo]:
    """The newest delivery attempts (of ``webhook``, of ``event`` when given)."""
    if not 1 <= limit <= MAX_LIST:
        raise ValueError(f"limit must be between 1 and {MAX_LIST}")
    try:
        with app.session(readonly=True) as s:
            access.authorize(s, principal, "webhook.deliveries")
            q = select(WebhookDelivery).order_by(WebhookDelivery.id.desc()).limit(limit)
            if webhook is not None:
                q = q.where(WebhookDelivery.webhook == webhook)
            if event is not None:
                q = q.where(WebhookDelivery.event_id == event)
            return [
                DeliveryInfo(
                    id=d.id,
                    webhook=d.webhook,
                    event=d.event_id,
                    attempt=d.attempt,
                    at=iso(d.at) or "",
                    outcome=d.outcome,
                    status_code=d.status_code,
                    error=d.error,
                    duration_ms=d.duration_ms,
                )
                for d in s.scalars(q)
            ]
    except AirsideError as e:
        app.audit_refusal(principal, "webhook.deliveries", e)
        raise


# -- the deliverer's side (server/webhooks.py) --------------------------------------------


def _secret_of(app: Airside, hook: Webhook) -> bytes:
    if hook.secret_key_id is None:
        return hook.secret
    return app.template_protector.open(
        hook.secret_key_id, hook.secret, secret_aad(hook.name, hook.secret_key_id),
        f"the secret of webhook {hook.name!r}",
    )  # fmt: skip


def _crop_of(app: Airside, ev: Event, now: datetime) -> bytes | None:
    """The event's crop or snapshot while its retention allows, else None."""
    if ev.evidence is None or (ev.evidence_until is not None and aware(ev.evidence_until) <= now):
        return None
    if ev.evidence_key_id is None:
        return ev.evidence
    return app.template_protector.open(
        ev.evidence_key_id, ev.evidence, event_crop_aad(ev.id, ev.evidence_key_id),
        f"the crop of event {ev.id}",
    )  # fmt: skip


def has_due(app: Airside, now: datetime | None = None) -> bool:
    """Whether any delivery is due (a cheap read, without the write lock)."""
    now = now or datetime.now(UTC)
    with app.session(readonly=True) as s:
        return (
            s.scalar(
                select(WebhookOutbox.id)
                .where(WebhookOutbox.given_up_at.is_(None), WebhookOutbox.next_attempt_at <= now)
                .limit(1)
            )
            is not None
        )


def claim_due(app: Airside, *, limit: int = 16, lease_s: float = 60.0) -> list[DueDelivery]:
    """Claim up to ``limit`` due deliveries, oldest event first: each is pushed
    ``lease_s`` ahead, so that if this process dies while sending it, it becomes due again
    (at least once). A crop sent to a destination that asked for crops is audited here.

    In order per camera: a delivery is claimed only when no older event of its camera is
    still to be delivered to its destination (being sent, or waiting for a retry), so a
    destination receives each camera's events in the order they were recorded, even after
    it was down for a while. Only a delivery given up on lets the next one go first."""
    now = datetime.now(UTC)
    out: list[DueDelivery] = []
    earlier, earlier_event = aliased(WebhookOutbox), aliased(Event)
    older_pending = (
        select(earlier.id)
        .join(earlier_event, earlier_event.id == earlier.event_id)
        .where(
            earlier.webhook_id == WebhookOutbox.webhook_id,
            earlier.given_up_at.is_(None),
            earlier.event_id < WebhookOutbox.event_id,
            earlier_event.camera == Event.camera,
        )
        .exists()
    )
    with app.session() as s:
        rows = s.execute(
            select(WebhookOutbox, Webhook, Event)
            .join(Webhook, Webhook.id == WebhookOutbox.webhook_id)
            .join(Event, Event.id == WebhookOutbox.event_id)
            .where(
                WebhookOutbox.given_up_at.is_(None),
                WebhookOutbox.next_attempt_at <= now,
                ~older_pending,
            )
            .order_by(WebhookOutbox.event_id, WebhookOutbox.id)
            .limit(limit)
        ).all()
        for row, hook, ev in rows:
            row.next_attempt_at = now + timedelta(seconds=lease_s)
            crop = _crop_of(app, ev, now) if hook.include_crops else None
            if crop is not None:
                audit.append(
                    s, SYSTEM, "webhook.crop", decision="sent",
                    purpose=ev.purpose, gallery=ev.gallery,
                    result={"webhook": hook.name, "event": ev.id, "camera": ev.camera,
                            "subject": pseudonyms.of_subject_id(s, ev.subject_id),
                            "attempt": row.attempts + 1},
                )  # fmt: skip
            out.append(
                DueDelivery(
                    outbox_id=row.id,
                    webhook_id=hook.id,
                    webhook=hook.name,
                    url=hook.url,
                    secret=_secret_of(app, hook),
                    attempt=row.attempts + 1,
                    event=view_of(ev),
                    crop=crop,
                )
            )
    return out


def record_attempt(
    app: Airside,
    due: DueDelivery,
    *,
    delivered: bool,
    status_code: int | None,
    error: str | None,
    duration_ms: float,
) -> str:
    """Log one attempt and settle its outbox row: delivered (removed), failed (retried
    after the back-off) or gave_up (the attempts are spent). Returns the outcome."""
    st = app.settings
    now = datetime.now(UTC)
    error = None if error is None else error[:500]
    with app.session() as s:
        row = s.get(WebhookOutbox, due.outbox_id)
        if delivered:
            outcome = "delivered"
            if row is not None:
                s.delete(row)
        elif due.attempt >= st.webhook_max_attempts:
            outcome = "gave_up"
            if row is not None:
                row.attempts, row.last_error, row.given_up_at = due.attempt, error, now
        else:
            outcome = "failed"
            if row is not None:
                wait = backoff_s(st.webhook_retry_base_s, st.webhook_retry_max_s, due.attempt)
                row.attempts, row.last_error = due.attempt, error
                row.next_attempt_at = now + timedelta(seconds=wait)
        s.add(
            WebhookDelivery(
                webhook_id=due.webhook_id,
                webhook=due.webhook,
                event_id=due.event.id,
                outbox_id=due.outbox_id,
                attempt=due.attempt,
                at=now,
                outcome=outcome,
                status_code=status_code,
                error=error,
                duration_ms=round(duration_ms, 3),
            )
        )
    return outcome


def prune_deliveries(app: Airside, older_than: datetime) -> int:
    """Drop delivery-log rows older than ``older_than`` (they hold ids and statuses only)."""
    with app.session() as s:
        res = s.execute(delete(WebhookDelivery).where(WebhookDelivery.at < older_than))
        return int(getattr(res, "rowcount", 0) or 0)
