"""Profiles refuse what they do not allow, naming the rule; approval-tier profiles
need a second person."""

from __future__ import annotations

import time

import pytest

from certfleet.coordinator.client import ApiError
from certfleet.shared import wire
from certfleet.shared.pki import KeyType
from tests.support import admin_client, enroll_agent, key_with_roles


async def _problem(call) -> dict:
    with pytest.raises(ApiError) as refused:
        await call
    return {"status": refused.value.status, **refused.value.problem}


def _request(agent, name, *, profile, sans=(), key_type=KeyType.EC_P256, lifetime=86400, target="/srv/t"):
    return wire.CertificateCreate(common_name=name, sans=list(sans), agent_id=agent.config.agent_id, profile=profile,
                                  key_type=key_type, lifetime_seconds=lifetime, target=wire.FileTarget(directory=target))


async def test_profile_refusals_name_the_rule_and_store_nothing(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    await api.call("profiles.create", wire.ProfileCreate(name="web", policy=wire.ProfilePolicy(
        key_types=[KeyType.EC_P256], max_lifetime_seconds=7 * 86400,
        name_patterns=["*.web.example.test", "ip:10.0.0.0/8", "spiffe://example.test/web/*"])))
    cases = {
        "key_types": _request(agent, "a.web.example.test", profile="web", key_type=KeyType.RSA_2048),
        "max_lifetime_seconds": _request(agent, "a.web.example.test", profile="web", lifetime=30 * 86400),
        "name_patterns": _request(agent, "a.web.example.test", profile="web", sans=["b.other.test"]),
    }
    for rule, request in cases.items():
        problem = await _problem(api.call("certificates.create", request))
        assert problem["status"] == 422 and problem["rule"] == rule, problem
        assert problem["type"].endswith("policy-violation") and problem["detail"]
    assert "b.other.test" in (await _problem(api.call("certificates.create", cases["name_patterns"])))["value"]
    assert await api.call("certificates.list") == []
    allowed = await api.call("certificates.create", _request(
        agent, "a.web.example.test", profile="web", sans=["10.2.3.4", "spiffe://example.test/web/frontend"]))
    assert allowed.status == "pending"


async def test_short_lived_profile_caps_lifetime_and_omits_revocation_pointers(coordinator, tmp_path):
    from tests.pki_support import issue_through_agent

    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    await api.call("profiles.create", wire.ProfileCreate(name="brief", policy=wire.ProfilePolicy(
        short_lived=True, must_staple=True, ekus=["client-auth"])))
    problem = await _problem(api.call("certificates.create", _request(agent, "x.example.test", profile="brief",
                                                                      lifetime=8 * 86400)))
    assert problem["rule"] == "max_lifetime_seconds"
    info = await issue_through_agent(api, agent, ["x.example.test"], tmp_path / "t", profile="brief",
                                     lifetime_seconds=3600)
    from cryptography import x509

    leaf = x509.load_pem_x509_certificate((tmp_path / "t" / "cert.pem").read_bytes())
    assert info.status == "deployed"
    assert leaf.not_valid_after_utc.timestamp() - leaf.not_valid_before_utc.timestamp() <= 3600 + 60
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert leaf.extensions.get_extension_for_class(x509.TLSFeature).value
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]


async def _approval_tier(api):
    return await api.call("profiles.create", wire.ProfileCreate(
        name="guarded", policy=wire.ProfilePolicy(requires_approval=True, approval_ttl_seconds=3600)))


async def test_issuance_waits_for_a_second_person(coordinator, tmp_path):
    admin, _ = await admin_client(coordinator)
    agent = await enroll_agent(admin, coordinator, tmp_path / "agent")
    await _approval_tier(admin)
    alice, _ = await key_with_roles(admin, coordinator, "operator", user="alice")
    alice_laptop, _ = await key_with_roles(admin, coordinator, "operator", user="alice", name="laptop")
    bob, _ = await key_with_roles(admin, coordinator, "operator", user="bob")

    created = await alice.call("certificates.create", _request(agent, "vault.example.test", profile="guarded",
                                                               target=str(tmp_path / "t")))
    assert created.status == "awaiting-approval"
    assert (await agent.client.call("agent.work", query={"wait": 0})).orders == []
    approval = next(a for a in await bob.call("approvals.list", query={"status": "pending"})
                    if a.subject_id == created.id)
    for same_person in (alice, alice_laptop):
        problem = await _problem(same_person.call("approvals.approve", wire.ApprovalDecision(), approval_id=approval.id))
        assert problem["status"] == 403 and problem["type"].endswith("four-eyes")
    decided = await bob.call("approvals.approve", wire.ApprovalDecision(note="ok"), approval_id=approval.id)
    assert decided.status == "approved" and decided.decided_by.startswith("api-key:")
    assert (await bob.call("certificates.get", certificate_id=created.id)).status == "pending"
    assert len((await agent.client.call("agent.work", query={"wait": 0})).orders) == 1
    problem = await _problem(bob.call("approvals.reject", wire.ApprovalDecision(), approval_id=approval.id))
    assert problem["status"] == 409


