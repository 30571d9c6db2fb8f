"""Rate limit on failed authentication, per source address.

Failures are counted in the database (fixed one-minute windows), so every
coordinator behind a load balancer sees the same count. Each coordinator keeps the
sources it found over the limit in memory until the window ends, so successful
requests never pay for a database read.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import errors

__all__ = ["FAILURE_LIMIT", "WINDOW", "AuthFailureLimiter"]

FAILURE_LIMIT = 20
WINDOW = 60


class AuthFailureLimiter:
    def __init__(self, *, limit: int = FAILURE_LIMIT, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self._clock = clock
        self._blocked: dict[str, float] = {}

    def check(self, source: str) -> None:
        until = self._blocked.get(source)
        if until is None:
            return
        now = self._clock()
        if now >= until:
            del self._blocked[source]
            return
        raise errors.TooManyRequests(
            f"too many failed authentication attempts from {source}; try again later",
            retry_after=int(until - now) + 1)

    def failed(self, source: str, failures_this_window: int) -> None:
        if failures_this_window >= self.limit:
            self._blocked[source] = (self._clock() // WINDOW + 1) * WINDOW
