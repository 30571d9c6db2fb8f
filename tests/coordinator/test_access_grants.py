"""Scoped grants, the escalation guard, the last admin, agent isolation, bootstrap."""

from __future__ import annotations

import time

import pytest
import trio

from certfleet.agent.client import CoordinatorError
from certfleet.coordinator.client import ApiClient, ApiError
from certfleet.shared import wire
from certfleet.shared.pki import KeyType, build_csr, generate_private_key
from tests.support import BOOTSTRAP_TOKEN, admin_client, enroll_agent, key_with_roles, raw_client


def _cert(agent_id: str, profile: str, target) -> wire.CertificateCreate:
    return wire.CertificateCreate(common_name="svc.example.test", agent_id=agent_id, profile=profile,
                                  target=wire.FileTarget(directory=str(target)))


async def _status(call) -> tuple[int, str]:
    try:
        await call
    except ApiError as exc:
        return exc.status, exc.problem.get("type", "").rsplit(":", 1)[-1]
    return 200, ""


async def test_operator_scoped_to_one_profile_issues_there_only(coordinator, tmp_path):
    admin, _ = await admin_client(coordinator)
    agent = await enroll_agent(admin, coordinator, tmp_path / "agent")
    p = await admin.call("profiles.create", wire.ProfileCreate(name="team-p"))
    await admin.call("profiles.create", wire.ProfileCreate(name="team-q"))
    scoped, key = await key_with_roles(admin, coordinator, name="team p")
    await admin.call("auth.grants.create", wire.GrantCreate(principal_type="api-key", principal_id=key.id,
                                                             role="operator", scope_type="profile", scope_id=p.id))
    other = await admin.call("certificates.create", _cert(agent.config.agent_id, "team-q", tmp_path / "q0"))

    mine = await scoped.call("certificates.create", _cert(agent.config.agent_id, "team-p", tmp_path / "p"))
    assert mine.profile_id == p.id
    assert await _status(scoped.call("certificates.create", _cert(agent.config.agent_id, "team-q", tmp_path / "q"))) \
        == (403, "scope-denied")
    assert [c.id for c in await scoped.call("certificates.list")] == [mine.id]
    assert await _status(scoped.call("certificates.get", certificate_id=other.id)) == (404, "not-found")
    assert [pr.name for pr in await scoped.call("profiles.list")] == ["team-p"]


async def test_issuer_scope_covers_its_profiles(coordinator, tmp_path):
    admin, _ = await admin_client(coordinator)
    agent = await enroll_agent(admin, coordinator, tmp_path / "agent")
    scoped, key = await key_with_roles(admin, coordinator)
    await admin.call("auth.grants.create", wire.GrantCreate(principal_type="api-key", principal_id=key.id,
                                                             role="operator", scope_type="issuer",
                                                             scope_id="iss_issuing"))
    created = await scoped.call("certificates.create", _cert(agent.config.agent_id, "default", tmp_path / "t"))
    assert created.profile_id == "prf_default"


