"""The operator CLI against a coordinator process: hierarchy, profiles, keys,
grants, approvals, revocation and the audit trail."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.e2e.processes import BIN, AgentHost, Coordinator, wait_until
from tests.pki_support import openssl_root, openssl_sign_ca

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("database_url", [None])]


@pytest.fixture
def coordinator(tmp_path, database_url):
    process = Coordinator(tmp_path, database_url)
    yield process
    process.process.stop()


def test_pki_and_access_administration_through_the_cli(coordinator, tmp_path):
    cli = coordinator.cli
    root = cli("issuers", "create-root", "corp-root", "--path-length", "1")
    middle = cli("issuers", "create-intermediate", "corp-web", "--parent", root["id"], "--permit-dns", "corp.test")
    assert middle["status"] == "active" and middle["parent_id"] == root["id"]
    external = cli("issuers", "create-external", "enterprise")
    ext_root, ext_key = openssl_root(tmp_path / "ext")
    signed = tmp_path / "signed.pem"
    signed.write_text(openssl_sign_ca(tmp_path / "ext", external["csr_pem"], ext_root, ext_key))
    assert cli("issuers", "import", external["id"], "--certificate", str(signed), "--chain", str(ext_root))[
        "status"] == "active"

    profile = cli("profiles", "create", "web", "--issuer", "corp-web", "--key-type", "ec-p256",
                  "--max-lifetime", "30d", "--name-pattern", "*.corp.test", "--requires-approval")
    assert profile["policy"]["requires_approval"] and profile["policy"]["name_patterns"] == ["*.corp.test"]

    # Two people, each with a key the admin minted: the admin's own requests would need
    # a key the admin did not mint to approve them.
    alice = cli("keys", "create", "alice", "--user", "alice", "--role", "operator")
    bob = cli("keys", "create", "bob", "--user", "bob", "--role", "operator")
    assert bob["token"].startswith("cfk_")
    agent = AgentHost(tmp_path, coordinator)
    created = cli("certificates", "create", "--cn", "app.corp.test", "--agent", agent.agent_id, "--profile", "web",
                  "--lifetime", "7d", "--target-dir", str(tmp_path / "target"), "--tag", "edge",
                  api_key=alice["token"])
    assert created["status"] == "awaiting-approval"
    pending = cli("approvals", "list", "--status", "pending")
    assert [a["subject_id"] for a in pending] == [created["id"]]
    approved = cli("approvals", "approve", pending[0]["id"], "--note", "looks right", api_key=bob["token"])
    assert approved["status"] == "approved"

    process = agent.start()
    try:
        wait_until(lambda: cli("certificates", "show", created["id"])["status"] == "deployed",
                   what="the approved certificate to be deployed")
    finally:
        process.stop()
    revoked = cli("certificates", "revoke-bulk", "--tag", "edge", "--reason", "key-compromise")
    assert [(r["certificate_id"], r["status"]) for r in revoked] == [(created["id"], "revoked")]
    jobs = cli("jobs", "list", "--certificate", created["id"])
    assert [(j["kind"], j["state"]) for j in jobs] == [("issue", "done")]
    assert cli("policies", "create", "tight", "--lead", "2d", "--reuse-key")["lead_seconds"] == 2 * 86400
    channel = cli("channels", "create", "hooks", "--kind", "webhook", "--setting", "url=http://127.0.0.1:9/x",
                  "--secret", "secret=0123456789abcdef0123")
    assert channel["secret_names"] == ["secret"]
    assert cli("channels", "test", channel["id"])["status"] == "pending"  # nothing listens on port 9
    mail = cli("channels", "create", "mail", "--kind", "email", "--setting", "host=127.0.0.1",
               "--setting", "port=2525", "--setting", "starttls=false", "--setting", "from=certfleet@example.test",
               "--setting", 'to=["ops@example.test"]')
    assert mail["settings"]["port"] == 2525 and mail["settings"]["starttls"] is False
    status = cli("status")
    assert status["certificates"] == {"revoked": 1} and status["agents"] == {"online": 1}
    events = cli("audit", "list", "--action", "approvals.approve")
    assert events[0]["actor_id"] == bob["id"]

    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    verified = subprocess.run([str(BIN / "certfleet"), "audit", "verify", "--data-dir", str(coordinator.data_dir)],
                              env=env, capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and "audit chain OK" in verified.stdout, verified.stdout + verified.stderr


def test_certificates_created_in_bulk_from_a_file(coordinator, tmp_path):
    cli = coordinator.cli
    agent = AgentHost(tmp_path, coordinator)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps([
        {"common_name": f"web{n}.example.test", "agent_id": agent.agent_id, "tags": ["imported"],
         "target": {"kind": "file", "directory": str(tmp_path / f"web{n}")}} for n in range(3)]))
    created = cli("certificates", "create-bulk", str(inventory))
    assert [(c["names"], c["status"]) for c in created] == [
        ([f"web{n}.example.test"], "pending") for n in range(3)]

    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    env.update(CERTFLEET_URL=coordinator.url, CERTFLEET_CA_BUNDLE=str(coordinator.ca_path),
               CERTFLEET_API_KEY=coordinator.api_key)
    refusals = {
        "no target": ([{"common_name": "x.example.test", "agent_id": agent.agent_id}], "certificates[0]"),
        "unknown agent": ({"certificates": [
            {"common_name": "y.example.test", "agent_id": agent.agent_id,
             "target": {"kind": "file", "directory": str(tmp_path / "y")}},
            {"common_name": "z.example.test", "agent_id": "agt_nobody",
             "target": {"kind": "file", "directory": str(tmp_path / "z")}}]}, "certificates[1]: no agent"),
        "not json": ("[{", "inventory.json"),
    }
    for label, (content, expected) in refusals.items():
        inventory.write_text(content if isinstance(content, str) else json.dumps(content))
        completed = subprocess.run([str(BIN / "certfleet"), "certificates", "create-bulk", str(inventory)],
                                   env=env, capture_output=True, text=True, timeout=60)
        assert completed.returncode != 0 and expected in completed.stderr, (label, completed.stderr)
    missing = subprocess.run([str(BIN / "certfleet"), "certificates", "create-bulk", str(tmp_path / "absent.json")],
                             env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "cannot read" in missing.stderr
    assert sorted(c["names"][0] for c in cli("certificates", "list")) == [f"web{n}.example.test" for n in range(3)]