async def test_rejected_and_expired_requests_never_issue(coordinator, tmp_path):
    admin, _ = await admin_client(coordinator)
    agent = await enroll_agent(admin, coordinator, tmp_path / "agent")
    await _approval_tier(admin)
    alice, _ = await key_with_roles(admin, coordinator, "operator", user="alice")
    bob, _ = await key_with_roles(admin, coordinator, "operator", user="bob")
    rejected = await alice.call("certificates.create", _request(agent, "r.example.test", profile="guarded"))
    expiring = await alice.call("certificates.create", _request(agent, "e.example.test", profile="guarded"))
    pending = {a.subject_id: a for a in await admin.call("approvals.list")}
    await bob.call("approvals.reject", wire.ApprovalDecision(note="no"), approval_id=pending[rejected.id].id)
    assert (await admin.call("certificates.get", certificate_id=rejected.id)).status == "rejected"
    coordinator.coordinator._clock = lambda: time.time() + 7200
    statuses = {a.subject_id: a.status for a in await admin.call("approvals.list")}
    assert statuses[expiring.id] == "expired"
    problem = await _problem(bob.call("approvals.approve", wire.ApprovalDecision(),
                                      approval_id=pending[expiring.id].id))
    assert problem["status"] == 409
    orders = await coordinator.coordinator.database.transact(lambda tx: tx.all("SELECT id FROM work_orders"))
    assert orders == []


async def test_editing_an_approval_tier_profile_goes_through_the_queue(coordinator):
    admin, _ = await admin_client(coordinator)
    profile = await _approval_tier(admin)
    first, _ = await key_with_roles(admin, coordinator, "admin", user="first-admin")
    second, _ = await key_with_roles(admin, coordinator, "admin", user="second-admin")
    loosened = wire.ProfilePolicy(requires_approval=False)
    answer = await first.call("profiles.update", wire.ProfileUpdate(policy=loosened), profile_id=profile.id)
    assert answer.pending_approval and answer.policy.requires_approval and answer.version == 1
    assert (await admin.call("profiles.get", profile_id=profile.id)).policy.requires_approval
    await second.call("approvals.approve", wire.ApprovalDecision(), approval_id=answer.pending_approval)
    after = await admin.call("profiles.get", profile_id=profile.id)
    assert not after.policy.requires_approval and after.version == 2


async def test_a_scheduled_renewal_waits_for_approval_too(coordinator, tmp_path):
    from tests.pki_support import issue_through_agent

    admin, _ = await admin_client(coordinator)
    agent = await enroll_agent(admin, coordinator, tmp_path / "agent")
    info = await issue_through_agent(admin, agent, ["r.example.test"], tmp_path / "t", lifetime_seconds=3600)
    assert info.status == "deployed" and info.renew_at
    profile = await _approval_tier(admin)
    await coordinator.coordinator.database.transact(lambda tx: tx.execute(
        "UPDATE certificates SET profile_id = ? WHERE id = ?", (profile.id, info.id)))
    coordinator.coordinator._clock = lambda: info.renew_at + 1
    assert await coordinator.coordinator.start_due_renewals() == [info.id]
    assert (await admin.call("certificates.get", certificate_id=info.id)).status == "awaiting-approval"
    jobs = await admin.call("jobs.list", query={"certificate_id": info.id})
    assert [(j.kind, j.state) for j in jobs] == [("issue", "done"), ("renewal", "awaiting-approval")]
    pending = [a for a in await admin.call("approvals.list", query={"status": "pending"}) if a.subject_id == info.id]
    assert len(pending) == 1
    orders = await coordinator.coordinator.database.transact(lambda tx: tx.all(
        "SELECT status FROM work_orders WHERE certificate_id = ?", (info.id,)))
    assert [o["status"] for o in orders] == ["succeeded"]


async def test_a_key_minted_by_the_requester_is_not_a_second_person(coordinator, tmp_path):
    """A user name on an API key is a label its minter chose: an admin who mints a
    second key for a made-up user, directly or through another key, is still one person."""
    admin, _ = await admin_client(coordinator)
    agent = await enroll_agent(admin, coordinator, tmp_path / "agent")
    await _approval_tier(admin)
    made_up, made_up_key = await key_with_roles(admin, coordinator, "admin", user="made-up")
    relayed = await made_up.call("auth.keys.create", wire.ApiKeyCreate(name="relay", roles=["operator"],
                                                                        user="also-made-up"))
    from certfleet.coordinator.client import ApiClient
    relay = ApiClient(coordinator.url, api_key=relayed.token, ca_bundle=coordinator.ca_path)

    mine = await admin.call("certificates.create", _request(agent, "self.example.test", profile="guarded",
                                                             target=str(tmp_path / "a")))
    approval = next(a for a in await admin.call("approvals.list") if a.subject_id == mine.id)
    for minted_by_me in (made_up, relay):
        problem = await _problem(minted_by_me.call("approvals.approve", wire.ApprovalDecision(), approval_id=approval.id))
        assert problem["status"] == 403 and problem["type"].endswith("four-eyes"), problem
    # The other way round: the minter cannot decide what its own minted key asked for.
    theirs = await relay.call("certificates.create", _request(agent, "relay.example.test", profile="guarded",
                                                              target=str(tmp_path / "b")))
    approval = next(a for a in await admin.call("approvals.list") if a.subject_id == theirs.id)
    for minter in (admin, made_up):
        problem = await _problem(minter.call("approvals.reject", wire.ApprovalDecision(), approval_id=approval.id))
        assert problem["status"] == 403 and problem["type"].endswith("four-eyes"), problem
    # Two people the admin minted keys for are two people to each other.
    carol, _ = await key_with_roles(admin, coordinator, "operator", user="carol")
    decided = await carol.call("approvals.approve", wire.ApprovalDecision(), approval_id=approval.id)
    assert decided.status == "approved" and made_up_key.id != decided.decided_by
