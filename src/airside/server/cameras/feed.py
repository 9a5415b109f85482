"""A camera's frames: a video source (``video/sources.py``, reconnection included) as a
camera delivers them.

A file or image folder standing in for a camera is played at its own frame rate (a
camera does not deliver faster than real time, and the pipeline then drops frames under
load as it does for a stream), and, with ``loop``, played again when it ends: stream time
and frame indices keep increasing across the loops, and the end of one pass is not an
end of stream. Live sources pass through as they are. Every system event is shown to
``on_event`` (the worker's state follows ``stream_lost`` / ``stream_restored``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from airside.video.closing import ClosesOnExit
from airside.video.sources import Frame, SourceStats, SystemEvent, VideoSource, open_source


class CameraFeed(ClosesOnExit):
    def __init__(
        self,
        spec: str,
        *,
        loop: bool = False,
        fps: float | None = None,
        on_event: Callable[[SystemEvent], None] | None = None,
    ) -> None:
        self._spec_in = spec
        self._fps_in = fps
        self._inner: VideoSource = open_source(spec, fps=fps or 25.0)  # raises SourceError
        self.spec = self._inner.spec
        self.loop = loop and not self._inner.live
        self.pace = not self._inner.live
        self.live = True  # real time: the pipeline keeps the newest frames, as for a camera
        self.on_event = on_event
        self.stats = SourceStats()
        self.loops = 0
        self._stop = threading.Event()
        self._pts_offset = 0.0
        self._index_offset = 0
        self._last_pts = 0.0
        self._last_index = -1
        self._t0: float | None = None  # wall time of stream time 0 (pacing)

    @property
    def fps(self) -> float | None:
        return self._inner.fps

    def __iter__(self) -> Iterator[Frame | SystemEvent]:
        return self

    def __next__(self) -> Frame | SystemEvent:
        while True:
            item = next(self._inner)  # StopIteration ends the feed
            if isinstance(item, SystemEvent):
                if item.type == "stream_ended" and self.loop and not self._stop.is_set():
                    self._next_pass()
                    continue
                event = SystemEvent(item.type, item.at + self._pts_offset, item.wall,
                                    item.detail, item.source)  # fmt: skip
                if self.on_event is not None:
                    self.on_event(event)
                return event
            return self._frame(item)

    def _frame(self, f: Frame) -> Frame:
        pts = f.pts + self._pts_offset
        index = f.index + self._index_offset
        self._last_pts, self._last_index = pts, index
        self.stats.frames += 1
        if self.pace:
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now - pts
            wait = self._t0 + pts - now
            if wait > 0:
                self._stop.wait(wait)
            elif wait < -1.0:  # far behind (a slow open): catch up, do not burst
                self._t0 = now - pts
        return Frame(index, pts, f.image, time.time(), f.source_pts)

    def _next_pass(self) -> None:
        """Open the file again; its stream time continues one frame after the last."""
        self._accumulate()
        self._inner.close()
        step = 1.0 / (self._inner.fps or self._fps_in or 25.0)
        self._pts_offset = self._last_pts + step
        self._index_offset = self._last_index + 1
        self._inner = open_source(self._spec_in, fps=self._fps_in or 25.0)
        self.loops += 1

    def _accumulate(self) -> None:
        s = self._inner.stats
        self.stats.corrupt_packets += s.corrupt_packets
        self.stats.decode_errors += s.decode_errors
        self.stats.dropped_frames += s.dropped_frames
        self.stats.unreadable_images += s.unreadable_images

    @property
    def outages(self) -> int:
        return self._inner.stats.outages

    def stop(self) -> None:
        self._stop.set()
        self._inner.stop()

    def close(self) -> None:
        self._stop.set()
        self._inner.close()
