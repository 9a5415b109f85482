"""A bounded pool for CPU-bound work (decoding, detection, embedding, search).

Requests that need the models queue here, not in the event loop, so ``/healthz``,
``/metrics`` and the event stream keep answering while identifications run. The queue is
bounded: when ``workers`` calls run and ``queue`` more wait, the next one is refused at once
with ``overloaded`` (503 with ``Retry-After``) instead of piling up; a call that waits
longer than ``deadline_s`` for a worker is refused the same way. Written by hand because
neither Starlette's thread pool nor anyio's limiter refuses: both only wait.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, ParamSpec, TypeVar

from fastapi import Depends, Request

from airside.errors import AirsideError

P = ParamSpec("P")
T = TypeVar("T")


class Overloaded(AirsideError):
    code = "overloaded"


class WorkPool:
    def __init__(self, workers: int, queue: int, deadline_s: float) -> None:
        self.workers = workers
        self.queue = queue
        self.deadline_s = deadline_s
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="airside-cpu")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting

    @property
    def depth(self) -> int:
        """Calls running or waiting (for /metrics)."""
        return self._admitted

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self._lock:
            if self._admitted >= self.workers + self.queue:
                raise Overloaded(
                    f"the server is busy ({self._admitted} requests in hand); retry shortly",
                    details={"retry_after": 1},
                )
            self._admitted += 1
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def call() -> T:
            loop.call_soon_threadsafe(started.set)
            return fn(*args, **kwargs)

        try:
            future = loop.run_in_executor(self._executor, functools.partial(call))
            try:
                await asyncio.wait_for(asyncio.shield(started.wait()), self.deadline_s)
            except TimeoutError:
                if future.cancel():  # still waiting for a worker: it never runs
                    raise Overloaded(
                        f"no worker was free within {self.deadline_s:g} s; retry shortly",
                        details={"retry_after": 1},
                    ) from None
            return await future
        finally:
            with self._lock:
                self._admitted -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def pool_of(request: Request) -> WorkPool:
    pool: WorkPool = request.app.state.pool
    return pool


Pool = Annotated[WorkPool, Depends(pool_of)]
