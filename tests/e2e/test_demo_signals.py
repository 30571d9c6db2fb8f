"""``certfleet demo`` stops as a foreground program should: Ctrl-C (SIGINT) or
SIGTERM ends it with status 0, no traceback and no warnings, and its agent process
stops with it. A busy port is one line, as for ``serve``."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.e2e.processes import BIN, Process, wait_until

pytestmark = pytest.mark.e2e


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    env["CERTFLEET_PKI_LISTEN"] = "127.0.0.1:0"
    return env


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_stops_the_demo_and_its_agent_cleanly(tmp_path, stop_signal):
    data_dir = tmp_path / "demo-data"
    demo = Process([str(BIN / "certfleet"), "demo", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)], _env())
    try:
        wait_until(lambda: "press Ctrl-C to stop" in demo.output or demo.popen.poll() is not None,
                   timeout=120, what="the demo to deploy")
        assert demo.popen.poll() is None, demo.output
        agents = _children(demo.popen.pid)
        assert len(agents) == 1, agents
        before = len(demo.lines)

        demo.popen.send_signal(stop_signal)
        assert demo.popen.wait(timeout=60) == 0, demo.output
    finally:
        demo.stop()
    shutdown = "\n".join(demo.lines[before:])
    assert "Traceback" not in shutdown, shutdown
    assert not any(level in shutdown for level in (" WARNING ", " ERROR ", " CRITICAL ")), shutdown
    assert not _alive(agents[0]), f"the agent {agents[0]} outlived the demo"
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_a_busy_port_stops_the_demo_in_one_line(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        listen = f"127.0.0.1:{held.getsockname()[1]}"
        completed = subprocess.run([str(BIN / "certfleet"), "demo", "--once", "--listen", listen,
                                    "--data-dir", str(tmp_path / "demo-data")],
                                   env=_env(), capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0
    assert completed.stderr.strip() == f"certfleet: cannot start: {listen} is in use", completed.stderr
