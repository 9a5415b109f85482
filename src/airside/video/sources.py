"""Video sources: files, network streams, local cameras and image folders as one iterator.

:func:`open_source` turns a *spec* into a :class:`VideoSource`, an iterator of :class:`Frame`
and :class:`SystemEvent` items.  Decoding runs in the thread that iterates (the pipeline gives it
a thread of its own); :meth:`VideoSource.stop` may be called from any thread.

What a spec can be
    * a video file (mp4, mkv, avi, mov, ts, ... anything FFmpeg demuxes), decoded with PyAV;
    * an ``rtsp://``, ``rtsps://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``rtp://``,
      ``srt://`` or ``tcp://`` URL (RTSP goes over TCP unless ``options`` say otherwise);
    * a local camera, ``/dev/video0`` or ``camera:0`` (V4L2 on Linux, AVFoundation on macOS);
    * a folder of images (png, jpg, bmp, tiff, webp), in natural sort order
      (``img2`` before ``img10``), each decoded by :func:`airside.vision.imageio.load_image`.

Files and streams fail differently, on purpose
    A *file* either opens or raises :class:`SourceError` (an :class:`~airside.errors.AirsideError`,
    code ``source_unreadable`` or ``source_unsupported``) from :func:`open_source`, before any
    frame: the file is opened and decoded up to its first good frame there.  A file that ends
    yields ``stream_ended`` and stops.  Corrupt data inside a file is skipped, counted, and
    reported as a ``corrupt_data`` event; it is never fatal once a frame has been decoded.

    A *stream* (URL or camera) never raises once open_source returns (unless ``reconnect`` is
    off): a connection that fails, drops, stalls past ``read_timeout_s`` or ends is an outage.
    The source says ``stream_lost`` once per outage, retries with capped, jittered exponential
    back-off (``initial_backoff_s`` doubling up to ``max_backoff_s``, each wait drawn uniformly
    from [50 %, 100 %] of that, so many cameras that fail together do not reconnect in lock-step),
    and says ``stream_restored`` when *frames* flow again (a connection that opens and then
    delivers nothing is still the same outage).  ``stop()`` interrupts a back-off wait at once; a
    blocking open or read returns within ``open_timeout_s`` / ``read_timeout_s``.  The default
    cap, ``MAX_BACKOFF_S`` (2 s), bounds how long a source that comes back waits to be tried
    again, whatever the outage's length: frames flow within 5 s of its return (measured in
    ``tests/test_faults.py``), when the camera refuses connections or answers an error while it
    is away; one that swallows them silently adds up to ``open_timeout_s``.

Timestamps (``Frame.pts``, seconds of *stream time*)
    Stream time starts at 0 with the first frame and is strictly increasing for the life of the
    source, across reconnects, timestamp resets and wrap-arounds:

    * within one connection it advances by the difference of the stream's own timestamps
      (FFmpeg's best-effort presentation time), so variable frame rates and gaps are kept;
    * a frame without a timestamp advances by 1/fps (the declared rate, or the ``fps`` fallback
      for files; for live sources with no plausible declared rate, by the wall-clock time since
      the previous frame);
    * a step backwards, a step of less than 1 ms (an implausible >1000 fps) or a jump of more than
      10 s is a discontinuity (a spliced file, a camera reboot, an MPEG-TS wrap): the clock
      advances by one nominal frame interval instead, and re-bases on the new timestamps;
    * after a reconnect, stream time advances by the wall-clock length of the outage (at least
      one frame interval), so the gap is visible and stream time stays roughly aligned with
      real time, whatever timestamps the new connection starts from.

    The raw stream timestamp is kept in ``Frame.source_pts`` for diagnostics.

Frame rates
    A declared rate that is 0, NaN, infinite or above 1000 fps is ignored with one
    ``bad_frame_rate`` event, and so are stream timestamps that advance by less than 1 ms per
    frame; the clock then uses the rules above.  Nothing ever divides by a declared rate.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import av
import av.container
import av.stream
import av.video.stream
import numpy as np
from numpy.typing import NDArray

from airside.errors import AirsideError
from airside.video.closing import ClosesOnExit

__all__ = [
    "IMAGE_EXTENSIONS",
    "LIVE_SCHEMES",
    "MAX_PLAUSIBLE_FPS",
    "EventType",
    "Frame",
    "SourceError",
    "SourceStats",
    "SystemEvent",
    "VideoSource",
    "open_source",
    "safe_spec",
]

EventType = Literal[
    "stream_lost",
    "stream_restored",
    "stream_ended",
    "resolution_changed",
    "corrupt_data",
    "bad_frame_rate",
]

#: URL schemes treated as live streams (reconnect on failure).
LIVE_SCHEMES: Final[frozenset[str]] = frozenset(
    {"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "rtp", "srt", "tcp"}
)
#: File name extensions an image folder is read from (case-insensitive).
IMAGE_EXTENSIONS: Final[frozenset[str]] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
)
#: A declared rate above this (or <= 0, NaN) is treated as unknown.
MAX_PLAUSIBLE_FPS: Final = 1000.0
#: Timestamp steps below this are implausible (the same 1000 fps bound).
MIN_FRAME_STEP_S: Final = 1.0 / MAX_PLAUSIBLE_FPS
#: A forward timestamp jump above this within one connection is a discontinuity.
MAX_PTS_JUMP_S: Final = 10.0
#: Give up on a file (or drop a connection) after this many unreadable packets in a row.
MAX_CONSECUTIVE_ERRORS: Final = 100
#: The default cap of a live source's reconnection back-off: a camera that comes back after
#: an outage of any length is tried again within this (jittered to 50-100 % of it), so frames
#: flow again within seconds of its return. Probing a missing camera every 1-2 s costs one
#: connection attempt.
MAX_BACKOFF_S: Final = 2.0

#: FFmpeg demuxers that will "open" things that are not video (a text file as ANSI art).
_REJECTED_FORMATS: Final[frozenset[str]] = frozenset({"tty"})
_CAMERA_RE: Final = re.compile(r"^camera:(.+)$")


class SourceError(AirsideError):
    """A source that cannot be used: ``code`` is ``source_unreadable`` (missing, unreadable,
    corrupt beyond use, no frames), ``source_unsupported`` (not a video, no decoder, unknown
    scheme) or ``source_unreachable`` (a stream that did not open, with ``reconnect`` off)."""

    code = "source_unreadable"


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One decoded picture (compared by identity: the pixels make value equality ambiguous).

    ``index`` counts the frames this source has yielded (0, 1, 2, ... across reconnects);
    ``pts`` is stream time in seconds (see the module docs); ``image`` is RGB uint8, HxWx3,
    owned by the receiver; ``wall`` is :func:`time.time` when it was decoded; ``source_pts`` is
    the stream's raw timestamp in seconds (``None`` when the stream had none).
    """

    index: int
    pts: float
    image: NDArray[np.uint8]
    wall: float = 0.0
    source_pts: float | None = None

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class SystemEvent:
    """Something that happened to the source rather than in the scene.

    ``at`` is the stream time it refers to (the next frame's ``pts`` for ``stream_restored``
    and ``resolution_changed``, otherwise the last frame's), ``wall`` the wall-clock time
    (:func:`time.time`), ``detail`` a human sentence, ``source`` the spec with any password
    masked.
    """

    type: EventType
    at: float
    wall: float
    detail: str = ""
    source: str = ""


