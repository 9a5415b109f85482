"""A local MQTT broker and loopback helpers for the benchmarks and tests: the broker at
127.0.0.1:1883 when one answers (Mosquitto), otherwise amqtt (a broker written in Python,
from PyPI) started in this process on a free port. Never used by ``airside serve``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def amqtt_broker() -> Iterator[int]:
    """An amqtt broker on a free loopback port, on its own event loop in a thread."""
    from amqtt.broker import Broker

    port = free_port()
    ready = threading.Event()
    stop: dict[str, Any] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }

        async def main() -> None:
            broker = Broker(config)
            await broker.start()
            stop["event"] = asyncio.Event()
            stop["loop"] = loop
            ready.set()
            await stop["event"].wait()
            await broker.shutdown()

        loop.run_until_complete(main())
        loop.close()

    thread = threading.Thread(target=serve, name="amqtt", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("amqtt did not start")
    try:
        yield port
    finally:
        stop["loop"].call_soon_threadsafe(stop["event"].set)
        thread.join(timeout=15)