async def test_escalation_guard(coordinator, tmp_path):
    admin, admin_key = await admin_client(coordinator)
    await admin.call("auth.roles.create", wire.RoleCreate(name="assigner", permissions=["auth.role.assign"]))
    assigner, assigner_key = await key_with_roles(admin, coordinator, "operator", "assigner")
    _, target = await key_with_roles(admin, coordinator, name="target")

    grant_admin = wire.GrantCreate(principal_type="api-key", principal_id=target.id, role="admin")
    assert await _status(assigner.call("auth.grants.create", grant_admin)) == (403, "escalation-denied")
    assert await _status(assigner.call("auth.keys.create", wire.ApiKeyCreate(name="x", roles=["admin"]))) \
        == (403, "forbidden")  # no auth.key.create at all
    granted = await assigner.call("auth.grants.create", wire.GrantCreate(
        principal_type="api-key", principal_id=target.id, role="viewer"))
    assert granted.role == "viewer"

    # Held only on profile P: may grant on P, not globally, not on Q.
    p = await admin.call("profiles.create", wire.ProfileCreate(name="p"))
    q = await admin.call("profiles.create", wire.ProfileCreate(name="q"))
    narrow, narrow_key = await key_with_roles(admin, coordinator, "assigner")
    await admin.call("auth.grants.create", wire.GrantCreate(principal_type="api-key", principal_id=narrow_key.id,
                                                             role="operator", scope_type="profile", scope_id=p.id))
    on = lambda scope_type, scope_id: wire.GrantCreate(  # noqa: E731
        principal_type="api-key", principal_id=target.id, role="operator", scope_type=scope_type, scope_id=scope_id)
    assert (await narrow.call("auth.grants.create", on("profile", p.id))).scope_id == p.id
    assert await _status(narrow.call("auth.grants.create", on("profile", q.id))) == (403, "escalation-denied")
    assert await _status(narrow.call("auth.grants.create", on("global", None))) == (403, "escalation-denied")
    # A custom role can't smuggle permissions its creator lacks either: roles are global
    # objects, so an admin of one profile cannot make one at all.
    await admin.call("auth.grants.create", wire.GrantCreate(principal_type="api-key", principal_id=narrow_key.id,
                                                             role="admin", scope_type="profile", scope_id=p.id))
    assert await _status(narrow.call("auth.roles.create", wire.RoleCreate(name="sneaky", permissions=["audit.export"]))) \
        == (403, "scope-denied")
    await admin.call("auth.grants.create", wire.GrantCreate(principal_type="api-key", principal_id=narrow_key.id,
                                                             role="assigner", scope_type="global"))
    editor = await admin.call("auth.roles.create", wire.RoleCreate(name="role-editor", permissions=["auth.role.edit"]))
    await admin.call("auth.grants.create", wire.GrantCreate(principal_type="api-key", principal_id=narrow_key.id,
                                                             role=editor.name, scope_type="global"))
    assert await _status(narrow.call("auth.roles.create", wire.RoleCreate(name="sneaky", permissions=["audit.export"]))) \
        == (403, "escalation-denied")


async def test_the_last_admin_cannot_be_removed(coordinator):
    admin, _ = await admin_client(coordinator)
    me = await admin.call("auth.me")
    admin_grant = next(g for g in me.grants if g.role == "admin")
    assert await _status(admin.call("auth.grants.revoke", grant_id=admin_grant.id)) == (409, "last-admin")
    assert await _status(admin.call("auth.keys.revoke", key_id=me.principal_id)) == (409, "last-admin")

    second, second_key = await key_with_roles(admin, coordinator, "admin", name="second admin")
    revoked = await second.call("auth.keys.revoke", key_id=me.principal_id)
    assert revoked.revoked_at is not None
    assert await _status(admin.call("auth.me")) == (401, "unauthorized")
    assert await _status(second.call("auth.keys.revoke", key_id=second_key.id)) == (409, "last-admin")


async def test_key_rotation_revocation_and_expiry(coordinator):
    admin, _ = await admin_client(coordinator)
    viewer, key = await key_with_roles(admin, coordinator, "viewer")
    assert (await viewer.call("auth.me")).principal_id == key.id
    rotated = await admin.call("auth.keys.rotate", key_id=key.id)
    assert rotated.id == key.id and rotated.token != key.token
    assert await _status(viewer.call("auth.me")) == (401, "unauthorized")
    fresh = ApiClient(coordinator.url, api_key=rotated.token, ca_bundle=coordinator.ca_path)
    assert (await fresh.call("auth.me")).principal_id == key.id
    listed = {k.id: k for k in await admin.call("auth.keys.list")}
    assert listed[key.id].last_used_at is not None and listed[key.id].token is None
    await admin.call("auth.keys.revoke", key_id=key.id)
    assert await _status(fresh.call("auth.me")) == (401, "unauthorized")

    expiring = await admin.call("auth.keys.create", wire.ApiKeyCreate(name="short", roles=["viewer"],
                                                                     expires_at=int(time.time()) + 2))
    coordinator.coordinator._clock = lambda: time.time() + 10
    expired = ApiClient(coordinator.url, api_key=expiring.token, ca_bundle=coordinator.ca_path)
    assert await _status(expired.call("auth.me")) == (401, "unauthorized")


async def test_cli_role_manages_only_its_own_keys(coordinator):
    admin, _ = await admin_client(coordinator)
    mine, my_key = await key_with_roles(admin, coordinator, "cli", user="alice")
    _, bobs = await key_with_roles(admin, coordinator, "viewer", user="bob")
    second = await mine.call("auth.own-keys.create", wire.ApiKeyCreate(name="laptop", roles=["viewer"]))
    assert second.user == "alice"
    assert {k.id for k in await mine.call("auth.own-keys.list")} == {my_key.id, second.id}
    assert await _status(mine.call("auth.own-keys.revoke", key_id=bobs.id)) == (404, "not-found")
    assert await _status(mine.call("auth.own-keys.create", wire.ApiKeyCreate(name="x", roles=["admin"]))) \
        == (403, "escalation-denied")
    assert (await mine.call("auth.own-keys.revoke", key_id=second.id)).revoked_at is not None