@dataclass(slots=True)
class SourceStats:
    """Running counters, readable at any time (plain ints; reads from another thread are fine)."""

    frames: int = 0
    corrupt_packets: int = 0  # demuxer-flagged or unreadable packets
    decode_errors: int = 0  # packets the decoder rejected
    dropped_frames: int = 0  # frames the decoder flagged as damaged (concealed) and we dropped
    unreadable_images: int = 0  # image folders only
    outages: int = 0  # stream_lost events
    connect_attempts: int = 0  # opens tried (live sources), successful or not
    resolution_changes: int = 0
    timestamp_discontinuities: int = 0

    @property
    def corrupt(self) -> int:
        """Everything skipped because of bad data."""
        return (
            self.corrupt_packets + self.decode_errors + self.dropped_frames + self.unreadable_images
        )


@runtime_checkable
class VideoSource(Protocol):
    """An iterator of frames and system events; ends after exactly one ``stream_ended``."""

    spec: str
    live: bool
    stats: SourceStats

    @property
    def fps(self) -> float | None:
        """The plausible declared (or configured) frame rate, if any."""
        ...

    def __iter__(self) -> Iterator[Frame | SystemEvent]: ...

    def __next__(self) -> Frame | SystemEvent: ...

    def stop(self) -> None:
        """Ask the source to end (thread-safe): it yields ``stream_ended`` and stops."""
        ...

    def close(self) -> None:
        """Release the decoder and connection (call from the iterating thread)."""
        ...

    def __enter__(self) -> VideoSource: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def safe_spec(spec: str) -> str:
    """``spec`` with the password of a ``scheme://user:password@host`` URL masked."""
    if "://" not in spec:
        return spec
    try:
        parts = urlsplit(spec)
    except ValueError:
        return spec
    if parts.password is None:
        return spec
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def plausible_fps(value: float | Fraction | None) -> float | None:
    """``value`` as a float if it is a usable frame rate (0 < fps <= 1000), else ``None``."""
    if value is None:
        return None
    try:
        fps = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    if not math.isfinite(fps) or fps <= 0 or fps > MAX_PLAUSIBLE_FPS:
        return None
    return fps


