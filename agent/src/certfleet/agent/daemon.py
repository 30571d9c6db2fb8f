"""The agent's main loop: resume, long-poll, execute, and drain the outbox."""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from certfleet.shared import wire
from certfleet.shared.api import operation
from certfleet.shared.connection import describe_failure

from .client import TIMEOUTS, TRUST_HINT, CoordinatorClient, CoordinatorError
from .config import AgentConfig, AgentPaths, load_identity
from .discovery.inventory import Delta, commit_delta
from .discovery.service import DiscoveryService
from .discovery.watcher import DriftEvent, watch
from .executor import Executor
from .keystore import KeyStore
from .policy import HostPolicy
from .secrets import Secrets
from .state import AgentState

__all__ = ["Agent", "run_agent"]

log = logging.getLogger("certfleet.agent")

POLL_WAIT = 25
MAX_BACKOFF = 300
STOP_DEADLINE = 60.0
"""Seconds a deployment in flight may take to finish after SIGTERM
(``CERTFLEET_AGENT_STOP_DEADLINE`` overrides it); past it the deployment is cancelled
and rolls back (the rollback itself is shielded). The systemd unit's TimeoutStopSec
leaves room for it."""
LAST_FLUSH = 5.0
"""Seconds spent sending the outbox before stopping (what is left goes at next start)."""


TRANSIENT_REFUSALS = frozenset({401, 408, 429})
"""Refusals that say "not now" rather than "never": a request token refused for its
time (a clock step), a timeout, the failed-authentication rate limit. A result must
not be dropped for them."""


