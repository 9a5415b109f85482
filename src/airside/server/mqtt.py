"""Events to an MQTT broker (paho-mqtt), like Frigate's: ``AIRSIDE_MQTT_URL`` turns it on.

Each event is published at QoS 1 to ``<prefix>/events`` and ``<prefix>/<camera>/<type>``
(ids and decisions, never a crop). ``<prefix>/available`` is retained: "online" once
connected, "offline" on shutdown and, as the broker's last will, when the server vanishes.

The publisher follows the store like an event stream, so events recorded by any process
reach the broker, and it keeps its place in the store (``event_cursors``): it moves on only
after the broker acknowledged a batch, so a restart neither skips nor republishes
everything (a batch in flight at a crash may be published twice: QoS 1 is at least once).
On first start it begins at the newest event (no history is replayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import Counter, Gauge

from airside.errors import AirsideError
from airside.server.events_out import HeadWatch, event_payload
from airside.server.metrics import REGISTRY
from airside.services import events
from airside.services.app import Airside
from airside.services.events import EventView

log = logging.getLogger("airside.server.mqtt")

MQTT_PUBLISHED = Counter("airside_mqtt_published_total", "events published to MQTT",
                         registry=REGISTRY)  # fmt: skip
MQTT_FAILURES = Counter(
    "airside_mqtt_failures_total", "MQTT batches not acknowledged (retried)", registry=REGISTRY
)
MQTT_CONNECTED = Gauge("airside_mqtt_connected", "1 while connected to the MQTT broker",
                       registry=REGISTRY)  # fmt: skip

QOS = 1
BATCH = 100
ACK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """``mqtt://[user:password@]host[:port]`` (1883) or ``mqtts://...`` (TLS, 8883)."""
        parts = urlsplit(url.strip())
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
            raise AirsideError(
                "the MQTT URL must look like mqtt://[user:password@]host[:port] (or mqtts://)",
                code="validation",
                details={"field": "mqtt_url"},
            )
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


def topic_part(name: str) -> str:
    """``name`` as one topic level: MQTT's separators and wildcards become ``_``."""
    cleaned = "".join("_" if c in "/+#\0" else c for c in name)
    return cleaned or "_"


def check_prefix(prefix: str) -> str:
    if not prefix or any(c in prefix for c in "+#\0") or prefix.startswith("/"):
        raise AirsideError(
            "the MQTT topic prefix must be non-empty, without + # or a leading /",
            code="validation",
            details={"field": "mqtt_topic_prefix"},
        )
    return prefix.rstrip("/")


class MqttPublisher:
    """One paho client (its own network thread) and one task following the store."""

    def __init__(self, airside: Airside, address: BrokerAddress, prefix: str,
                 watch: HeadWatch | None = None) -> None:  # fmt: skip
        self.airside = airside
        self.address = address
        self.prefix = check_prefix(prefix)
        self.watch = watch
        self.available_topic = f"{self.prefix}/available"
        self.cursor_name = f"mqtt:{address.host}:{address.port}/{self.prefix}"
        self._connected = threading.Event()
        self._stopping = asyncio.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"airside-{socket.gethostname()}-{os.getpid()}",
            protocol=mqtt.MQTTv311,
        )
        self.client.will_set(self.available_topic, "offline", qos=QOS, retain=True)
        if address.username is not None:
            self.client.username_pw_set(address.username, address.password)
        if address.tls:
            self.client.tls_set()
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    @classmethod
    def from_settings(cls, airside: Airside, watch: HeadWatch | None) -> MqttPublisher | None:
        url = airside.settings.mqtt_url
        if not url or not url.strip():
            return None
        return cls(airside, BrokerAddress.parse(url), airside.settings.mqtt_topic_prefix, watch)

    # paho's network thread -------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: object, _flags: object,
                    reason: ReasonCode, _props: object) -> None:  # fmt: skip
        if reason.is_failure:
            log.warning("MQTT broker refused the connection: %s", reason)
            return
        # Again at every reconnection: the broker may have published the last will.
        client.publish(self.available_topic, "online", qos=QOS, retain=True)
        self._connected.set()
        MQTT_CONNECTED.set(1)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: object,
                       reason: ReasonCode, _props: object) -> None:  # fmt: skip
        self._connected.clear()
        MQTT_CONNECTED.set(0)
        if not self._stopping.is_set():
            log.warning("MQTT connection lost (%s); reconnecting", reason)

    # the server's side -----------------------------------------------------------------

    async def start(self) -> None:
        """Connect in the background (paho retries until the broker answers)."""
        self.client.connect_async(self.address.host, self.address.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def _publish_batch(self, batch: list[EventView]) -> bool:
        """Publish ``batch`` on both topics and wait for the broker's acknowledgements."""
        infos = []
        for view in batch:
            body = json.dumps(event_payload(view), sort_keys=True, separators=(",", ":"))
            per_kind = f"{self.prefix}/{topic_part(view.camera)}/{topic_part(view.type)}"
            infos.append(self.client.publish(f"{self.prefix}/events", body, qos=QOS))
            infos.append(self.client.publish(per_kind, body, qos=QOS))
        try:
            for info in infos:
                info.wait_for_publish(timeout=ACK_TIMEOUT_S)
        except (RuntimeError, ValueError):
            return False
        return all(info.is_published() for info in infos)

    async def run(self) -> None:
        app, st = self.airside, self.airside.settings
        last: int | None = None
        while not self._stopping.is_set():
            try:
                if last is None:
                    last = await asyncio.to_thread(events.load_cursor, app, self.cursor_name)
                    if last is None:  # first start: from now on, no history
                        last = await asyncio.to_thread(events.stream_head, app)
                        await asyncio.to_thread(events.save_cursor, app, self.cursor_name, last)
                if not self._connected.is_set():
                    await self._pause(st.events_poll_s)
                    continue
                batch = await asyncio.to_thread(events.events_for_publisher, app, last,
                                                limit=BATCH)  # fmt: skip
                if batch.events:
                    if not await asyncio.to_thread(self._publish_batch, batch.events):
                        MQTT_FAILURES.inc()
                        await self._pause(1.0)
                        continue
                    MQTT_PUBLISHED.inc(len(batch.events))
                if batch.head != last:
                    last = batch.head
                    await asyncio.to_thread(events.save_cursor, app, self.cursor_name, last)
                if len(batch.events) >= BATCH:
                    continue
                if self.watch is not None:
                    await self.watch.wait_above(last, st.events_poll_s * 4)
                else:
                    await self._pause(st.events_poll_s)
            except Exception as e:  # the publisher outlives a bad moment of the store
                log.error("MQTT publishing round failed: %s", type(e).__name__)
                await self._pause(1.0)

    def close(self) -> None:
        """Say "offline" (retained), then disconnect cleanly (no last will)."""
        if self._connected.is_set():
            info = self.client.publish(self.available_topic, "offline", qos=QOS, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=3)
        self.client.disconnect()
        self.client.loop_stop()
        MQTT_CONNECTED.set(0)
