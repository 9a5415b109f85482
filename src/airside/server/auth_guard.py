"""Failed sign-in attempts, counted per client address: after ``auth_fail_limit`` failures
(a key or session token not recognised, revoked, expired...) within ``auth_fail_window_s``,
the address is locked out for ``auth_lockout_s``: every attempt from it is refused (429,
Retry-After) before any key is looked at, a valid one too, so guessing cannot go on.

Another address's success resets nothing; the address's own success does not clear a
lockout already begun. Each failure is audited by the key check itself; a lockout adds
one record (``auth.lockout``), not one per refused attempt, and counts in
``airside_auth_lockouts_total``. State is this process's: several server processes each
count their own (docs/security.md)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Counter

from airside.server.metrics import REGISTRY

AUTH_FAILURES = Counter(
    "airside_auth_failures_total", "failed API-key or console-session attempts",
    registry=REGISTRY,
)  # fmt: skip
AUTH_LOCKOUTS = Counter("airside_auth_lockouts_total",
                        "client addresses locked out after failed attempts",
                        registry=REGISTRY)  # fmt: skip

# Codes of a presented credential that did not pass (not a missing one, not a refusal of
# a known caller's right).
FAILURE_CODES = frozenset({"bad_key", "key_revoked", "key_expired", "unknown_principal",
                           "principal_disabled", "session_ended", "session_expired"})  # fmt: skip
_MAX_ADDRESSES = 100_000  # beyond this, the oldest addresses' failures are forgotten


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class AuthGuard:
    def __init__(
        self, limit: int, window_s: float, lockout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.limit, self.window_s, self.lockout_s = limit, window_s, lockout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._by_address: dict[str, _Record] = {}

    def locked_for(self, address: str) -> float:
        """Seconds the address stays locked out (0: it may try)."""
        with self._lock:
            rec = self._by_address.get(address)
            return max(0.0, rec.locked_until - self._clock()) if rec is not None else 0.0

    def failed(self, address: str) -> int:
        """Count a failure; returns the failures in the window when this one begins a
        lockout, else 0."""
        AUTH_FAILURES.inc()
        now = self._clock()
        with self._lock:
            rec = self._by_address.pop(address, None) or _Record()
            self._by_address[address] = rec  # most recent last
            while len(self._by_address) > _MAX_ADDRESSES:
                del self._by_address[next(iter(self._by_address))]
            rec.failures.append(now)
            while rec.failures and rec.failures[0] <= now - self.window_s:
                rec.failures.popleft()
            if len(rec.failures) >= self.limit and rec.locked_until <= now:
                n = len(rec.failures)
                rec.locked_until = now + self.lockout_s
                rec.failures.clear()
                AUTH_LOCKOUTS.inc()
                return n
        return 0
