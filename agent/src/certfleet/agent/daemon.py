"""The agent's main loop: resume, long-poll, execute, and drain the outbox."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import httpx
import msgspec
import trio

from certfleet.shared import wire

from .client import CoordinatorClient, CoordinatorError
from .config import AgentConfig, AgentPaths, load_identity
from .executor import Executor
from .keystore import KeyStore
from .policy import HostPolicy
from .secrets import Secrets
from .state import AgentState

__all__ = ["Agent", "run_agent"]

log = logging.getLogger("certfleet.agent")

POLL_WAIT = 25
MAX_BACKOFF = 300


TRANSIENT_REFUSALS = frozenset({401, 408, 429})
"""Refusals that say "not now" rather than "never": a request token refused for its
time (a clock step), a timeout, the failed-authentication rate limit. A result must
not be dropped for them."""


def backoff(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter, capped: 1 s, 2 s, 4 s … 300 s."""
    return rng.uniform(0, min(MAX_BACKOFF, 2 ** min(attempt, 16)))


class Agent:
    def __init__(self, paths: AgentPaths, *, coordinator: str | None = None, poll_wait: int = POLL_WAIT,
                 clock: Callable[[], float] = time.time) -> None:
        """``clock`` is the wall clock for tokens, order validity and state times;
        tests that simulate days pass one they control."""
        self.paths = paths
        self.config = AgentConfig.load(paths)
        self.state = AgentState(paths.state, clock=clock)
        self.client = CoordinatorClient(
            coordinator or self.config.coordinator, ca_pem=paths.ca_bundle.read_bytes(),
            agent_id=self.config.agent_id, identity=load_identity(paths), clock=clock)
        self._outbox_ready = trio.Event()
        self.executor = Executor(self.config, self.state, KeyStore(paths.keys), self.client, clock=clock,
                                 on_outbox=self._wake_outbox, secrets=Secrets(paths.secrets),
                                 policy=HostPolicy(paths.allowed_commands, paths.allowed_paths))
        self.poll_wait = poll_wait
        self._rng = random.Random()

    async def flush_outbox(self) -> None:
        """Send every due outbox entry once; failures are rescheduled with backoff."""
        for row in self.state.outbox_due():
            try:
                name = "agent.report" if row["path"].endswith("/reports") else "agent.result"
                kind = wire.AgentReport if name == "agent.report" else wire.OrderResult
                body = msgspec.json.decode(row["body"].encode(), type=kind)
                params = {} if name == "agent.report" else {"order_id": row["path"].split("/")[-2]}
                await self.client.call(name, body, **params)
            except CoordinatorError as exc:
                if exc.status >= 500 or exc.status in TRANSIENT_REFUSALS:
                    self._reschedule(row, str(exc))
                    continue
                # Any other 4xx will not change on retry (the order is gone or already
                # closed with another result): keep the reason and stop sending.
                log.warning("coordinator refused outbox entry %s: %s", row["id"], exc)
                self.state.acknowledge(row["id"], error=str(exc))
            except httpx.HTTPError as exc:
                self._reschedule(row, f"{type(exc).__name__}: {exc}")
            else:
                self.state.acknowledge(row["id"])

    def _reschedule(self, row: dict, error: str) -> None:
        attempts = row["attempts"] + 1
        self.state.retry_later(row["id"], attempts, int(backoff(attempts, self._rng)) + 1, error)

    def _wake_outbox(self) -> None:
        self._outbox_ready.set()

    async def _outbox_loop(self) -> None:
        while True:
            # A fresh event before flushing: anything queued meanwhile wakes us again.
            self._outbox_ready = trio.Event()
            await self.flush_outbox()
            due = self.state.outbox_next_due()
            delay = 60.0 if due is None else max(0.5, due - self.state.now())
            with trio.move_on_after(delay):
                await self._outbox_ready.wait()

    async def poll_once(self) -> int:
        # Only the long poll has a deadline: a deployment (config test, reload,
        # verification, perhaps a rollback) must never be cut off half-way by it.
        with trio.fail_after(self.poll_wait + 40):
            batch: wire.WorkBatch = await self.client.call("agent.work", query={"wait": self.poll_wait})
        for delivery in batch.orders:
            await self.executor.handle(delivery)
        return len(batch.orders)

    async def _poll_loop(self) -> None:
        failures = 0
        while True:
            try:
                await self.poll_once()
                failures = 0
            except (httpx.HTTPError, CoordinatorError, trio.TooSlowError) as exc:
                failures += 1
                delay = backoff(failures, self._rng)
                log.warning("poll failed (%s); retrying in %.1fs", exc, delay)
                await trio.sleep(delay)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        log.info("agent %s polling %s", self.config.agent_id, self.client.base_url)
        unrestricted = HostPolicy(self.paths.allowed_commands, self.paths.allowed_paths).unrestricted()
        if unrestricted:
            log.warning("targets may use any %s on this host: see the agent's commands.allow and paths.allow",
                        " and any ".join(unrestricted))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._outbox_loop)
                try:
                    await self.executor.resume_unfinished()
                except (httpx.HTTPError, CoordinatorError) as exc:
                    # The coordinator re-delivers unfinished orders; polling resumes them.
                    log.warning("could not resume unfinished orders yet: %s", exc)
                nursery.start_soon(self._poll_loop)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self.client.aclose()


async def run_agent(paths: AgentPaths, coordinator: str | None = None,
                    clock: Callable[[], float] = time.time) -> None:
    await Agent(paths, coordinator=coordinator, clock=clock).run()
