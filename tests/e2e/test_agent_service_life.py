"""The agent process under a service manager: SIGTERM during a deployment finishes
it or rolls it back within the stop deadline, and a retired agent exits 0 (so
``Restart=on-failure`` leaves it stopped)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.processes import BIN, AgentHost, Coordinator, Process, wait_until

pytestmark = pytest.mark.e2e

FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")


def _slow_reload(tmp_path: Path, seconds: int) -> tuple[str, Path]:
    """A reload command that marks its start and then takes ``seconds`` — the first
    time only, so a rollback's second reload is quick."""
    started = tmp_path / "reload-started"
    hook = tmp_path / "slow-reload"
    hook.write_text(f"#!/bin/sh\nif [ ! -e {started} ]; then touch {started}; sleep {seconds}; fi\nexit 0\n")
    hook.chmod(0o755)
    return json.dumps([str(hook)]), started


def _create(coordinator: Coordinator, agent: AgentHost, target: Path, *extra: str) -> str:
    return coordinator.cli("certificates", "create", "--cn", "app.example.test", "--agent", agent.agent_id,
                           "--target-dir", str(target), *extra)["id"]


def _contents(target: Path) -> dict[str, bytes]:
    return {name: (target / name).read_bytes() for name in FILES}


def _leaf_fingerprint(target: Path) -> str:
    out = subprocess.run(["openssl", "x509", "-in", str(target / "cert.pem"), "-noout", "-fingerprint", "-sha256"],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().split("=")[1].replace(":", "").lower()


def test_sigterm_during_a_deployment_lets_it_finish(fleet, tmp_path):
    coordinator, agent, processes = fleet
    process = agent.start()
    processes.append(process)
    target = tmp_path / "target"
    reload_command, started = _slow_reload(tmp_path, 3)
    certificate_id = _create(coordinator, agent, target, "--reload-command", reload_command)
    wait_until(started.exists, what="the reload to start")

    process.popen.send_signal(signal.SIGTERM)
    assert process.popen.wait(timeout=30) == 0, process.output
    assert "stopping after the order in hand" in process.output
    info = coordinator.certificate(certificate_id)
    if info["status"] != "deployed":  # the result did not fit in the last flush: the next start sends it
        processes.append(agent.start())
        info = wait_until(lambda: (i := coordinator.certificate(certificate_id))["status"] == "deployed" and i,
                          what="the result to reach the coordinator")
    assert _leaf_fingerprint(target) == info["fingerprint_sha256"]


def test_sigterm_past_the_deadline_rolls_back(fleet, tmp_path):
    coordinator, agent, processes = fleet
    process = agent.start(CERTFLEET_AGENT_STOP_DEADLINE="1")
    processes.append(process)
    target = tmp_path / "target"
    first = _create(coordinator, agent, target)
    wait_until(lambda: coordinator.certificate(first)["status"] == "deployed", what="the first deployment")
    before = _contents(target)

    reload_command, started = _slow_reload(tmp_path, 120)
    second = _create(coordinator, agent, target, "--reload-command", reload_command)
    wait_until(started.exists, what="the reload to start")
    process.popen.send_signal(signal.SIGTERM)
    assert process.popen.wait(timeout=60) == 0, process.output  # far less than the 120 s reload
    assert "did not finish within 1 s" in process.output
    assert _contents(target) == before, f"a half-deployed set was left behind:\n{process.output}"
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)

    # Restarted, the agent resumes the unfinished order from its snapshot and sees it through.
    processes.append(agent.start())
    info = wait_until(lambda: (i := coordinator.certificate(second))["status"] in ("deployed", "failed") and i,
                      what="the resumed deployment")
    assert info["status"] == "deployed", info
    assert _leaf_fingerprint(target) == info["fingerprint_sha256"]


def test_a_retired_agent_exits_zero(fleet, tmp_path):
    coordinator, agent, processes = fleet
    process = agent.start()
    processes.append(process)
    certificate_id = _create(coordinator, agent, tmp_path / "target")
    wait_until(lambda: coordinator.certificate(certificate_id)["status"] == "deployed", what="the deployment")

    retired = coordinator.cli("agents", "retire", agent.agent_id)
    assert retired["liveness"] == "retired"
    assert process.popen.wait(timeout=60) == 0, process.output
    assert "retired this agent" in process.output
    assert coordinator.cli("agents", "show", agent.agent_id)["retired_at"] is not None


def test_sighup_reloads_the_settings_and_a_bad_edit_changes_nothing(fleet, tmp_path):
    coordinator, agent, processes = fleet
    settings = tmp_path / "agent.toml"
    settings.write_text('log_level = "info"\n')
    settings.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    process = Process([str(BIN / "certfleet-agent"), "--config", str(settings), "--agent-dir", str(agent.dir),
                       "run"], env)
    processes.append(process)
    wait_until(lambda: "polling" in process.output, what="the agent to start")

    settings.write_text('log_level = "debug"\nwatch_changes = false\n')
    process.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: "settings reloaded; log level debug" in process.output, what="the reload")
    assert "settings changed that apply only after a restart: watch_changes" in process.output

    settings.write_text('log_level = 7\n')
    process.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: "configuration not reloaded" in process.output, what="the refusal")
    assert process.popen.poll() is None, "a bad edit stopped the agent"
