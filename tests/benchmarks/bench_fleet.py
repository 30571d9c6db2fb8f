"""Fleet polling and the renewal storm, on one coordinator with one simulated fleet.

Every simulated agent holds one TLS 1.3 connection and long-polls GET
/api/v1/agent/work?wait=W with a fresh signed request token, like
``certfleet-agent run``; first waits are spread over [1, W] so the fleet does not
poll in lockstep. An order it receives is verified and run to the end (new key,
CSR, result), as the real agent does before it polls again.

Measured at each fleet size, in a window after the fleet has settled:

* long-poll overrun: how late an empty long poll comes back after its ``wait``;
* poll latency: ten probe agents poll with ``wait=0`` twice a second (token check,
  database round trip, empty answer);
* dispatch latency: an operator creates certificates for random polling agents at a
  steady rate; the time from sending ``certificates.create`` to the agent holding
  the signed order (so it includes the create call itself, whose latency is given
  too);
* coordinator CPU and RSS per connected agent, against the idle coordinator.

The baseline for latencies is the same probe with only the probes and twenty
pollers connected, in the same run. The storm then makes deployed
certificates due at once and times the fleet through renewal.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

import trio

from certfleet.shared import wire

from .context import BenchContext
from .fleet import Api, ApiFailed, SimAgent, create_certificates, enroll_agents, gather
from .lighthttp import ConnectionLost
from .procstats import CpuMeter, percentile, sample
from .profiling import Profiler
from .report import Figure, Section

__all__ = ["run"]

PROBES = 10
IDLE_POLLERS = 20
PROBE_INTERVAL = 0.5
CONNECT_CONCURRENCY = 64
HELD_P99_OVERRUN = 5.0
"""A fleet size is held when no request fails and the p99 long-poll overrun stays
under this many seconds."""
CREATE_GRACE = 20.0
"""Seconds a dispatch probe's ``certificates.create`` may run past the window."""


@dataclass
class FleetStats:
    polls: list[tuple[float, float]] = field(default_factory=list)
    """(finished at, overrun) of empty long polls."""
    probes: list[tuple[float, float]] = field(default_factory=list)
    """(finished at, latency) of ``wait=0`` probe polls."""
    delivered: dict[str, float] = field(default_factory=dict)
    """certificate id → when its order first reached the agent."""
    errors: list[tuple[float, str]] = field(default_factory=list)
    executed: int = 0

    def error(self, exc: BaseException) -> None:
        self.errors.append((trio.current_time(), f"{type(exc).__name__}: {str(exc)[:120]}"))

    def window(self, start: float, end: float) -> tuple[list[float], list[float], list[str]]:
        return ([o for t, o in self.polls if start <= t <= end], [lat for t, lat in self.probes if start <= t <= end],
                [e for t, e in self.errors if start <= t <= end])


