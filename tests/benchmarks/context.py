"""What every benchmark gets: sizes, directories, the PostgreSQL URL, and helpers to
run a coordinator for the length of a benchmark."""

from __future__ import annotations

import resource
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .fleet import Api, CoordinatorProcess
from .procstats import sample

__all__ = ["BenchContext", "Sizes", "timed_rate"]


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does. ``full`` is what ``make bench`` runs; ``quick``
    checks that everything works end to end in a couple of minutes."""

    issuance_clients: int = 40
    issuance_per_client: int = 50
    """At most 50: an agent is handed at most 50 orders per poll."""
    baseline_seconds: float = 3.0
    fleet_sizes: tuple[int, ...] = (1000, 10000)
    poll_wait: int = 25
    window_seconds: float = 15.0
    dispatch_rate: float = 5.0
    storm_size: int = 10000
    """Certificates made due at once."""
    storm_agents: int = 1000
    """The agents holding them (``storm_size / storm_agents`` each, like hosts serving
    several names). With 10,000 agents connected, one coordinator process spends most
    of its time on their idle long polls (see the polling figures), so a storm with one
    certificate per agent would measure the polling, not the renewal."""
    storm_timeout: float = 900.0
    ocsp_certificates: int = 200
    ocsp_seconds: float = 3.0
    crl_sizes: tuple[int, ...] = (1000, 10000, 100000)
    crl_revokes: int = 20
    agent_idle_seconds: float = 60.0
    agent_files: int = 1000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(issuance_clients=8, issuance_per_client=25, baseline_seconds=1.5, fleet_sizes=(100, 300),
                   poll_wait=5, window_seconds=6.0, dispatch_rate=4.0, storm_size=300, storm_agents=100,
                   storm_timeout=180.0,
                   ocsp_certificates=40, ocsp_seconds=2.0, crl_sizes=(100, 1000), crl_revokes=5,
                   agent_idle_seconds=8.0, agent_files=100)


@dataclass
class BenchContext:
    workdir: Path
    results_dir: Path
    postgres_url: str | None
    backends: tuple[str, ...]
    sizes: Sizes
    issuance_rates: dict[str, float] = field(default_factory=dict)
    """certificates/s by backend, from the issuance benchmark (the storm's baseline)."""

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    @asynccontextmanager
    async def coordinator(self, backend: str, name: str) -> AsyncIterator[tuple[CoordinatorProcess, Api]]:
        root = self.workdir / f"{name}-{backend}"
        process = await trio.to_thread.run_sync(lambda: CoordinatorProcess(root, backend, self.postgres_url))
        api: Api | None = None
        try:
            api = await Api.bootstrap(process, size=16)
            yield process, api
        finally:
            with trio.CancelScope(shield=True):
                if api is not None:
                    await api.aclose()
                await trio.to_thread.run_sync(process.stop)

    def self_cpu(self) -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def self_rss(self) -> int:
        import os

        return sample(os.getpid()).rss_bytes


async def timed_rate(fn, *, clients: int, seconds: float) -> tuple[float, list[float]]:
    """Call ``await fn(client_index)`` in a loop from ``clients`` tasks for ``seconds``;
    returns (calls per second, latencies)."""
    latencies: list[float] = []
    deadline = trio.current_time() + seconds
    started = trio.current_time()

    async def client(index: int) -> None:
        while trio.current_time() < deadline:
            begin = trio.current_time()
            await fn(index)
            latencies.append(trio.current_time() - begin)

    async with trio.open_nursery() as nursery:
        for index in range(clients):
            nursery.start_soon(client, index)
    return len(latencies) / (trio.current_time() - started), latencies
