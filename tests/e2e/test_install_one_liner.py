"""The agent one-liner against a real coordinator: fetch ``/install/agent.sh`` with
``curl --cacert``, run it with ``sh -s --`` under a prefix, and use what it installed.

pip inside the new virtualenv gets the agent's two wheels from the coordinator and
their dependencies from the package index this machine's pip is set up with.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.processes import Coordinator, Process, wait_until

pytestmark = pytest.mark.e2e

INSTALL_TIMEOUT = 900


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory):
    running = Coordinator(tmp_path_factory.mktemp("one-liner"), None)
    try:
        yield running
    finally:
        running.process.stop()


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}


def _curl(coordinator: Coordinator, path: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--cacert", str(coordinator.ca_path), *extra, coordinator.url + path],
                          capture_output=True, timeout=120)


def _fetch_script(coordinator: Coordinator) -> str:
    fetched = subprocess.run(["curl", "-fsSL", "--cacert", str(coordinator.ca_path),
                              coordinator.url + "/install/agent.sh"], capture_output=True, text=True, timeout=120)
    assert fetched.returncode == 0, fetched.stderr
    return fetched.stdout


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    """What ``curl … | sudo sh -s -- ARGS`` does."""
    return subprocess.run(["sh", "-s", "--", *args], input=script, capture_output=True, text=True,
                          env=_environment(), timeout=INSTALL_TIMEOUT)


def _token(coordinator: Coordinator) -> str:
    return coordinator.cli("agents", "enroll-token", "--uses", "1")["token"]


class Installed:
    """Where the installer puts things under ``--prefix``."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.home = prefix / "opt" / "certfleet-agent"
        self.command = prefix / "usr" / "local" / "bin" / "certfleet-agent"
        self.config = prefix / "etc" / "certfleet" / "agent.toml"
        self.state = prefix / "var" / "lib" / "certfleet-agent"
        self.unit = prefix / "etc" / "systemd" / "system" / "certfleet-agent.service"

    def release(self) -> Path:
        return (self.home / "current").resolve()

    def agent_id(self) -> str:
        return json.loads((self.state / "agent.json").read_text())["agent_id"]

    def config_check(self) -> dict:
        checked = subprocess.run([str(self.command), "--config", str(self.config), "config", "check", "--json"],
                                 capture_output=True, text=True, env=_environment(), timeout=120)
        assert checked.returncode == 0, checked.stderr
        return json.loads(checked.stdout)


def test_one_liner_installs_enrolls_deploys_upgrades_and_uninstalls(coordinator, tmp_path):
    script = _fetch_script(coordinator)
    installed = Installed(tmp_path / "host")

    first = _run(script, "--token", _token(coordinator), "--prefix", str(installed.prefix), "--no-service",
                 "--label", "site=lab-1", "--label", "role=web")

    assert first.returncode == 0, first.stdout + first.stderr
    assert "The coordinator's CA matches the pinned fingerprint" in first.stdout
    release = installed.release()
    assert release.parent == installed.home / "releases"
    assert installed.command.resolve() == release / "bin" / "certfleet-agent"
    assert installed.config.stat().st_mode & 0o777 == 0o600
    assert installed.state.stat().st_mode & 0o777 == 0o700
    assert not installed.unit.exists()  # --no-service
    agent_id = installed.agent_id()
    agents = coordinator.cli("agents", "list")
    assert agent_id in [agent["id"] for agent in agents]
    assert coordinator.cli("agents", "show", agent_id)["labels"] == {"site": "lab-1", "role": "web"}
    checked = installed.config_check()
    assert checked["enrollment"]["agent_id"] == agent_id and checked["enrollment"]["ca_matches_pin"] is True
    assert checked["settings"]["state_dir"] == {"value": str(installed.state), "source": "file"}

    # The installed agent, run as the service would run it, deploys a certificate.
    agent = Process([str(installed.command), "--config", str(installed.config), "run"], _environment())
    target = tmp_path / "deployed"
    try:
        created = coordinator.cli("certificates", "create", "--cn", "installed.example.test", "--agent", agent_id,
                                  "--target-dir", str(target))
        info = wait_until(lambda: (c := coordinator.certificate(created["id"]))["status"] in ("deployed", "failed")
                          and c, timeout=180, what="the installed agent to deploy")
    finally:
        agent.stop()
    assert info["status"] == "deployed", agent.output
    assert all((target / name).is_file() for name in ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"))

    # Again, without a token and with the service: an upgrade that keeps the identity.
    second = _run(script, "--prefix", str(installed.prefix))

    assert second.returncode == 0, second.stdout + second.stderr
    assert "Already enrolled" in second.stdout and "Enrolling" not in second.stdout
    assert installed.agent_id() == agent_id
    assert len(coordinator.cli("agents", "list")) == len(agents)
    assert installed.release() != release and not release.exists()
    unit = installed.unit.read_text()
    assert f"ExecStart={installed.command} --config {installed.config} run" in unit
    if shutil.which("systemd-analyze"):
        verified = subprocess.run(["systemd-analyze", "verify", str(installed.unit)], capture_output=True,
                                  text=True, timeout=120)
        assert verified.returncode == 0 and installed.unit.name not in verified.stderr, verified.stderr

    kept = _run(script, "--prefix", str(installed.prefix), "--uninstall", "--keep-state")

    assert kept.returncode == 0, kept.stderr
    for removed in (installed.home, installed.command, installed.config, installed.unit):
        assert not removed.exists() and not removed.is_symlink(), removed
    assert (installed.state / "agent.json").is_file() and (installed.state / "identity.key").is_file()

    purged = _run(script, "--prefix", str(installed.prefix), "--uninstall")

    assert purged.returncode == 0, purged.stderr
    assert not installed.state.exists()
    assert f"Agent {agent_id} is still registered" in purged.stdout


def test_a_script_whose_fingerprint_does_not_match_the_coordinator_refuses(coordinator, tmp_path):
    script = _fetch_script(coordinator)
    from tests.support import BOOTSTRAP_TOKEN  # any fixed bytes will do for a wrong fingerprint

    wrong = hashlib.sha256(BOOTSTRAP_TOKEN.encode()).hexdigest()
    tampered = script.replace(coordinator.ca_fingerprint().replace(":", "").lower(), wrong)
    assert tampered != script
    prefix = tmp_path / "host"

    refused = _run(tampered, "--token", _token(coordinator), "--prefix", str(prefix), "--no-service")

    assert refused.returncode != 0
    assert "does not match the fingerprint" in refused.stderr
    assert not prefix.exists()


def test_a_failed_enrollment_leaves_the_host_as_it_was(coordinator, tmp_path):
    prefix = tmp_path / "host"
    agents = len(coordinator.cli("agents", "list"))

    failed = _run(_fetch_script(coordinator), "--token", "cfe_not-a-real-token", "--prefix", str(prefix),
                  "--no-service")

    assert failed.returncode != 0
    assert "the host is as it was" in failed.stderr
    assert not prefix.exists()
    assert len(coordinator.cli("agents", "list")) == agents


@pytest.mark.parametrize("path", ["/install/wheels/../../master.key", "/install/wheels/..%2F..%2Fmaster.key",
                                  "/install/wheels/..%2fcoordinator.db"])
def test_wheel_names_that_climb_out_are_not_found(coordinator, path):
    answer = _curl(coordinator, path, "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}")
    assert answer.stdout.decode() == "404"