async def test_agent_cannot_touch_another_agents_work(coordinator, tmp_path):
    admin, _ = await admin_client(coordinator)
    agent_a = await enroll_agent(admin, coordinator, tmp_path / "a", name="a")
    agent_b = await enroll_agent(admin, coordinator, tmp_path / "b", name="b")
    b_cert = await admin.call("certificates.create", _cert(agent_b.config.agent_id, "default", tmp_path / "tb"))
    a_cert = await admin.call("certificates.create", _cert(agent_a.config.agent_id, "default", tmp_path / "ta"))
    b_order = await coordinator.coordinator.database.transact(lambda tx: tx.one(
        "SELECT id FROM work_orders WHERE certificate_id = ?", (b_cert.id,)))

    work = await agent_a.client.call("agent.work", query={"wait": 0})
    assert b_order["id"] not in {d.id for d in work.orders} and len(work.orders) == 1
    csr = build_csr(generate_private_key(KeyType.EC_P256), ["svc.example.test"]).decode()
    for call in (
        agent_a.client.call("agent.csr", wire.CsrSubmission(csr=csr), order_id=b_order["id"]),
        agent_a.client.call("agent.result", wire.OrderResult(status="succeeded"), order_id=b_order["id"]),
        agent_a.client.call("agent.certificate", certificate_id=b_cert.id),
    ):
        with pytest.raises(CoordinatorError) as refused:
            await call
        assert refused.value.status == 404
    assert (await agent_a.client.call("agent.certificate", certificate_id=a_cert.id)).id == a_cert.id
    order = await coordinator.coordinator.database.transact(lambda tx: tx.one(
        "SELECT status FROM work_orders WHERE id = ?", (b_order["id"],)))
    assert order["status"] == "queued"


async def test_concurrent_bootstraps_yield_exactly_one_admin(coordinator):
    statuses: list[int] = []

    async def attempt(http):
        response = await http.post("/api/v1/auth/bootstrap", json={"token": BOOTSTRAP_TOKEN})
        statuses.append(response.status_code)

    async with raw_client(coordinator) as http:
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(attempt, http)
    assert sorted(statuses) == [201] + [410] * 7
    keys = await coordinator.coordinator.database.transact(lambda tx: tx.all("SELECT id FROM api_keys"))
    assert len(keys) == 1


async def test_auditor_reads_and_exports_the_trail_and_nothing_else(coordinator):
    admin, _ = await admin_client(coordinator)
    auditor, _ = await key_with_roles(admin, coordinator, "auditor")
    page = await auditor.call("audit.list")
    assert page.events and page.events[0].action == "auth.bootstrap"
    exported = await auditor.call("audit.export")
    assert len(exported.strip().splitlines()) >= len(page.events)
    for name in ("certificates.list", "agents.list", "auth.me", "profiles.list"):
        assert await _status(auditor.call(name)) == (403, "forbidden")


@pytest.mark.parametrize("database_url", [None])
async def test_failed_authentication_is_rate_limited_per_source(coordinator):
    async with raw_client(coordinator) as http:
        codes = []
        for _ in range(25):
            response = await http.get("/api/v1/auth/me", headers={"Authorization": "Bearer cfk_aaaaaaaaaaaaaaaa_" + "x" * 43})
            codes.append(response.status_code)
        assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}
        assert (await http.get("/api/v1/auth/me")).headers.get("Retry-After")


async def test_a_grant_to_a_user_reaches_every_key_of_that_user(coordinator):
    admin, _ = await admin_client(coordinator)
    first, _ = await key_with_roles(admin, coordinator, user="dana", name="one")
    second, _ = await key_with_roles(admin, coordinator, user="dana", name="two")
    assert await _status(first.call("certificates.list")) == (403, "forbidden")
    grant = await admin.call("auth.grants.create", wire.GrantCreate(principal_type="user", principal_id="dana",
                                                                     role="viewer"))
    assert await first.call("certificates.list") == [] and await second.call("certificates.list") == []
    me = await second.call("auth.me")
    assert me.user == "dana" and "cert.read" in me.permissions and grant.id in {g.id for g in me.grants}
    await admin.call("auth.grants.revoke", grant_id=grant.id)
    assert await _status(second.call("certificates.list")) == (403, "forbidden")