def backoff(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter, capped: 1 s, 2 s, 4 s … 300 s."""
    return rng.uniform(0, min(MAX_BACKOFF, 2 ** min(attempt, 16)))


class Agent:
    def __init__(self, paths: AgentPaths, *, coordinator: str | None = None, poll_wait: int = POLL_WAIT,
                 clock: Callable[[], float] = time.time, stop_deadline: float = STOP_DEADLINE,
                 discovery_roots: Sequence[Path] = (), probe_ranges: Sequence[str] = (),
                 watch_changes: bool = False, proxy_targets: Sequence[Any] = ()) -> None:
        """``clock`` is the wall clock for tokens, order validity and state times;
        tests that simulate days pass one they control. ``discovery_roots`` are where
        scans look (the defaults when empty), ``probe_ranges`` the only networks a probe
        may touch; ``watch_changes`` watches the roots and the deployed files;
        ``proxy_targets`` are the only devices ``ssh`` and ``f5`` targets may reach."""
        self.paths = paths
        self.config = AgentConfig.load(paths)
        self.state = AgentState(paths.state, clock=clock)
        self.client = CoordinatorClient(
            coordinator or self.config.coordinator, ca_pem=paths.ca_bundle.read_bytes(),
            agent_id=self.config.agent_id, identity=load_identity(paths), clock=clock)
        self._outbox_ready = trio.Event()
        secrets = Secrets(paths.secrets)
        self.discovery = DiscoveryService(self.state, self.client, secrets, roots=discovery_roots,
                                          probe_ranges=probe_ranges)
        self.watch_changes = watch_changes
        self.executor = Executor(self.config, self.state, KeyStore(paths.keys), self.client, clock=clock,
                                 on_outbox=self._wake_outbox, secrets=secrets,
                                 policy=HostPolicy(paths.allowed_commands, paths.allowed_paths, proxy_targets),
                                 discovery=self.discovery)
        self.poll_wait = poll_wait
        self.stop_deadline = stop_deadline
        self.retired = False
        """Set when the coordinator answered that this agent was retired."""
        self._rng = random.Random()
        self._stopping = trio.Event()
        self._poll_scope: trio.CancelScope | None = None

    def stop(self) -> None:
        """Stop after the order in hand (SIGTERM): a waiting long poll is abandoned at
        once, a deployment in flight has :attr:`stop_deadline` seconds to finish."""
        self._stopping.set()
        if self._poll_scope is not None:
            self._poll_scope.cancel()

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
                self._reschedule(row, self._failure(exc))
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
        with trio.CancelScope() as poll:
            self._poll_scope = poll
            if self._stopping.is_set():
                poll.cancel()
            try:
                with trio.fail_after(self.poll_wait + 40):
                    batch: wire.WorkBatch = await self.client.call("agent.work", query={"wait": self.poll_wait})
            finally:
                self._poll_scope = None
        if poll.cancelled_caught:
            return 0
        handled = 0
        for delivery in batch.orders:
            if self._stopping.is_set():
                break  # orders not started are delivered again after the restart
            await self.executor.handle(delivery)
            handled += 1
        return handled

    async def _poll_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self.poll_once()
                failures = 0
            except CoordinatorError as exc:
                if exc.status == 410 and exc.slug == "agent-retired":
                    log.warning("the coordinator retired this agent: stopping (%s)", exc)
                    self.retired = True
                    self._stopping.set()
                    return
                failures = await self._back_off(failures, exc)
            except (httpx.HTTPError, trio.TooSlowError) as exc:
                failures = await self._back_off(failures, exc)

    def _failure(self, exc: Exception) -> str:
        """One line for a failed request: what failed on the way to the coordinator
        (DNS, refused, TLS verification, not TLS) rather than httpx's often empty text."""
        if isinstance(exc, httpx.TransportError | trio.TooSlowError):
            return describe_failure(self.client.base_url, exc, trust_hint=TRUST_HINT, timeouts=TIMEOUTS)
        return str(exc) or type(exc).__name__

    async def _back_off(self, failures: int, exc: Exception) -> int:
        failures += 1
        delay = backoff(failures, self._rng)
        log.warning("poll failed (%s); retrying in %.1fs", self._failure(exc), delay)
        with trio.move_on_after(delay):
            await self._stopping.wait()
        return failures

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll and execute until :meth:`stop` is called or the coordinator retires
        this agent; then send what the outbox holds (briefly) and return."""
        log.info("agent %s polling %s", self.config.agent_id, self.client.base_url)
        unrestricted = HostPolicy(self.paths.allowed_commands, self.paths.allowed_paths).unrestricted()
        if unrestricted:
            log.warning("targets may use any %s on this host: see the agent's commands.allow and paths.allow",
                        " and any ".join(unrestricted))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._outbox_loop)
                nursery.start_soon(self._cut_off_after_deadline, nursery.cancel_scope)
                if self.watch_changes:
                    await nursery.start(self._watch)
                try:
                    await self.executor.resume_unfinished()
                except (httpx.HTTPError, CoordinatorError) as exc:
                    # The coordinator re-delivers unfinished orders; polling resumes them.
                    log.warning("could not resume unfinished orders yet: %s", exc)
                task_status.started()
                await self._poll_loop()
                with trio.move_on_after(LAST_FLUSH):
                    await self.flush_outbox()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self.client.aclose()
        log.info("agent stopped%s", " (retired by the coordinator)" if self.retired else "")

    async def _watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await watch(self.discovery.roots, self._report_changes, state=self.state,
                    passwords=self.discovery.passwords(), managed=self.state.deployed_files,
                    on_drift=self._report_drift, lock=self.discovery.lock, task_status=task_status)

    async def _report_changes(self, delta: Delta) -> None:
        try:
            await self.discovery.send_delta(f"watch-{self.state.now()}", delta)
        except (httpx.HTTPError, CoordinatorError) as exc:
            log.warning("could not report changed certificates yet (%s): they are offered again", exc)
            return
        commit_delta(self.state, delta)

    async def _report_drift(self, drift: DriftEvent) -> None:
        """A managed file changed behind certfleet's back: tell the coordinator (through
        the outbox, so the event survives a restart)."""
        seen = drift.seen_sha256 or "nothing (the file is gone)"
        detail = (f"{drift.path}: certfleet deployed SHA-256 {drift.expected_sha256}, the file now holds {seen}"
                  + (f"; it holds certificate {drift.fingerprint_sha256}" if drift.fingerprint_sha256 else ""))
        log.warning("drift: %s", detail)
        report = wire.AgentReport(event="certificate-drift", reason="file-changed", detail=detail[:2048])
        self.state.enqueue(operation("agent.report").path, wire.encode(report))
        self._wake_outbox()

    async def _cut_off_after_deadline(self, everything: trio.CancelScope) -> None:
        await self._stopping.wait()
        await trio.sleep(self.stop_deadline)
        log.warning("the deployment in flight did not finish within %.0f s of the stop: cancelling it",
                    self.stop_deadline)
        everything.cancel()


async def run_agent(paths: AgentPaths, coordinator: str | None = None,
                    clock: Callable[[], float] = time.time,
                    on_reload: Callable[[], None] | None = None, **options: Any) -> bool:
    """The ``run`` command: the agent under signal control. SIGTERM and SIGINT stop it
    (see :meth:`Agent.stop`); SIGHUP calls ``on_reload`` (the allow lists and the
    secrets file are read at each use, so they need no reload). Returns whether the
    coordinator retired the agent."""
    deadline = float(os.environ.get("CERTFLEET_AGENT_STOP_DEADLINE") or STOP_DEADLINE)
    agent = Agent(paths, coordinator=coordinator, clock=clock, stop_deadline=deadline, **options)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            async def obey() -> None:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.info("SIGHUP: reloading the configuration")
                        if on_reload is not None:
                            try:
                                on_reload()
                            except Exception as exc:  # a bad edit must not stop the agent
                                log.error("configuration not reloaded: %s", exc)
                    else:
                        log.info("%s: stopping after the order in hand", signal.Signals(signum).name)
                        agent.stop()

            nursery.start_soon(obey)
            await agent.run()
            nursery.cancel_scope.cancel()
    return agent.retired
