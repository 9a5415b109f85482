"""Events out of the server: what an event looks like on the wire, one watcher of the
store's newest event id shared by every event stream, and the background tasks the server
runs while it serves (the webhook deliverer; the MQTT publisher when configured).

Every follower reads the store, never an in-process queue: an event recorded by another
process on the same store (``airside watch``, a camera worker, another server) reaches
event streams, webhooks and MQTT exactly like one recorded here. On PostgreSQL the head
watcher is also woken by the store's NOTIFY (``Airside.follow_changes``), so an event
reaches streams as soon as it commits, wherever it was recorded; the poll stays as the
fallback (and is all there is on SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from airside.services import events
from airside.services.app import Airside
from airside.services.events import EventView

log = logging.getLogger("airside.server.events")

API = "/api/v1"


def event_payload(view: EventView) -> dict[str, Any]:
    """An event as streams, webhooks and MQTT send it: ids and decisions, never the crop;
    ``evidence`` is the authorised URL of the crop or snapshot when one is kept."""
    body = view.as_dict()
    body["evidence"] = f"{API}/events/{view.id}/evidence" if view.crop else None
    return body


class HeadWatch:
    """The newest event id in the store, polled every ``poll_s`` by one task for every
    stream of this server; streams wait on it instead of each polling the store."""

    def __init__(self, airside: Airside, poll_s: float) -> None:
        self.airside = airside
        self.poll_s = poll_s
        self.head = 0
        self._changed = asyncio.Condition()
        self._poked = asyncio.Event()

    def poke(self) -> None:
        """Look at the store now rather than at the next poll (a new event was announced)."""
        self._poked.set()

    async def run(self) -> None:
        while True:
            self._poked.clear()  # a poke from here on means another look
            try:
                head = await asyncio.to_thread(events.stream_head, self.airside)
            except Exception as e:  # the store is busy or away: try again at the next poll
                log.warning("event head poll failed: %s", type(e).__name__)
            else:
                if head != self.head:
                    self.head = head
                    async with self._changed:
                        self._changed.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self.poll_s)

    async def wait_above(self, last: int, timeout: float) -> None:
        """Return when the store holds an event above ``last``, or after ``timeout``."""
        if self.head > last:
            return
        with contextlib.suppress(TimeoutError):
            async with self._changed:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.head > last), timeout=timeout
                )


def head_watch(app: FastAPI) -> HeadWatch | None:
    watch: HeadWatch | None = getattr(app.state, "event_head", None)
    return watch


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[None]:
    """Run the event head watcher, the webhook deliverer and (with ``mqtt_url`` set) the
    MQTT publisher for as long as the server serves; stop them on shutdown."""
    from airside.server.mqtt import MqttPublisher
    from airside.server.webhooks import Deliverer

    airside: Airside = app.state.airside
    st = airside.settings
    watch = HeadWatch(airside, st.events_poll_s)
    app.state.event_head = watch
    deliverer = Deliverer(airside)
    publisher = MqttPublisher.from_settings(airside, watch)
    watching = asyncio.create_task(watch.run(), name="event-head")
    loop = asyncio.get_running_loop()

    def announced(_event_id: int | None) -> None:  # on the store listener's thread
        loop.call_soon_threadsafe(watch.poke)

    airside.add_event_follower(announced)
    await asyncio.to_thread(airside.follow_changes)
    tasks = [asyncio.create_task(deliverer.run(), name="webhooks")]
    if publisher is not None:
        await publisher.start()
        tasks.append(asyncio.create_task(publisher.run(), name="mqtt"))
    try:
        yield
    finally:
        airside.remove_event_follower(announced)
        await asyncio.to_thread(airside.stop_following)
        watching.cancel()
        deliverer.stop()
        if publisher is not None:
            publisher.stop()
        # Let each finish what it is sending (briefly), then cancel what is left.
        _done, pending = await asyncio.wait(tasks, timeout=5)
        for t in pending:
            t.cancel()
        await asyncio.gather(watching, *tasks, return_exceptions=True)
        if publisher is not None:
            await asyncio.to_thread(publisher.close)
        app.state.event_head = None
