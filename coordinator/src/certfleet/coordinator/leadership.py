"""Leader election for loops that must run once across coordinators.

On PostgreSQL the leader holds a session-level advisory lock on a connection of its
own. If the leader dies its connection drops and the lock with it; the others try
again every ``retry`` seconds, so one of them takes over within that lease. On
SQLite a single coordinator is the supported deployment, so it always leads.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .storage import Database

__all__ = ["LEADER_LOCK", "Leadership"]

log = logging.getLogger("certfleet.leadership")

LEADER_LOCK = 7_400_112_003


class Leadership:
    def __init__(self, database: Database, url: str | None, *, retry: float = 2.0) -> None:
        self.database = database
        self.url = url
        self.retry = retry
        self.is_leader = False
        self._connection: Any = None

    def _try_acquire(self) -> bool:
        import psycopg

        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        return bool(self._connection.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()[0])

    def _still_held(self) -> bool:
        try:
            self._connection.execute("SELECT 1")
            return True
        except Exception:  # the connection died: so did the lock
            return False

    def _release(self) -> None:
        if self._connection is not None and not self._connection.closed:
            self._connection.close()
        self._connection = None

    async def wait_leadership(self) -> None:
        """Return once this coordinator leads."""
        if self.database.dialect != "postgresql":
            self.is_leader = True
            return
        while True:
            try:
                if await trio.to_thread.run_sync(self._try_acquire):
                    self.is_leader = True
                    log.info("this coordinator leads the periodic loops")
                    return
            except Exception as exc:
                log.warning("leader election failed (%s); retrying", exc)
                await trio.to_thread.run_sync(self._release)
            await trio.sleep(self.retry)

    async def still_leading(self) -> bool:
        if self.database.dialect != "postgresql":
            return True
        held = await trio.to_thread.run_sync(self._still_held)
        if not held:
            self.is_leader = False
            log.warning("lost leadership")
            await trio.to_thread.run_sync(self._release)
        return held

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self.is_leader = False
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._release)