# --------------------------------------------------------------------------------------- clock


class _Clock:
    """Maps raw per-connection timestamps onto one strictly increasing stream time."""

    def __init__(self, *, fallback_fps: float, live: bool) -> None:
        self.fallback_interval = 1.0 / fallback_fps
        self.live = live
        self.nominal_interval: float | None = None
        self.discontinuities = 0
        self.implausible = 0
        self._last_out: float | None = None
        self._last_raw: float | None = None
        self._last_wall: float | None = None
        self._base: float | None = None
        self._new_segment = True

    @property
    def last(self) -> float:
        return 0.0 if self._last_out is None else self._last_out

    def new_segment(self, *, nominal_fps: float | None, base: float | None) -> None:
        """A new connection (or the file) starts; ``base`` is its declared start time."""
        self.nominal_interval = None if nominal_fps is None else 1.0 / nominal_fps
        self._base = base
        self._last_raw = None
        self._new_segment = True

    def _step(self, wall: float) -> float:
        if self.nominal_interval is not None:
            return self.nominal_interval
        if self.live and self._last_wall is not None:
            return max(wall - self._last_wall, MIN_FRAME_STEP_S)
        return self.fallback_interval

    def stamp(self, raw: float | None, wall: float) -> float:
        if raw is not None and not math.isfinite(raw):
            raw = None
        if self._last_out is None:
            out = 0.0
            if raw is not None:
                base = raw if self._base is None else self._base
                if 0.0 <= raw - base <= MAX_PTS_JUMP_S:
                    out = raw - base
        elif self._new_segment:
            gap = wall - (self._last_wall if self._last_wall is not None else wall)
            out = self._last_out + max(gap, self.nominal_interval or MIN_FRAME_STEP_S)
        elif raw is None or self._last_raw is None:
            out = self._last_out + self._step(wall)
        else:
            delta = raw - self._last_raw
            if delta <= 0.0 or delta > MAX_PTS_JUMP_S:
                self.discontinuities += 1
                delta = self._step(wall)
            elif delta < MIN_FRAME_STEP_S:
                self.implausible += 1
                delta = self._step(wall)
            out = self._last_out + delta
        self._new_segment = False
        self._last_out = out
        self._last_raw = raw
        self._last_wall = wall
        return out


# ---------------------------------------------------------------------------------- base class

_Item = Frame | SystemEvent
_Gen = Generator[_Item, None, str]