class Fleet:
    def __init__(self, stats: FleetStats, wait: int, nursery: trio.Nursery) -> None:
        self.stats = stats
        self.wait = wait
        self.nursery = nursery
        self.pollers: list[SimAgent] = []

    async def _handle(self, agent: SimAgent, deliveries: list[wire.Delivery]) -> None:
        for delivery in deliveries:
            order_id, certificate_id, csr = agent.prepare(delivery)
            self.stats.delivered.setdefault(certificate_id, trio.current_time())
            if await agent.finish(order_id, csr):
                self.stats.executed += 1

    async def _long_poll(self, agent: SimAgent, first_wait: int) -> None:
        # A fraction of a second first, so that first waits in whole seconds do not
        # bring the fleet back in a few synchronized bursts (real agents start at
        # random times); short enough that the connection does not idle out.
        await trio.sleep(random.random())
        wait = first_wait
        while True:
            started = trio.current_time()
            try:
                with trio.fail_after(wait + 120):
                    deliveries = await agent.poll(wait)
                finished = trio.current_time()
                if deliveries:
                    await self._handle(agent, deliveries)
                else:
                    self.stats.polls.append((finished, finished - started - wait))
            except (ConnectionLost, ApiFailed, OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                self.stats.error(exc)
                await trio.sleep(random.uniform(0.5, 2.0))
            wait = self.wait

    async def _probe(self, agent: SimAgent) -> None:
        while True:
            started = trio.current_time()
            try:
                deliveries = await agent.poll(0)
                self.stats.probes.append((trio.current_time(), trio.current_time() - started))
                if deliveries:
                    await self._handle(agent, deliveries)
            except (ConnectionLost, ApiFailed, OSError, trio.BrokenResourceError) as exc:
                self.stats.error(exc)
            await trio.sleep(PROBE_INTERVAL)

    async def connect(self, agents: list[SimAgent], *, probes: bool = False) -> float:
        """Open each agent's connection (TLS handshake) and start its loop at once, as
        an agent does (the server closes a connection idle for 5 s); returns handshakes
        per second."""
        started = trio.current_time()

        async def connect(agent: SimAgent) -> None:
            try:
                await agent.connection.connect()
            except ConnectionLost as exc:  # the agent's first poll connects again
                self.stats.error(exc)
            if probes:
                self.nursery.start_soon(self._probe, agent)
            else:
                self.pollers.append(agent)
                self.nursery.start_soon(self._long_poll, agent, random.randint(1, self.wait))

        await gather(agents, connect, concurrency=CONNECT_CONCURRENCY)
        return len(agents) / max(trio.current_time() - started, 1e-9)


async def _dispatch_probe(api: Api, fleet: Fleet, stats: FleetStats, *, rate: float, seconds: float,
                          label: str) -> tuple[list[float], list[float], int]:
    """Create certificates for random polling agents at ``rate`` for ``seconds`` (fewer
    when the coordinator is slower than that); returns (dispatch latencies,
    create-call latencies, undelivered count)."""
    deadline = trio.current_time() + seconds
    targets = random.sample(fleet.pollers, min(max(1, int(rate * seconds)), len(fleet.pollers)))
    sent: dict[str, float] = {}
    create_latencies: list[float] = []
    for index, agent in enumerate(targets):
        begin = trio.current_time()
        if begin >= deadline:
            break
        name = f"dispatch-{label}-{index}.bench.test"
        info = None
        with trio.move_on_after(max(0.0, deadline - begin) + CREATE_GRACE):
            try:
                info = await api.call("certificates.create", wire.CertificateCreate(
                    common_name=name, agent_id=agent.id, target=wire.FileTarget(directory=f"/srv/bench/{name}"),
                    tags=["dispatch-probe"]))
            except (ApiFailed, ConnectionLost) as exc:
                stats.error(exc)
        if info is None:
            continue
        sent[info.id] = begin
        create_latencies.append(trio.current_time() - begin)
        await trio.sleep(max(0.0, begin + 1 / rate - trio.current_time()))
    with trio.move_on_after(15):
        while any(cid not in stats.delivered for cid in sent):
            await trio.sleep(0.1)
    latencies = [stats.delivered[cid] - t for cid, t in sent.items() if cid in stats.delivered]
    return latencies, create_latencies, len(sent) - len(latencies)


async def run(ctx: BenchContext, backend: str) -> Section:
    sizes = ctx.sizes
    section = Section(f"fleet-{backend}", f"Fleet polling and renewal storm ({backend})")
    largest = max(sizes.fleet_sizes)
    async with ctx.coordinator(backend, "fleet") as (coordinator, api):
        ctx.log(f"fleet/{backend}: enrolling {largest + PROBES} agents")
        started = trio.current_time()
        agents = await enroll_agents(coordinator, api, largest + PROBES, concurrency=32)
        enroll_rate = len(agents) / (trio.current_time() - started)
        section.notes.append(f"Enrolled {len(agents):,} agents through the API at {enroll_rate:.0f}/s "
                             "(one N-use enrollment token, one POST /api/v1/agent/enroll each).")
        probes, pollers = agents[:PROBES], agents[PROBES:]
        pid = coordinator.pid
        stats = FleetStats()

        async with trio.open_nursery() as nursery:
            fleet = Fleet(stats, sizes.poll_wait, nursery)
            # The idle coordinator: nothing connected.
            await trio.sleep(2)
            idle = CpuMeter(pid).start()
            await trio.sleep(min(5.0, sizes.window_seconds))
            idle.stop()
            idle_rss = sample(pid).rss_bytes

            # Baseline: probes and a few pollers.
            await fleet.connect(probes, probes=True)
            await fleet.connect(pollers[:IDLE_POLLERS])
            await trio.sleep(2)
            window_start = trio.current_time()
            base_dispatch, base_create, _ = await _dispatch_probe(
                api, fleet, stats, rate=sizes.dispatch_rate, seconds=min(6.0, sizes.window_seconds), label="base")
            _, base_probe, _ = stats.window(window_start, trio.current_time())

            connected = IDLE_POLLERS
            for size in sizes.fleet_sizes:
                ctx.log(f"fleet/{backend}: connecting {size:,} polling agents")
                handshake_rate = await fleet.connect(pollers[connected:size])
                connected = size
                await trio.sleep(min(5.0, sizes.poll_wait / 2))
                ctx.log(f"fleet/{backend}: measuring {size:,} agents for {sizes.window_seconds:.0f} s")
                meter = CpuMeter(pid).start()
                client_cpu = ctx.self_cpu()
                window_start = trio.current_time()
                profile_path = ctx.results_dir / "profiles" / f"fleet-{size}-{backend}.raw"
                with Profiler(pid, profile_path) as profiler:
                    dispatch, create, lost = await _dispatch_probe(
                        api, fleet, stats, rate=sizes.dispatch_rate, seconds=sizes.window_seconds, label=str(size))
                window_end = trio.current_time()
                meter.stop()
                client_cores = (ctx.self_cpu() - client_cpu) / (window_end - window_start)
                rss = sample(pid).rss_bytes
                overruns, probe, errors = stats.window(window_start, window_end)
                p99_overrun = percentile(overruns, 0.99)
                # Held needs a dispatch measured: a create call that never returned counts against.
                held = not errors and not lost and bool(dispatch) and p99_overrun < HELD_P99_OVERRUN
                label = f"{size:,} agents"
                section.add(
                    Figure("polling", backend, f"{label}: poll latency p50 (wait=0 probe)",
                           percentile(probe, 0.5) * 1000, "ms", "same probe, idle fleet",
                           percentile(base_probe, 0.5) * 1000, False),
                    Figure("polling", backend, f"{label}: poll latency p99 (wait=0 probe)",
                           percentile(probe, 0.99) * 1000, "ms", "same probe, idle fleet",
                           percentile(base_probe, 0.99) * 1000, False),
                    Figure("polling", backend, f"{label}: long-poll overrun p50", percentile(overruns, 0.5) * 1000,
                           "ms", "poll latency p50 (wait=0), idle fleet", percentile(base_probe, 0.5) * 1000, False),
                    Figure("polling", backend, f"{label}: long-poll overrun p99", p99_overrun * 1000, "ms",
                           "poll latency p99 (wait=0), idle fleet", percentile(base_probe, 0.99) * 1000, False),
                    Figure("polling", backend, f"{label}: dispatch latency p50", percentile(dispatch, 0.5) * 1000,
                           "ms", "same, idle fleet", percentile(base_dispatch, 0.5) * 1000, False),
                    Figure("polling", backend, f"{label}: dispatch latency p99", percentile(dispatch, 0.99) * 1000,
                           "ms", "same, idle fleet", percentile(base_dispatch, 0.99) * 1000, False),
                    Figure("polling", backend, f"{label}: coordinator CPU per agent",
                           (meter.cores - idle.cores) / size * 1000, "millicores",
                           "bench client CPU per simulated agent", client_cores / size * 1000, False),
                    Figure("polling", backend, f"{label}: coordinator RSS ({(rss - idle_rss) / size / 1024:.0f} KiB"
                           " per agent)", rss / 2**20, "MiB", "idle coordinator RSS", idle_rss / 2**20, False),
                )
                section.notes.append(
                    f"{label}: {'held' if held else 'NOT held'} — {len(overruns):,} empty long polls and "
                    f"{len(probe)} probe polls in the {window_end - window_start:.0f} s window, {len(errors)} failed "
                    f"requests{' (' + Counter(errors).most_common(1)[0][0] + ')' if errors else ''}, {lost} of "
                    f"{len(dispatch) + lost} dispatched orders undelivered; coordinator at {meter.cores:.2f} cores "
                    f"(idle: {idle.cores:.2f}), RSS {rss / 2**20:.0f} MiB (idle: {idle_rss / 2**20:.0f} MiB); "
                    f"TLS handshakes at {handshake_rate:.0f}/s while connecting; "
                    + (f"create call p50 {percentile(create, 0.5) * 1000:.0f} ms" if create else
                       f"no certificates.create call came back within the window + {CREATE_GRACE:.0f} s")
                    + f" (idle fleet: {percentile(base_create, 0.5) * 1000:.0f} ms)."
                )
                if size == largest:
                    section.profile = [f"(during the {label} polling window)", *profiler.summary()]

            nursery.cancel_scope.cancel()
        for agent in agents:
            await agent.connection.aclose()
        await _storm(ctx, backend, section, coordinator, api, pollers[:sizes.storm_agents])
    return section


async def _storm(ctx: BenchContext, backend: str, section: Section, coordinator, api: Api,
                 agents: list[SimAgent]) -> None:
    """``storm_size`` certificates spread over the agents: created while the agents are
    away, deployed when they connect (the first wave), then all made due at once."""
    per_agent = max(1, ctx.sizes.storm_size // len(agents))
    size = per_agent * len(agents)
    ctx.log(f"fleet/{backend}: creating {size:,} certificates for the storm ({per_agent} on each of "
            f"{len(agents):,} agents)")
    started = trio.current_time()
    ids = await create_certificates(api, agents, per_agent=per_agent, prefix="storm", tags=["storm"])
    created = trio.current_time() - started
    async with trio.open_nursery() as nursery:
        stats = FleetStats()
        fleet = Fleet(stats, ctx.sizes.poll_wait, nursery)
        ctx.log(f"fleet/{backend}: {len(agents):,} agents connect and deploy their first certificates")
        started = trio.current_time()
        await fleet.connect(agents)
        await _run_storm(ctx, backend, section, coordinator, stats, ids, started, created, len(agents))
        nursery.cancel_scope.cancel()
    for agent in agents:
        await agent.connection.aclose()


async def _run_storm(ctx: BenchContext, backend: str, section: Section, coordinator, stats: FleetStats,
                     ids: list[str], started: float, created: float, agents: int) -> None:
    size = len(ids)

    def count(sql: str, params: tuple = ()) -> int:
        with coordinator.database() as db:
            return int(db.scalar(sql, params))

    while trio.current_time() - started < ctx.sizes.storm_timeout:
        deployed = await trio.to_thread.run_sync(count, "SELECT COUNT(*) AS n FROM certificates WHERE status = 'deployed'"
                                                 " AND tags LIKE '%\"storm\"%'")
        if deployed >= len(ids):
            break
        await trio.sleep(1)
    first_wave = trio.current_time() - started

    ctx.log(f"fleet/{backend}: storm: {size:,} certificates due now")
    pid = coordinator.pid
    due_at = int(time.time())
    before = await trio.to_thread.run_sync(lambda: _per_certificate(coordinator))

    def make_due() -> None:
        # The renewal time is moved, not the clock: the coordinator's scheduler then
        # finds every certificate due at once, as it would on the day they all come due.
        with coordinator.database() as db:
            db.execute("UPDATE certificates SET renew_at = ? WHERE tags LIKE '%\"storm\"%'", (due_at,))
            db.commit()

    meter = CpuMeter(pid).start()
    peak_rss = sample(pid).rss_bytes
    with Profiler(pid, ctx.results_dir / "profiles" / f"storm-{backend}.raw") as profiler:
        started = trio.current_time()
        await trio.to_thread.run_sync(make_due)
        issued_at = deployed_at = None
        progress: list[str] = []
        next_report = 15.0
        while trio.current_time() - started < ctx.sizes.storm_timeout:
            await trio.sleep(1)
            jobs = await trio.to_thread.run_sync(lambda: _renewal_progress(coordinator))
            peak_rss = max(peak_rss, sample(pid).rss_bytes)
            elapsed = trio.current_time() - started
            if elapsed >= next_report:
                next_report += 15.0
                progress.append(f"{elapsed:.0f} s: {jobs['started']} started, {jobs['issued']} issued, "
                                f"{jobs['done']} deployed")
            if issued_at is None and jobs["issued"] >= size:
                issued_at = elapsed
            if jobs["done"] >= size:
                deployed_at = elapsed
                break
    meter.stop()
    jobs = await trio.to_thread.run_sync(lambda: _renewal_progress(coordinator))
    duplicates = await trio.to_thread.run_sync(lambda: _duplicates(coordinator, before))
    baseline = size / ctx.issuance_rates[backend] if backend in ctx.issuance_rates else float("nan")
    errors = Counter(e.split(":")[0] for _, e in stats.errors)
    section.add(
        Figure("storm", backend, f"{size:,} due at once: all issued", issued_at or float("nan"), "s",
               f"{size:,} ÷ issuance benchmark rate", baseline, False),
        Figure("storm", backend, f"{size:,} due at once: all reported deployed", deployed_at or float("nan"), "s",
               f"{size:,} ÷ issuance benchmark rate", baseline, False),
        Figure("storm", backend, f"first issuance of the same {size:,} (agents connect, orders waiting)", first_wave, "s",
               f"{size:,} ÷ issuance benchmark rate", baseline, False),
        Figure("storm", backend, "duplicate renewal jobs, orders or versions (DB check)",
               float(sum(duplicates.values())), "rows", "allowed", 0.0, False),
    )
    if deployed_at is None:
        section.notes.append(f"Storm NOT finished within {ctx.sizes.storm_timeout:.0f} s: {jobs}.")
    section.notes += [
        f"Storm: {size:,} certificates, {size // agents} on each of {agents:,} agents, were created through the API "
        f"in {created:.0f} s while the agents were away; the agents then connected and deployed them in "
        f"{first_wave:.0f} s (the first wave); "
        "then every certificate had its renewal time set to now in the database; "
        "the coordinator's own scheduler then started the renewals, woke the agents' long polls, and the agents "
        "answered with new keys and real CSRs and reported the deployment.",
        f"Storm: coordinator at {meter.cores:.2f} cores on average, peak RSS {peak_rss / 2**20:.0f} MiB; "
        f"the scheduler starts every due renewal in one maintenance round, in transactions of 200, waking each "
        f"batch's agents as it commits. Progress: "
        + "; ".join(progress[:12]) + ".",
        f"Storm duplicates (must all be 0): {duplicates}. Failed agent requests during the storm: "
        f"{dict(errors) or 'none'}.",
    ]
    section.profile += ["", "(during the renewal storm)", *profiler.summary()]


def _renewal_progress(coordinator) -> dict[str, int]:
    with coordinator.database() as db:
        rows = db.all("SELECT j.state, COUNT(*) AS n FROM jobs j JOIN certificates c ON c.id = j.certificate_id"
                      " WHERE j.kind = 'renewal' AND c.tags LIKE '%\"storm\"%' GROUP BY j.state")
    by_state = {r["state"]: int(r["n"]) for r in rows}
    return {"started": sum(by_state.values()), "issued": by_state.get("deploying", 0) + by_state.get("done", 0),
            "done": by_state.get("done", 0), "failed": by_state.get("failed", 0)}


def _per_certificate(coordinator) -> dict[str, Counter]:
    """Versions and work orders per storm certificate, counted in the database."""
    storm = "SELECT id FROM certificates WHERE tags LIKE '%\"storm\"%'"
    with coordinator.database() as db:
        return {table: Counter({r["certificate_id"]: int(r["n"]) for r in db.all(
            f"SELECT certificate_id, COUNT(*) AS n FROM {table} WHERE certificate_id IN ({storm})"
            " GROUP BY certificate_id")}) for table in ("certificate_versions", "work_orders")}


def _duplicates(coordinator, before: dict[str, Counter]) -> dict[str, int]:
    """Certificates with more than one renewal job, or more than one new issue order or
    version since the storm began (counted against ``before``)."""
    storm = "SELECT id FROM certificates WHERE tags LIKE '%\"storm\"%'"
    with coordinator.database() as db:
        jobs = int(db.scalar(
            f"SELECT COUNT(*) AS n FROM (SELECT certificate_id FROM jobs WHERE kind = 'renewal' AND certificate_id"
            f" IN ({storm}) GROUP BY certificate_id HAVING COUNT(*) > 1) d"))
    after = _per_certificate(coordinator)
    more = {table: sum(1 for cid, n in after[table].items() if n - before[table][cid] > 1) for table in after}
    return {"renewal jobs": jobs, "issue orders": more["work_orders"], "certificate versions": more["certificate_versions"]}
