"""Targets from the operator's and the host's side: `certfleet targets`, a certificate
deployed to a named target, `certfleet-agent deploy --dry-run` and `rollback`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.processes import BIN, AgentHost, Coordinator, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("database_url", [None])]


@pytest.fixture
def coordinator(tmp_path, database_url):
    process = Coordinator(tmp_path, database_url)
    yield process
    process.process.stop()


def _agent(agent: AgentHost, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    return subprocess.run([str(BIN / "certfleet-agent"), "--agent-dir", str(agent.dir), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_targets_from_the_cli_and_the_agent_host(coordinator, tmp_path):
    cli = coordinator.cli
    agent = AgentHost(tmp_path, coordinator)
    site = tmp_path / "site"
    counter = tmp_path / "reloads"
    reload = tmp_path / "reload"
    reload.write_text(f"#!{sys.executable}\nimport pathlib\np = pathlib.Path({str(counter)!r})\n"
                      "p.write_text(str(int(p.read_text() if p.exists() else 0) + 1))\n")
    reload.chmod(0o755)
    created = cli("targets", "create", "edge", "--agent", agent.agent_id, "--kind", "nginx",
                  "--set", f"certificate_path={site}/fullchain.pem", "--set", f"key_path={site}/privkey.pem",
                  "--set", f'test_command=["{reload}"]', "--set", f'reload_command=["{reload}"]')
    assert created["kind"] == "nginx" and created["settings"]["test_command"] == [str(reload)]
    refused = subprocess.run([str(BIN / "certfleet"), "targets", "create", "bad", "--agent", agent.agent_id,
                              "--kind", "nginx", "--set", "certificate_path=/etc/a.pem;reboot",
                              "--set", "key_path=/etc/a.key"], capture_output=True, text=True,
                             env={**os.environ, "CERTFLEET_URL": coordinator.url,
                                  "CERTFLEET_CA_BUNDLE": str(coordinator.ca_path),
                                  "CERTFLEET_API_KEY": coordinator.api_key})
    assert refused.returncode != 0 and "';'" in refused.stderr
    assert [t["name"] for t in cli("targets", "list")] == ["edge"]

    # The plan, on the host, before anything was deployed: paths and commands, no change.
    settings = tmp_path / "edge.json"
    settings.write_text(json.dumps(created["settings"]))
    plan = _agent(agent, "deploy", "--dry-run", "--target-file", str(settings))
    assert plan.returncode == 0, plan.stderr
    assert f"write {site}/fullchain.pem" in plan.stdout and f"reload: ['{reload}']" in plan.stdout
    assert not site.exists() and not counter.exists()

    process = agent.start()
    try:
        first = cli("certificates", "create", "--cn", "edge.example.test", "--agent", agent.agent_id,
                    "--target", "edge")
        wait_until(lambda: cli("certificates", "show", first["id"])["status"] == "deployed", what="first deploy")
        deployed_first = (site / "fullchain.pem").read_bytes()
        second = cli("certificates", "create", "--cn", "edge.example.test", "--agent", agent.agent_id,
                     "--target", "edge")
        wait_until(lambda: cli("certificates", "show", second["id"])["status"] == "deployed", what="second deploy")
        checked = cli("targets", "test", "edge", "--wait", "30s")
        assert checked["last_check_status"] == "passed", checked
    finally:
        process.stop()
    shown = cli("targets", "show", "edge")
    assert shown["counters"]["attempts"] == 2 and shown["certificates"] == sorted([first["id"], second["id"]])
    assert (site / "fullchain.pem").read_bytes() != deployed_first

    # Undo the second deployment by hand: the first certificate's files are back.
    reloads_before = int(counter.read_text())
    undone = _agent(agent, "rollback", created["id"])  # the target's id; a certificate id works too
    assert undone.returncode == 0, undone.stderr
    assert "previous files restored; reload after restore succeeded" in undone.stdout
    assert (site / "fullchain.pem").read_bytes() == deployed_first
    assert int(counter.read_text()) == reloads_before + 1
    missing = _agent(agent, "rollback", "crt_unknown")
    assert missing.returncode == 1 and "no deployment of certificate or target crt_unknown" in missing.stderr
    by_certificate = _agent(agent, "deploy", "--dry-run", "--certificate", first["id"])
    assert by_certificate.returncode == 0 and "key material" in by_certificate.stdout