class _SourceBase(ClosesOnExit):
    """Shared machinery: the item buffer, events, stream time, resolution and stop handling."""

    live: bool = False

    def __init__(self, spec: str, *, fallback_fps: float, max_frames: int | None) -> None:
        self.spec = safe_spec(spec)
        self.stats = SourceStats()
        self._max_frames = max_frames
        self._clock = _Clock(fallback_fps=fallback_fps, live=self.live)
        self._stop_event = threading.Event()
        self._buffer: deque[_Item] = deque()
        self._gen: Generator[_Item, None, None] | None = None
        self._finished = False
        self._size: tuple[int, int] | None = None
        self._fps: float | None = None
        self._outage_since: float | None = None
        self._corrupt_pending = 0
        self._corrupt_notes: list[str] = []
        self._warned_fps = False
        self._warned_pts = False

    # -- public surface -------------------------------------------------------------------
    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the last frame yielded."""
        return self._size

    def __iter__(self) -> Iterator[_Item]:
        return self

    def __next__(self) -> _Item:
        if self._buffer:
            return self._buffer.popleft()
        if self._finished:
            raise StopIteration
        if self._gen is None:
            self._gen = self._outer()
        try:
            return next(self._gen)
        except StopIteration:
            self._finished = True
            raise

    def stop(self) -> None:
        self._stop_event.set()

    @property
    def stopped(self) -> bool:
        return self._stop_event.is_set()

    def close(self) -> None:
        self._stop_event.set()
        self._finished = True
        self._buffer.clear()
        if self._gen is not None:
            self._gen.close()
            self._gen = None
        self._release()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r} frames={self.stats.frames}>"

    # -- for subclasses ---------------------------------------------------------------------
    def _run(self) -> _Gen:
        raise NotImplementedError

    def _release(self) -> None:
        """Close whatever the subclass holds open (idempotent)."""

    def _prime(self) -> None:
        """Run up to the first frame now, so an unusable source raises from open_source."""
        self._gen = self._outer()
        for item in self._gen:
            self._buffer.append(item)
            if isinstance(item, Frame) or item.type == "stream_ended":
                return
        self._finished = True

    def _outer(self) -> Generator[_Item, None, None]:
        try:
            detail = yield from self._run()
            yield from self._flush_corrupt()
            yield self._event("stream_ended", detail)
        finally:
            self._release()

    def _event(self, type_: EventType, detail: str = "", at: float | None = None) -> SystemEvent:
        return SystemEvent(
            type=type_,
            at=self._clock.last if at is None else at,
            wall=time.time(),
            detail=detail,
            source=self.spec,
        )

    def _note_corrupt(self, note: str) -> None:
        self._corrupt_pending += 1
        if len(self._corrupt_notes) < 3 and note not in self._corrupt_notes:
            self._corrupt_notes.append(note)

    def _flush_corrupt(self) -> Iterator[SystemEvent]:
        if not self._corrupt_pending:
            return
        n, notes = self._corrupt_pending, "; ".join(self._corrupt_notes)
        self._corrupt_pending = 0
        self._corrupt_notes = []
        yield self._event("corrupt_data", f"skipped {n} corrupt item(s): {notes}")

    def _fps_warning(self, declared: Any) -> Iterator[SystemEvent]:
        if self._warned_fps:
            return
        self._warned_fps = True
        how = (
            "the wall clock where timestamps are missing"
            if self.live
            else f"{1.0 / self._clock.fallback_interval:g} fps where timestamps are missing"
        )
        yield self._event(
            "bad_frame_rate",
            f"declared frame rate {declared} fps is implausible; using the stream's own "
            f"timestamps, and {how}",
        )

    def _emit(self, image: NDArray[np.uint8], raw: float | None, wall: float) -> Iterator[_Item]:
        """Yield one frame, preceded by whatever events it implies."""
        yield from self._flush_corrupt()
        implausible_before = self._clock.implausible
        discontinuities_before = self._clock.discontinuities
        pts = self._clock.stamp(raw, wall)
        self.stats.timestamp_discontinuities += self._clock.discontinuities - discontinuities_before
        if self._clock.implausible > implausible_before and not self._warned_pts:
            self._warned_pts = True
            yield self._event(
                "bad_frame_rate",
                "stream timestamps advance by less than 1 ms per frame (over 1000 fps); "
                "using the nominal frame interval instead",
                at=pts,
            )
        if self._outage_since is not None:
            lasted = wall - self._outage_since
            self._outage_since = None
            yield self._event("stream_restored", f"frames flowing again after {lasted:.1f} s", pts)
        h, w = int(image.shape[0]), int(image.shape[1])
        if self._size is not None and self._size != (w, h):
            self.stats.resolution_changes += 1
            ow, oh = self._size
            yield self._event("resolution_changed", f"{ow}x{oh} -> {w}x{h}", pts)
        self._size = (w, h)
        frame = Frame(index=self.stats.frames, pts=pts, image=image, wall=wall, source_pts=raw)
        self.stats.frames += 1
        yield frame

    def _frames_left(self) -> bool:
        return self._max_frames is None or self.stats.frames < self._max_frames

    def _lost(self, detail: str) -> Iterator[SystemEvent]:
        yield from self._flush_corrupt()
        if self._outage_since is None:
            self._outage_since = time.time()
            self.stats.outages += 1
            yield self._event("stream_lost", detail)


# ------------------------------------------------------------------------------ PyAV sources


class _Unreachable(Exception):
    """Opening a live source failed in a way that may pass (retry with back-off)."""


class _AVSource(_SourceBase):
    """Anything FFmpeg demuxes: files, network streams, cameras."""

    def __init__(
        self,
        spec: str,
        target: str,
        *,
        live: bool,
        fmt: str | None,
        options: dict[str, str],
        reconnect: bool,
        open_timeout_s: float,
        read_timeout_s: float,
        initial_backoff_s: float,
        max_backoff_s: float,
        fallback_fps: float,
        max_frames: int | None,
        drop_corrupt_frames: bool,
        decoder_threads: int,
    ) -> None:
        self.live = live
        super().__init__(spec, fallback_fps=fallback_fps, max_frames=max_frames)
        self._target = target
        self._format = fmt
        self._options = options
        self._reconnect = reconnect
        self._timeouts = (open_timeout_s, read_timeout_s)
        self._initial_backoff = initial_backoff_s
        self._max_backoff = max_backoff_s
        self._drop_corrupt = drop_corrupt_frames
        self._threads = decoder_threads
        self._rng = random.Random()
        self._container: av.container.InputContainer | None = None
        self._lock = threading.Lock()
        if not live:
            self._container = self._open_file()
            self._prime()
        elif not reconnect:
            try:
                self._container = self._open_live()
            except _Unreachable as e:
                raise SourceError(str(e), code="source_unreachable") from None

    # -- opening -----------------------------------------------------------------------------
    def _message(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        masked = safe_spec(self._target)
        return text.replace(self._target, masked) if masked != self._target else text

    def _open(self) -> av.container.InputContainer:
        return av.open(
            self._target,
            mode="r",
            format=self._format,
            options=dict(self._options),
            timeout=self._timeouts,
        )

    def _open_file(self) -> av.container.InputContainer:
        path = self._target
        try:
            container = self._open()
        except (av.error.FileNotFoundError, FileNotFoundError):
            raise SourceError(f"video file not found: {path}") from None
        except (av.error.PermissionError, PermissionError):
            raise SourceError(f"no permission to read video file {path}") from None
        except av.error.InvalidDataError:
            raise SourceError(
                f"cannot read {path}: not a video container FFmpeg recognises, or the file is "
                "truncated or damaged"
            ) from None
        except (av.FFmpegError, OSError) as e:
            raise SourceError(f"cannot open video file {path}: {self._message(e)}") from None
        try:
            self._check_container(container)
        except SourceError:
            container.close()
            raise
        return container

    def _open_live(self) -> av.container.InputContainer:
        self.stats.connect_attempts += 1
        try:
            container = self._open()
        except av.error.ExitError:
            raise _Unreachable(
                f"{self.spec} did not answer within {self._timeouts[0]:g} s"
            ) from None
        except (av.FFmpegError, OSError) as e:
            raise _Unreachable(f"cannot open {self.spec}: {self._message(e)}") from None
        try:
            self._check_container(container)
        except SourceError as e:
            container.close()
            raise _Unreachable(str(e)) from None
        return container

    def _check_container(self, container: av.container.InputContainer) -> None:
        fmt = container.format.name
        if fmt in _REJECTED_FORMATS:
            raise SourceError(f"{self.spec} is not a video ({fmt})", code="source_unsupported")
        if not container.streams.video:
            kinds: list[str] = sorted({s.type for s in container.streams}) or ["none"]
            raise SourceError(
                f"{self.spec} has no video stream (streams: {', '.join(kinds)})",
                code="source_unsupported",
            )
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise SourceError(
                f"{self.spec}: no decoder in this build for its video codec",
                code="source_unsupported",
            )

    # -- the loop ----------------------------------------------------------------------------
    def _backoff(self, attempt: int) -> float:
        cap = min(self._max_backoff, self._initial_backoff * (2.0 ** min(attempt, 30)))
        return cap * self._rng.uniform(0.5, 1.0)

    def _release(self) -> None:
        with self._lock:
            container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(av.FFmpegError, OSError):
                container.close()

    def _run(self) -> _Gen:
        attempt = 0
        while True:
            if self.stopped:
                return "stopped"
            container = self._container
            if container is None:
                try:
                    container = self._open_live()
                except _Unreachable as e:
                    yield from self._lost(str(e))
                    if self._stop_event.wait(self._backoff(attempt)):
                        return "stopped"
                    attempt += 1
                    continue
                with self._lock:
                    self._container = container
            frames_before = self.stats.frames
            outcome, detail = yield from self._decode(container)
            self._release()
            if outcome == "done":
                return detail
            if not self._frames_left():  # the last frames came out of the decoder's flush
                return "max_frames reached"
            if self.stats.frames > frames_before:
                attempt = 0
            if not self.live:
                if self.stats.frames == 0:
                    raise SourceError(
                        f"no decodable video frames in {self.spec} ({detail})"
                        + (f"; {self.stats.corrupt} corrupt item(s)" if self.stats.corrupt else "")
                    )
                return detail
            if not self._reconnect:
                return f"stream ended: {detail}"
            yield from self._lost(detail)
            if self._stop_event.wait(self._backoff(attempt)):
                return "stopped"
            attempt += 1

    def _setup_stream(self, container: av.container.InputContainer) -> Iterator[SystemEvent]:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if self._threads:
            stream.codec_context.thread_count = self._threads
        declared = stream.average_rate
        fps = plausible_fps(declared)
        if declared is None:
            fps = plausible_fps(stream.guessed_rate)
        elif fps is None:
            yield from self._fps_warning(f"{float(declared):g}")
        self._fps = fps
        base: float | None = None
        if not self.live and stream.start_time is not None and stream.time_base is not None:
            base = float(stream.start_time * stream.time_base)
        self._clock.new_segment(nominal_fps=fps, base=base)

    def _decode(
        self, container: av.container.InputContainer
    ) -> Generator[_Item, None, tuple[str, str]]:
        """Demux and decode one connection (or the file).

        Returns ``("done", why)`` when the source should end for good (stopped, max_frames),
        ``("eof", why)`` at the end of the data and ``("error", why)`` when reading failed.
        """
        yield from self._setup_stream(container)
        stream = container.streams.video[0]
        demux = container.demux(stream)
        errors_in_a_row = 0
        while True:
            if self.stopped:
                return "done", "stopped"
            try:
                packet = next(demux)
            except StopIteration:
                return "eof", "end of file" if not self.live else "the stream ended"
            except av.error.ExitError:
                yield from self._drain(stream)
                return "error", f"no data for {self._timeouts[1]:g} s (stalled)"
            except av.error.InvalidDataError as e:
                self.stats.corrupt_packets += 1
                self._note_corrupt(f"unreadable data ({self._message(e)})")
                errors_in_a_row += 1
                if errors_in_a_row >= MAX_CONSECUTIVE_ERRORS:
                    yield from self._drain(stream)
                    return "error", f"{errors_in_a_row} unreadable packets in a row"
                demux = container.demux(stream)
                continue
            except (av.FFmpegError, OSError) as e:
                yield from self._drain(stream)
                return "error", f"read failed: {self._message(e)}"
            errors_in_a_row = 0
            if packet.is_corrupt:
                self.stats.corrupt_packets += 1
                self._note_corrupt("packet flagged corrupt by the demuxer")
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError) as e:
                self.stats.decode_errors += 1
                self._note_corrupt(f"decoder error ({self._message(e)})")
                continue
            for vf in frames:
                yield from self._emit_av(vf)
                if not self._frames_left():
                    return "done", "max_frames reached"

    def _emit_av(self, vf: av.VideoFrame) -> Iterator[_Item]:
        if self._drop_corrupt and vf.is_corrupt:
            self.stats.dropped_frames += 1
            self._note_corrupt("damaged frame dropped")
            return
        wall = time.time()
        try:
            image = np.asarray(vf.to_ndarray(format="rgb24"), dtype=np.uint8)
        except (av.FFmpegError, ValueError) as e:  # pragma: no cover - exotic pixel formats
            self.stats.decode_errors += 1
            self._note_corrupt(f"frame conversion failed ({e})")
            return
        yield from self._emit(image, vf.time, wall)

    def _drain(self, stream: av.video.stream.VideoStream) -> Iterator[_Item]:
        """Flush the frames the decoder still holds (it buffers a few with frame threading)."""
        try:
            frames = stream.codec_context.decode(None)
        except (av.FFmpegError, ValueError):
            return
        for vf in frames:
            if not self._frames_left():
                return
            yield from self._emit_av(vf)


# ------------------------------------------------------------------------------ image folder


def _natural_key(path: Path) -> list[tuple[int, int | str]]:
    return [
        (0, int(tok)) if tok.isdigit() else (1, tok.lower())
        for tok in re.split(r"(\d+)", path.name)
        if tok
    ]


class _ImageFolderSource(_SourceBase):
    live = False

    def __init__(self, spec: str, folder: Path, *, fps: float, max_frames: int | None) -> None:
        super().__init__(spec, fallback_fps=fps, max_frames=max_frames)
        try:
            entries = list(folder.iterdir())
        except OSError as e:
            raise SourceError(f"cannot list image folder {folder}: {e.strerror or e}") from None
        self._files = sorted(
            (
                p
                for p in entries
                if p.suffix.lower() in IMAGE_EXTENSIONS
                and not p.name.startswith(".")
                and p.is_file()
            ),
            key=_natural_key,
        )
        if not self._files:
            raise SourceError(
                f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder {folder}"
            )
        self._fps = fps
        self._clock.new_segment(nominal_fps=fps, base=0.0)
        self._prime()

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    def _run(self) -> _Gen:
        from airside.vision.imageio import ImageError, load_image

        fps = self._fps or 1.0 / self._clock.fallback_interval
        for i, path in enumerate(self._files):
            if self.stopped:
                return "stopped"
            try:
                image = load_image(path).pixels
            except ImageError as e:
                self.stats.unreadable_images += 1
                self._note_corrupt(f"{path.name}: {e}")
                continue
            yield from self._emit(image, i / fps, time.time())
            if not self._frames_left():
                return "max_frames reached"
        if self.stats.frames == 0:
            raise SourceError(f"none of the {len(self._files)} images in {self.spec} is readable")
        return f"end of folder ({len(self._files)} images)"


# -------------------------------------------------------------------------------- open_source


def _camera_target(name: str) -> tuple[str, str]:
    """(target, format) for ``camera:NAME`` on this platform."""
    if sys.platform.startswith("linux"):
        return (f"/dev/video{name}" if name.isdigit() else name), "v4l2"
    if sys.platform == "darwin":
        return name, "avfoundation"
    if sys.platform.startswith("win"):
        return f"video={name}", "dshow"
    raise SourceError(
        f"local cameras are not supported on {sys.platform}", code="source_unsupported"
    )


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")


def open_source(
    spec: str | os.PathLike[str],
    *,
    reconnect: bool = True,
    initial_backoff_s: float = 0.5,
    max_backoff_s: float = MAX_BACKOFF_S,
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 10.0,
    fps: float = 25.0,
    max_frames: int | None = None,
    options: dict[str, str] | None = None,
    drop_corrupt_frames: bool = True,
    decoder_threads: int = 0,
) -> VideoSource:
    """Open ``spec`` (file path, stream URL, ``camera:N`` / ``/dev/videoN``, image folder).

    ``reconnect`` (live sources only): retry an outage forever with back-off; off, the first
    outage ends the source (and a stream that does not open raises ``source_unreachable``).
    ``fps`` is the rate of an image folder, and the fallback rate for a file whose stream has no
    timestamps and no plausible declared rate.  ``max_frames`` ends the source after that many
    frames.  ``options`` go to FFmpeg (e.g. ``{"rtsp_transport": "udp"}`` or, for a camera,
    ``{"video_size": "1280x720", "framerate": "30"}``).  ``drop_corrupt_frames`` drops frames
    the decoder flags as damaged (concealed errors) rather than passing them on.
    ``decoder_threads`` 0 lets FFmpeg choose.

    Raises :class:`SourceError` for a file or folder that cannot be used, ``ValueError`` for
    bad arguments.
    """
    spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("empty source spec")
    for name, value in (
        ("initial_backoff_s", initial_backoff_s),
        ("max_backoff_s", max_backoff_s),
        ("open_timeout_s", open_timeout_s),
        ("read_timeout_s", read_timeout_s),
    ):
        _check_positive(name, value)
    if plausible_fps(fps) is None:
        raise ValueError(f"fps must be in (0, {MAX_PLAUSIBLE_FPS:g}], not {fps!r}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, not {max_frames!r}")

    common: dict[str, Any] = {
        "reconnect": reconnect,
        "open_timeout_s": float(open_timeout_s),
        "read_timeout_s": float(read_timeout_s),
        "initial_backoff_s": float(initial_backoff_s),
        "max_backoff_s": float(max_backoff_s),
        "fallback_fps": float(fps),
        "max_frames": max_frames,
        "drop_corrupt_frames": drop_corrupt_frames,
        "decoder_threads": decoder_threads,
    }
    opts = dict(options or {})

    camera = _CAMERA_RE.match(spec)
    if camera or spec.startswith("/dev/video"):
        if camera:
            target, fmt = _camera_target(camera.group(1))
        else:
            target, fmt = spec, "v4l2"
        return _AVSource(spec, target, live=True, fmt=fmt, options=opts, **common)

    if "://" in spec:
        scheme = spec.split("://", 1)[0].lower()
        if scheme == "file":
            spec = urlsplit(spec).path
        elif scheme in LIVE_SCHEMES:
            if scheme in ("rtsp", "rtsps"):
                opts.setdefault("rtsp_transport", "tcp")
            return _AVSource(spec, spec, live=True, fmt=None, options=opts, **common)
        else:
            raise SourceError(
                f"unsupported stream scheme {scheme!r} in {safe_spec(spec)} "
                f"(supported: {', '.join(sorted(LIVE_SCHEMES))})",
                code="source_unsupported",
            )

    path = Path(spec)
    if path.is_dir():
        return _ImageFolderSource(spec, path, fps=float(fps), max_frames=max_frames)
    if not path.exists():
        raise SourceError(f"video file not found: {spec}")
    if not path.is_file():
        raise SourceError(f"not a regular file or folder: {spec}", code="source_unsupported")
    return _AVSource(spec, spec, live=False, fmt=None, options=opts, **common)
