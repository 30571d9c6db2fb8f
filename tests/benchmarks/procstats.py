"""The machine's description, and CPU and memory of a process read from /proc.

Linux only (the benchmarks run where ``make test`` runs). CPU time includes every
thread of the process, so the coordinator's database worker threads count.
"""

from __future__ import annotations

import os
import platform
import ssl
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import cryptography

__all__ = ["CpuMeter", "ProcessSample", "live_threads_cpu_seconds", "machine_description", "percentile", "sample"]

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessSample:
    at: float
    cpu_seconds: float
    """User plus system time of all threads since the process started."""
    rss_bytes: int
    peak_rss_bytes: int


def sample(pid: int) -> ProcessSample:
    with open(f"/proc/{pid}/stat") as file:
        # The command name may hold spaces; the fields after it are fixed.
        fields = file.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    rss = peak = 0
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return ProcessSample(time.monotonic(), cpu, rss, peak)


def live_threads_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid``'s threads alive now, to the nanosecond (the scheduler's own
    accounting in /proc/PID/task/TID/schedstat), where /proc/PID/stat counts 10 ms
    clock ticks but also keeps the time of threads that have exited."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as file:
                total += int(file.read().split()[0])
        except FileNotFoundError:  # the thread exited meanwhile
            pass
    return total / 1e9


class CpuMeter:
    """CPU used by ``pid`` between ``start()`` and ``stop()``, in cores (1.0 = one core busy)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.first: ProcessSample | None = None
        self.last: ProcessSample | None = None
        self._threads_first = self._threads_last = 0.0

    def start(self) -> CpuMeter:
        self.first = sample(self.pid)
        self._threads_first = live_threads_cpu_seconds(self.pid)
        return self

    def stop(self) -> CpuMeter:
        self.last = sample(self.pid)
        self._threads_last = live_threads_cpu_seconds(self.pid)
        return self

    @property
    def fine_cpu_seconds(self) -> float:
        """:attr:`cpu_seconds` to the nanosecond when no thread's time went missing:
        a mostly idle process uses less than a clock tick a minute, which the tick
        count reads as zero. If the live threads account for two ticks less than the
        tick count, a thread exited in between, and the tick count is the answer."""
        ticks = self.cpu_seconds
        fine = self._threads_last - self._threads_first
        return fine if ticks - fine <= 2 / TICKS else ticks

    @property
    def cpu_seconds(self) -> float:
        assert self.first and self.last
        return self.last.cpu_seconds - self.first.cpu_seconds

    @property
    def cores(self) -> float:
        assert self.first and self.last
        elapsed = self.last.at - self.first.at
        return self.cpu_seconds / elapsed if elapsed > 0 else 0.0


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0…1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> int:
    with open("/proc/meminfo") as file:
        for line in file:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _postgres_version(url: str | None) -> str | None:
    if not url:
        return None
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as connection:
            return str(connection.execute("SHOW server_version").fetchone()[0])
    except Exception as exc:  # a description, not a requirement
        return f"unavailable ({type(exc).__name__})"


def machine_description(postgres_url: str | None) -> dict[str, object]:
    """What the figures depend on: cores, memory, Python, OpenSSL, kernel, load."""
    import sqlite3

    try:
        openssl_cli = subprocess.run(["openssl", "version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        openssl_cli = "not installed"
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": _memory_total(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "openssl_python": ssl.OPENSSL_VERSION,
        "openssl_cli": openssl_cli,
        "cryptography": cryptography.__version__,
        "sqlite": sqlite3.sqlite_version,
        "postgresql": _postgres_version(postgres_url),
        "load_average_at_start": _load_average(),
    }
