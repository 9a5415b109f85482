"""Test helpers for video: the synthetic clips (``airside.synthetic.clips``) and a scripted
local HTTP server that streams MPEG-TS and drops connections on cue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from airside.synthetic.clips import (  # noqa: F401  (re-exported for the tests)
    FACE_CROPS,
    Box,
    Clip,
    FaceName,
    Sprite,
    background,
    encode,
    face_image,
    make_image_folder,
    make_video,
    pick_codec,
    render,
    ts_bytes,
)

# ------------------------------------------------------------------------- a live-stream server


@dataclass(frozen=True)
class Step:
    """What :class:`StreamServer` does with one connection.

    ``body`` is sent after a ``200 OK`` (as fast as the socket takes it, in ``chunk``-byte
    writes); then the server ``"close"``\\s the connection (a drop) or ``"stall"``\\s (keeps it
    open, sending nothing, until the server stops).  ``silent`` accepts the connection but never
    answers at all; ``status`` other than 200 answers with that status and closes.
    """

    body: bytes = b""
    then: Literal["close", "stall"] = "close"
    silent: bool = False
    status: int = 200
    chunk: int = 16 * 1024


class StreamServer:
    """A local HTTP server that plays an MPEG-TS "camera", one :class:`Step` per connection.

    Connections past the end of ``script`` get ``default`` (by default: ``503`` and close, so a
    client keeps retrying).  ``connections`` records the :func:`time.monotonic` time of every
    accepted connection.  Use as a context manager; ``url`` is where it listens.
    """

    def __init__(self, script: Sequence[Step], default: Step | None = None) -> None:
        import socket
        import threading

        self.script = list(script)
        self.default = default if default is not None else Step(status=503)
        self.connections: list[float] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/live.ts"
        self._accept = threading.Thread(target=self._serve, name="stream-server", daemon=True)
        self._accept.start()

    def __enter__(self) -> StreamServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._accept.join(timeout=5)
        for t in self._threads:
            t.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        import threading
        import time

        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            n = len(self.connections)
            self.connections.append(time.monotonic())
            step = self.script[n] if n < len(self.script) else self.default
            t = threading.Thread(target=self._handle, args=(conn, step), daemon=True)
            self._threads.append(t)
            t.start()

    def _handle(self, conn: object, step: Step) -> None:
        import socket

        assert isinstance(conn, socket.socket)
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)  # the request; its content does not matter
                if step.silent:
                    self._stop.wait()
                    return
                if step.status != 200:
                    conn.sendall(
                        f"HTTP/1.1 {step.status} Unavailable\r\nContent-Length: 0\r\n"
                        "Connection: close\r\n\r\n".encode()
                    )
                    return
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n"
                )
                for i in range(0, len(step.body), step.chunk):
                    if self._stop.is_set():
                        return
                    conn.sendall(step.body[i : i + step.chunk])
                if step.then == "stall":
                    self._stop.wait()
                else:
                    conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                return
