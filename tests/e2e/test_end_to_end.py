"""Coordinator and agent as separate processes on 127.0.0.1, on both backends."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.processes import AgentHost, Coordinator, wait_until

pytestmark = pytest.mark.e2e

FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")


def _create(coordinator: Coordinator, agent: AgentHost, target: Path, *extra: str) -> str:
    created = coordinator.cli("certificates", "create", "--cn", "app.example.test", "--san", "127.0.0.1",
                              "--agent", agent.agent_id, "--target-dir", str(target), *extra)
    return created["id"]


def _wait_final(coordinator: Coordinator, certificate_id: str) -> dict:
    return wait_until(lambda: (info := coordinator.certificate(certificate_id))["status"]
                      in ("deployed", "failed") and info, what="the certificate to be deployed or fail")


def _openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


def _public_key(kind: str, path: Path) -> str:
    args = ["x509", "-in", str(path), "-noout", "-pubkey"] if kind == "cert" else ["pkey", "-in", str(path), "-pubout"]
    return _openssl(*args).stdout


def _assert_consistent_set(target: Path) -> None:
    """The four files belong together: key matches cert, fullchain = cert + chain."""
    contents = {name: (target / name).read_bytes() for name in FILES}
    assert contents["fullchain.pem"] == contents["cert.pem"] + contents["chain.pem"]
    assert _public_key("cert", target / "cert.pem") == _public_key("key", target / "privkey.pem")


def test_issue_and_deploy_verifies_with_openssl(fleet, tmp_path):
    coordinator, agent, processes = fleet
    processes.append(agent.start())
    target = tmp_path / "target"
    info = _wait_final(coordinator, _create(coordinator, agent, target))

    assert info["status"] == "deployed", info
    verify = _openssl("verify", "-CAfile", str(coordinator.ca_path), "-untrusted", str(target / "chain.pem"),
                      str(target / "cert.pem"))
    assert verify.returncode == 0 and "cert.pem: OK" in verify.stdout, verify.stdout + verify.stderr
    _assert_consistent_set(target)
    assert (target / "privkey.pem").stat().st_mode & 0o777 == 0o600
    fingerprint = _openssl("x509", "-in", str(target / "cert.pem"), "-noout", "-fingerprint", "-sha256").stdout
    assert fingerprint.strip().split("=")[1].replace(":", "").lower() == info["fingerprint_sha256"]
    text = _openssl("x509", "-in", str(target / "cert.pem"), "-noout", "-text").stdout
    assert "DNS:app.example.test" in text and "IP Address:127.0.0.1" in text


@pytest.mark.parametrize("failpoint", ["deploy.after-stage", "deploy.after-first-rename"])
def test_sigkill_mid_deploy_resumes_to_the_complete_new_set(fleet, tmp_path, failpoint):
    coordinator, agent, processes = fleet
    target = tmp_path / "target"
    first = agent.start()
    processes.append(first)
    assert _wait_final(coordinator, _create(coordinator, agent, target))["status"] == "deployed"
    first.stop()
    old = {name: (target / name).read_bytes() for name in FILES}

    certificate_id = _create(coordinator, agent, target)
    crashing = agent.start(CERTFLEET_AGENT_FAILPOINTS=failpoint)
    processes.append(crashing)
    assert crashing.popen.wait(timeout=60) == -signal.SIGKILL
    now = {name: (target / name).read_bytes() for name in FILES}
    leftovers = [p.name for p in target.iterdir() if p.name not in FILES]
    if failpoint == "deploy.after-stage":
        assert now == old and leftovers, "the crash should leave the old set and staged temp files"
    else:
        assert now["cert.pem"] != old["cert.pem"] and now["privkey.pem"] == old["privkey.pem"], \
            "the crash should land between two renames"
    assert coordinator.certificate(certificate_id)["status"] != "deployed"

    processes.append(agent.start())
    info = _wait_final(coordinator, certificate_id)
    assert info["status"] == "deployed", info
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)
    _assert_consistent_set(target)
    assert (target / "cert.pem").read_bytes() != old["cert.pem"]
    served = _openssl("x509", "-in", str(target / "cert.pem"), "-noout", "-fingerprint", "-sha256").stdout
    assert served.strip().split("=")[1].replace(":", "").lower() == info["fingerprint_sha256"]


def test_failing_reload_restores_previous_files_and_reports_stderr(fleet, tmp_path):
    coordinator, agent, processes = fleet
    processes.append(agent.start())
    target = tmp_path / "target"
    assert _wait_final(coordinator, _create(coordinator, agent, target))["status"] == "deployed"
    before = {name: (target / name).read_bytes() for name in FILES}
    modes = {name: (target / name).stat().st_mode for name in FILES}

    hook = tmp_path / "failing-reload"
    hook.write_text("#!/bin/sh\necho 'config test failed: bad certificate' >&2\nexit 3\n")
    hook.chmod(0o755)
    failing = json.dumps([str(hook)])
    info = _wait_final(coordinator, _create(coordinator, agent, target, "--reload-command", failing))

    assert info["status"] == "failed"
    assert "config test failed: bad certificate" in info["last_error"]
    assert "exited 3" in info["last_error"] and "restored" in info["last_error"]
    assert {name: (target / name).read_bytes() for name in FILES} == before
    assert {name: (target / name).stat().st_mode for name in FILES} == modes
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)