async def test_expired_grant_stops_counting(coordinator):
    admin, _ = await admin_client(coordinator)
    viewer, key = await key_with_roles(admin, coordinator)
    await admin.call("auth.grants.create", wire.GrantCreate(principal_type="api-key", principal_id=key.id,
                                                             role="viewer", expires_at=int(time.time()) + 60))
    assert await viewer.call("certificates.list") == []
    coordinator.coordinator._clock = lambda: time.time() + 120
    assert await _status(viewer.call("certificates.list")) == (403, "forbidden")


async def test_a_grant_on_a_profile_or_issuer_named_by_name_applies(coordinator, tmp_path):
    admin, _ = await admin_client(coordinator)
    agent = await enroll_agent(admin, coordinator, tmp_path / "agent")
    team = await admin.call("profiles.create", wire.ProfileCreate(name="team-n"))
    scoped, key = await key_with_roles(admin, coordinator, name="by name")
    granted = await admin.call("auth.grants.create", wire.GrantCreate(
        principal_type="api-key", principal_id=key.id, role="operator", scope_type="profile", scope_id="team-n"))
    assert granted.scope_id == team.id
    created = await scoped.call("certificates.create", _cert(agent.config.agent_id, "team-n", tmp_path / "n"))
    assert created.profile_id == team.id
    on_issuer = await admin.call("auth.grants.create", wire.GrantCreate(
        principal_type="api-key", principal_id=key.id, role="viewer", scope_type="issuer", scope_id="issuing"))
    assert on_issuer.scope_id == "iss_issuing"
    assert await _status(admin.call("auth.grants.create", wire.GrantCreate(
        principal_type="api-key", principal_id=key.id, role="viewer", scope_type="profile",
        scope_id="no-such-profile"))) == (422, "unknown-profile")


async def test_a_minted_credential_never_outlives_the_minter(coordinator):
    admin, _ = await admin_client(coordinator)
    now = int(time.time())
    expiring_at = now + 3600
    minter_key = await admin.call("auth.keys.create", wire.ApiKeyCreate(name="expiring", roles=["admin"],
                                                                        expires_at=expiring_at))
    minter = ApiClient(coordinator.url, api_key=minter_key.token, ca_bundle=coordinator.ca_path)
    # A key of an expiring key expires with it when no expiry is asked for, and may not be asked to outlive it.
    child = await minter.call("auth.keys.create", wire.ApiKeyCreate(name="child", roles=["viewer"]))
    assert child.expires_at == expiring_at
    assert await _status(minter.call("auth.keys.create", wire.ApiKeyCreate(
        name="longer", roles=["viewer"], expires_at=expiring_at + 60))) == (422, "outlives-grantor")
    shorter = await minter.call("auth.keys.create", wire.ApiKeyCreate(name="shorter", roles=["viewer"],
                                                                      expires_at=now + 600))
    assert shorter.expires_at == now + 600
    grant = await minter.call("auth.grants.create", wire.GrantCreate(
        principal_type="api-key", principal_id=shorter.id, role="operator"))
    assert grant.expires_at == expiring_at

    # The same for a key whose standing comes from an expiring grant rather than its own expiry.
    _, lender_key = await key_with_roles(admin, coordinator, name="temporary admin")
    await admin.call("auth.grants.create", wire.GrantCreate(principal_type="api-key", principal_id=lender_key.id,
                                                             role="admin", expires_at=now + 1800))
    lender = ApiClient(coordinator.url, api_key=lender_key.token, ca_bundle=coordinator.ca_path)
    assert (await lender.call("auth.keys.create", wire.ApiKeyCreate(name="c", roles=["viewer"]))).expires_at \
        == now + 1800
    assert await _status(lender.call("auth.grants.create", wire.GrantCreate(
        principal_type="user", principal_id="someone", role="viewer", expires_at=now + 7200))) \
        == (422, "outlives-grantor")
    # A standing without an expiry hands out credentials without one.
    forever = await admin.call("auth.keys.create", wire.ApiKeyCreate(name="forever", roles=["viewer"]))
    assert forever.expires_at is None
