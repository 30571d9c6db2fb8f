"""The audit trail: what each event records, append-only in the database, and a
hash chain that `certfleet audit verify` checks straight from the database."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from certfleet.coordinator import audit, storage
from certfleet.coordinator.client import ApiError
from certfleet.shared import wire
from certfleet.shared.api import OPERATIONS
from tests.support import admin_client, enroll_agent, key_with_roles, raw_client

CLI = str(Path(sys.executable).with_name("certfleet"))


def _verify(running, database_url) -> subprocess.CompletedProcess:
    """``certfleet audit verify`` on the coordinator's host: the data dir holds the
    master key that keys the chain; the database may be elsewhere."""
    where = ["--data-dir", str(running.ca_path.parents[1])]
    if database_url:
        where += ["--database-url", database_url]
    return subprocess.run([CLI, "audit", "verify", *where], capture_output=True, text=True, timeout=60)


async def _events(running):
    return await running.coordinator.database.transact(lambda tx: tx.all("SELECT * FROM audit_events ORDER BY id"))


async def _tamper(running, sql: str, params=()) -> None:
    """Write past the append-only triggers, as someone with raw database access could."""
    database = running.coordinator.database

    def run(tx):
        if tx.dialect == "sqlite":
            tx.execute("DROP TRIGGER audit_events_no_update")
            tx.execute("DROP TRIGGER audit_events_no_delete")
        else:
            tx.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        tx.execute(sql, params)

    await database.transact(run)


async def _busy(running, tmp_path):
    admin, _ = await admin_client(running)
    agent = await enroll_agent(admin, running, tmp_path / "agent")
    await admin.call("certificates.create", wire.CertificateCreate(
        common_name="a.example.test", agent_id=agent.config.agent_id,
        target=wire.FileTarget(directory=str(tmp_path / "t"))))
    await key_with_roles(admin, running, "viewer")
    return admin


async def test_untouched_chain_verifies(coordinator, tmp_path, database_url):
    await _busy(coordinator, tmp_path)
    result = _verify(coordinator, database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(await _events(coordinator))
    assert f"audit chain OK: {count} events" in result.stdout


@pytest.mark.parametrize("change", ["update", "delete"])
async def test_a_changed_or_deleted_row_is_named(coordinator, tmp_path, database_url, change):
    await _busy(coordinator, tmp_path)
    victim = (await _events(coordinator))[2]
    if change == "update":
        await _tamper(coordinator, "UPDATE audit_events SET actor_id = ? WHERE id = ?", ("someone-else", victim["id"]))
        named = victim["id"]
    else:
        await _tamper(coordinator, "DELETE FROM audit_events WHERE id = ?", (victim["id"],))
        named = victim["id"] + 1
    result = _verify(coordinator, database_url)
    assert result.returncode == 1
    assert f"BROKEN at event {named}:" in result.stdout


async def test_an_edit_with_the_chain_recomputed_without_the_key_is_caught(coordinator, tmp_path, database_url):
    """Someone with database access rewrites an event and recomputes every hash after
    it, as they could with an unkeyed chain: without the master key they cannot."""
    await _busy(coordinator, tmp_path)
    events = await _events(coordinator)
    victim = events[1]["id"]
    previous = events[0]["hash"]
    statements = []
    for row in events[1:]:
        row = {**row, "prev_hash": previous}
        if row["id"] == victim:
            row["actor_id"] = "someone-else"
        # What recomputing an unkeyed chain would take: SHA-256 over the same columns.
        canonical = json.dumps([row[name] for name in audit._HASHED], separators=(",", ":"), ensure_ascii=False)
        row["hash"] = hashlib.sha256(canonical.encode()).hexdigest()
        statements.append((row["actor_id"], row["prev_hash"], row["hash"], row["id"]))
        previous = row["hash"]
    rewrite = "UPDATE audit_events SET actor_id = ?, prev_hash = ?, hash = ? WHERE id = ?"
    await _tamper(coordinator, rewrite, statements[0])  # drops the triggers for good
    for params in statements[1:]:
        await coordinator.coordinator.database.transact(lambda tx, params=params: tx.execute(rewrite, params))
    result = _verify(coordinator, database_url)
    assert result.returncode == 1 and f"BROKEN at event {victim}:" in result.stdout


async def test_verify_without_the_master_key_says_so(coordinator, tmp_path, database_url):
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    (empty / "certfleet.db").write_bytes(b"")
    where = ["--data-dir", str(empty)] + (["--database-url", database_url] if database_url else [])
    result = subprocess.run([CLI, "audit", "verify", *where], capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != "CERTFLEET_MASTER_KEY"})
    assert result.returncode == 2 and "no master key" in result.stderr


async def test_the_database_refuses_update_and_delete(coordinator, tmp_path):
    await _busy(coordinator, tmp_path)
    database = coordinator.coordinator.database
    for sql in ("UPDATE audit_events SET outcome = 'success' WHERE id = 1", "DELETE FROM audit_events WHERE id = 1"):
        with pytest.raises(storage.AppendOnly):
            await database.transact(lambda tx, sql=sql: tx.execute(sql))
    assert len(await _events(coordinator)) > 1


async def test_an_event_records_who_what_where_and_the_body_hash(coordinator, tmp_path):
    admin, api_key = await admin_client(coordinator)
    body = json.dumps({"name": "team-x"}).encode()
    async with raw_client(coordinator) as http:
        response = await http.post("/api/v1/profiles", content=body, headers={
            "Authorization": f"Bearer {api_key}", "Content-Type": "application/json", "X-Request-Id": "req-42"})
    assert response.status_code == 201
    event = (await _events(coordinator))[-1]
    assert event["action"] == "profiles.create" and event["outcome"] == "success"
    assert (event["actor_type"], event["actor_id"]) == ("api-key", api_key.split("_")[1])
    assert (event["resource_type"], event["resource_id"]) == ("profile", response.json()["id"])
    assert event["request_id"] == "req-42" and event["source_address"] == "127.0.0.1"
    assert event["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert event["latency_ms"] >= 0
    assert api_key not in json.dumps(event)


async def test_refusals_are_audited_without_secrets(coordinator):
    admin, _ = await admin_client(coordinator)
    viewer, _ = await key_with_roles(admin, coordinator, "viewer")
    wrong = "cfk_aaaaaaaaaaaaaaaa_" + "s" * 43
    async with raw_client(coordinator) as http:
        assert (await http.get("/api/v1/agents", headers={"Authorization": f"Bearer {wrong}"})).status_code == 401
    with pytest.raises(ApiError):
        await viewer.call("agents.enrollment-token.create", wire.EnrollmentTokenCreate())
    events = await _events(coordinator)
    outcomes = [(e["action"], e["outcome"]) for e in events]
    assert ("agents.list", "unauthenticated") in outcomes
    assert ("agents.enrollment-token.create", "denied") in outcomes
    assert not any(wrong in json.dumps(e) for e in events)


async def test_every_successful_mutation_is_audited_under_its_operation_name(coordinator, tmp_path):
    """Walks a life cycle that calls every mutating operation once and checks each
    left an event named after it."""
    from certfleet.shared.pki import KeyType, build_csr, generate_private_key

    admin, _ = await admin_client(coordinator)
    agent = await enroll_agent(admin, coordinator, tmp_path / "agent")
    mine, mine_key = await key_with_roles(admin, coordinator, "cli", user="carol")
    approver, _ = await key_with_roles(admin, coordinator, "operator", user="dave")
    await admin.call("auth.grants.create", wire.GrantCreate(principal_type="user", principal_id="carol",
                                                             role="operator"))
    own = await mine.call("auth.own-keys.create", wire.ApiKeyCreate(name="own"))
    await mine.call("auth.own-keys.rotate", key_id=own.id)
    await mine.call("auth.own-keys.revoke", key_id=own.id)
    other = await admin.call("auth.keys.create", wire.ApiKeyCreate(name="other"))
    await admin.call("auth.keys.rotate", key_id=other.id)
    await admin.call("auth.keys.revoke", key_id=other.id)
    await admin.call("auth.roles.create", wire.RoleCreate(name="reader", permissions=["cert.read"]))
    grant = await admin.call("auth.grants.create", wire.GrantCreate(
        principal_type="api-key", principal_id=mine_key.id, role="reader"))
    await admin.call("auth.grants.revoke", grant_id=grant.id)
    await admin.call("auth.roles.delete", role="reader")
    await admin.call("profiles.create", wire.ProfileCreate(name="life"))
    await admin.call("renewal-policies.create", wire.RenewalPolicyCreate(name="half", fraction=0.5))
    created = await admin.call("certificates.create", wire.CertificateCreate(
        common_name="life.example.test", agent_id=agent.config.agent_id,
        target=wire.FileTarget(directory=str(tmp_path / "t"))))
    order = (await agent.client.call("agent.work", query={"wait": 0})).orders[0]
    csr = build_csr(generate_private_key(KeyType.EC_P256), created.names).decode()
    await agent.client.call("agent.csr", wire.CsrSubmission(csr=csr), order_id=order.id)
    await agent.client.call("agent.result", wire.OrderResult(status="succeeded"), order_id=order.id)
    await agent.client.call("agent.report", wire.AgentReport(event="work-order-refused", reason="replay"))
    named = await admin.call("targets.create", wire.TargetCreate(
        name="life-files", agent_id=agent.config.agent_id, settings=wire.FileTarget(directory=str(tmp_path / "n"))))
    await admin.call("targets.test", target_id=named.name)
    found = {"subject": "CN=found.example.test", "sans": ["DNS:found.example.test"], "issuer": "CN=Elsewhere",
             "serial": "1", "not_before": "2026-01-01T00:00:00Z", "not_after": "2027-01-01T00:00:00Z",
             "key_algorithm": "EC", "key_size": 256, "is_ca": False, "position": 0, "format": "pem",
             "has_private_key": True}
    await agent.client.call("agent.discoveries", wire.DiscoveryReport(source="filesystem", scan_id="life", added=[
        wire.DiscoveredCertificate(fingerprint_sha256=f"{n:064x}", path=f"/etc/ssl/found{n}.pem", **found)
        for n in (1, 2)]))
    first, second = (await admin.call("discovery.list")).certificates
    await admin.call("discovery.dismiss", wire.DiscoveryDismiss(reason="a test"), discovery_id=str(first.id))
    await admin.call("discovery.claim", wire.DiscoveryClaim(), discovery_id=str(second.id))

    # The PKI: hierarchy, a profile edit, revocation, an approval.
    root = await admin.call("issuers.create-root", wire.RootCreate(name="life-root"))
    await admin.call("issuers.create-intermediate", wire.IntermediateCreate(name="life-int", parent=root.id))
    external = await admin.call("issuers.create-external", wire.ExternalSubordinateCreate(name="life-ext"))
    await _import_signed_by_openssl(tmp_path, admin, external)
    await admin.call("issuers.revoke", wire.IssuerRevokeRequest(reason="superseded"), issuer_id="life-int")
    await admin.call("issuers.retire", issuer_id=root.id)
    life = await admin.call("profiles.get", profile_id="life")
    await admin.call("profiles.update", wire.ProfileUpdate(policy=wire.ProfilePolicy(requires_approval=True)),
                     profile_id=life.id)
    await admin.call("certificates.revoke", wire.RevokeRequest(reason="superseded"), certificate_id=created.id)
    await admin.call("certificates.revoke-bulk", wire.BulkRevokeRequest(agent=agent.config.agent_id))
    waiting = await mine.call("certificates.create", wire.CertificateCreate(
        common_name="four.example.test", agent_id=agent.config.agent_id, profile="life",
        target=wire.FileTarget(directory=str(tmp_path / "t2"))))
    approval = next(a for a in await admin.call("approvals.list") if a.subject_id == waiting.id)
    await approver.call("approvals.reject", wire.ApprovalDecision(note="not now"), approval_id=approval.id)
    rejected = (await admin.call("jobs.list", query={"certificate_id": waiting.id}))[0]
    assert rejected.state == "failed"
    retried = await admin.call("jobs.retry", job_id=rejected.id)
    assert retried.state == "awaiting-approval"  # a retry does not skip the second person
    await admin.call("jobs.cancel", job_id=retried.id)
    again = await mine.call("certificates.create", wire.CertificateCreate(
        common_name="four.example.test", agent_id=agent.config.agent_id, profile="life",
        target=wire.FileTarget(directory=str(tmp_path / "t3"))))
    approval = next(a for a in await admin.call("approvals.list") if a.subject_id == again.id)
    await approver.call("approvals.approve", wire.ApprovalDecision(), approval_id=approval.id)

    channel = await admin.call("channels.create", wire.ChannelCreate(
        name="nowhere", kind="webhook", settings={"url": "http://127.0.0.1:9/hook"},
        secrets={"secret": "s" * 20}))
    sent = await admin.call("channels.test", channel_id=channel.id)
    await coordinator.coordinator.database.transact(lambda tx: tx.execute(
        "UPDATE notifications SET status = 'dead' WHERE id = ?", (sent.id,)))
    await admin.call("notifications.requeue", notification_id=sent.id)
    await admin.call("channels.delete", channel_id=channel.id)
    await admin.call("discovery.scan", wire.DiscoveryScanRequest(agent_id=agent.config.agent_id))
    await admin.call("discovery.probe", wire.DiscoveryProbeRequest(
        agent_id=agent.config.agent_id, ranges=["127.0.0.1/32"], ports=[443]))
    await admin.call("certificates.create-bulk", wire.CertificateCreateBulk(certificates=[wire.CertificateCreate(
        common_name="bulk.example.test", agent_id=agent.config.agent_id,
        target=wire.FileTarget(directory=str(tmp_path / "bulk")))]))
    await admin.call("agents.retire", agent_id=agent.config.agent_id)

    actions = {e["action"] for e in await _events(coordinator) if e["outcome"] == "success"}
    mutating = {op.name for op in OPERATIONS if op.mutating}
    assert mutating - actions == set()


async def test_audit_list_filters_and_pages_by_keyset(coordinator, tmp_path):
    admin = await _busy(coordinator, tmp_path)
    everything = await _events(coordinator)
    seen, after = [], 0
    while True:
        page = await admin.call("audit.list", query={"after": after, "limit": 2})
        seen += [e.id for e in page.events]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [e["id"] for e in everything]
    creates = await admin.call("audit.list", query={"action": "certificates.create"})
    assert [e.resource_type for e in creates.events] == ["certificate"]
    by_resource = await admin.call("audit.list", query={"resource_type": "certificate",
                                                        "resource_id": creates.events[0].resource_id})
    assert {e.action for e in by_resource.events} == {"certificates.create"}
    cutoff = everything[3]["at_ms"]
    since = await admin.call("audit.list", query={"since_ms": cutoff, "limit": 1000})
    assert all(e.at_ms >= cutoff for e in since.events) and since.events
    exported = [json.loads(line) for line in (await admin.call("audit.export")).splitlines()]
    assert [e["id"] for e in exported] == [e["id"] for e in await _events(coordinator)]
    assert exported[0]["prev_hash"] == "0" * 64


async def _import_signed_by_openssl(tmp_path, admin, external):
    """Sign a pending sub-CA's CSR with a root made by the openssl CLI, and import it."""
    from tests.pki_support import openssl_root, openssl_sign_ca

    root_cert, root_key = openssl_root(tmp_path / "ext")
    signed = openssl_sign_ca(tmp_path / "ext", external.csr_pem, root_cert, root_key)
    await admin.call("issuers.import", wire.IssuerCertificateImport(certificate=signed, chain=root_cert.read_text()),
                     issuer_id=external.id)
