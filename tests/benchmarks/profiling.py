"""Where the coordinator's time goes: py-spy attached to the running process.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;… count``).
The summary gives the share of samples spent *in* each function (self time, leaf
frames) and the share spent *under* each certfleet function (inclusive time), which
together say what a missed goal is bound on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

__all__ = ["Profiler", "summarize"]

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


class Profiler:
    """``with Profiler(pid, out):`` samples ``pid`` until the block ends."""

    def __init__(self, pid: int, output: Path, *, rate: int = 25) -> None:
        # 25 samples a second: at 100, py-spy itself took a quarter of a core while
        # the coordinator served 10,000 agents, on a machine with two.
        self.pid = pid
        self.output = output
        self.rate = rate
        self.process: subprocess.Popen[str] | None = None
        self.error: str | None = None

    def __enter__(self) -> Profiler:
        executable = _py_spy()
        if executable is None:
            self.error = "py-spy is not installed (tests/benchmarks/requirements.txt)"
            return self
        self.output.parent.mkdir(parents=True, exist_ok=True)
        # --nonblocking: never pause the coordinator, so profiling does not change
        # the figures it explains (at the price of an occasional torn stack).
        self.process = subprocess.Popen(
            [executable, "record", "--pid", str(self.pid), "--format", "raw", "--output", str(self.output),
             "--rate", str(self.rate), "--nonblocking", "--function"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        self.process.send_signal(2)  # SIGINT: py-spy writes its output and exits
        try:
            _, stderr = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        if not self.output.exists():
            self.error = f"py-spy wrote nothing: {stderr.strip()[-300:]}"

    def summary(self, top: int = 12) -> list[str]:
        if self.error or not self.output.exists():
            return [f"(no profile: {self.error or 'py-spy output missing'})"]
        return summarize(self.output.read_text(), top=top)


def _label(frame: str) -> tuple[str, bool]:
    """A short ``function (package/module.py)`` and whether it is certfleet's own code."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), False
    file = match["file"]
    # py-spy names a module by its path inside the package: certfleet's own code is
    # coordinator/…, agent/… or shared/… (the namespace package's parts).
    ours = file.startswith(("coordinator/", "agent/", "shared/")) and match["function"] != "<module>"
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{match['function']} ({file})", ours


def summarize(raw: str, *, top: int = 12) -> list[str]:
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_label(f) for f in stack.split(";")]
        # The first frame is the thread ("process 123:..." / "thread (0x..)") in raw output.
        frames = [f for f in frames if not f[0].startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1][0]] += count
        for name in {name for name, ours in frames if ours}:
            under[name] += count
    if not total:
        return ["(no samples)"]
    lines = [f"{total} samples of active threads (main thread and database worker threads)", "",
             "self time (where the CPU was):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive time under certfleet functions:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in under.most_common(top)]
    return lines
