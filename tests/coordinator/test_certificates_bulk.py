"""Creating many certificates in one call: all of them, or none with the refused
item's index in the problem."""

from __future__ import annotations

import pytest

from certfleet.coordinator.client import ApiError
from certfleet.shared import wire
from tests.support import admin_client, enroll_agent, key_with_roles, raw_client


def _item(agent_id: str, name: str, **extra) -> wire.CertificateCreate:
    if "target_id" not in extra and "target" not in extra:
        extra["target"] = wire.FileTarget(directory=f"/srv/{name}")
    return wire.CertificateCreate(common_name=f"{name}.example.test", agent_id=agent_id, **extra)


async def _problem(call) -> dict:
    with pytest.raises(ApiError) as refused:
        await call
    return {"status": refused.value.status, **refused.value.problem}


async def _counts(service) -> dict[str, int]:
    """Rows of what a create writes; audit events other than refusals (those are kept)."""
    def count(tx) -> dict[str, int]:
        counts = {table: tx.one(f"SELECT COUNT(*) AS n FROM {table}")["n"]
                  for table in ("certificates", "targets", "jobs", "work_orders")}
        counts["audit_events"] = tx.one("SELECT COUNT(*) AS n FROM audit_events WHERE outcome = 'success'")["n"]
        return counts

    return await service.database.transact(count)


async def test_bulk_create_makes_every_certificate_and_queues_their_orders(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    agent_id = agent.config.agent_id
    named = await api.call("targets.create", wire.TargetCreate(
        name="shared-dir", agent_id=agent_id, settings=wire.FileTarget(directory=str(tmp_path / "shared"))))
    items = [_item(agent_id, f"web{n}", target=wire.FileTarget(directory=str(tmp_path / f"web{n}")),
                   tags=["imported"]) for n in range(3)]
    items.append(_item(agent_id, "api", target_id="shared-dir", sans=["api2.example.test"]))
    created = await api.call("certificates.create-bulk", wire.CertificateCreateBulk(certificates=items))

    assert [c.names[0] for c in created] == ["web0.example.test", "web1.example.test", "web2.example.test",
                                             "api.example.test"]
    assert created[3].names == ["api.example.test", "api2.example.test"] and created[3].target_id == named.id
    assert {c.status for c in created} == {"pending"} and len({c.id for c in created}) == 4
    assert await agent.poll_once() == 4
    await agent.flush_outbox()
    for certificate in created:
        info = await api.call("certificates.get", certificate_id=certificate.id)
        assert info.status == "deployed" and info.serial
    assert (tmp_path / "web2" / "cert.pem").exists() and (tmp_path / "shared" / "cert.pem").exists()
    events = await coordinator.coordinator.database.transact(lambda tx: tx.all(
        "SELECT resource_id FROM audit_events WHERE action = 'certificates.create-bulk'"))
    assert sorted(e["resource_id"] for e in events) == sorted(c.id for c in created)


async def test_a_refused_item_creates_nothing_and_its_index_is_named(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    agent_id = agent.config.agent_id
    await api.call("profiles.create", wire.ProfileCreate(name="short", policy=wire.ProfilePolicy(
        max_lifetime_seconds=86400)))
    service = coordinator.coordinator
    before = await _counts(service)

    problem = await _problem(api.call("certificates.create-bulk", wire.CertificateCreateBulk(certificates=[
        _item(agent_id, "good"), _item("agt_nobody", "orphan")])))
    assert problem["status"] == 422 and problem["detail"] == "certificates[1]: no agent 'agt_nobody'"

    problem = await _problem(api.call("certificates.create-bulk", wire.CertificateCreateBulk(certificates=[
        _item(agent_id, "a"), _item(agent_id, "b"), _item(agent_id, "long", profile="short", lifetime_seconds=2 * 86400)])))
    assert problem["status"] == 422 and problem["detail"].startswith("certificates[2]: ")
    assert problem["rule"] == "max_lifetime_seconds"

    problem = await _problem(api.call("certificates.create-bulk", wire.CertificateCreateBulk(certificates=[
        _item(agent_id, "c"), _item(agent_id, "d", target_id="no-such-target")])))
    assert problem["status"] == 422 and problem["detail"] == "certificates[1]: no target 'no-such-target'"

    assert await _counts(service) == before
    assert await agent.poll_once() == 0


async def test_each_item_needs_the_permission_on_its_own_profile(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    agent_id = agent.config.agent_id
    mine = await api.call("profiles.create", wire.ProfileCreate(name="team-p"))
    await api.call("profiles.create", wire.ProfileCreate(name="team-q"))
    scoped, key = await key_with_roles(api, coordinator, name="team p")
    await api.call("auth.grants.create", wire.GrantCreate(principal_type="api-key", principal_id=key.id,
                                                           role="operator", scope_type="profile", scope_id=mine.id))
    before = await _counts(coordinator.coordinator)
    problem = await _problem(scoped.call("certificates.create-bulk", wire.CertificateCreateBulk(certificates=[
        _item(agent_id, "p0", profile="team-p"), _item(agent_id, "q0", profile="team-q")])))
    assert problem["status"] == 403 and problem["detail"].startswith("certificates[1]: ")
    assert await _counts(coordinator.coordinator) == before
    created = await scoped.call("certificates.create-bulk", wire.CertificateCreateBulk(certificates=[
        _item(agent_id, "p1", profile="team-p"), _item(agent_id, "p2", profile="team-p")]))
    assert {c.profile_id for c in created} == {mine.id}


async def test_malformed_and_oversized_bulk_bodies_are_refused(coordinator, tmp_path):
    api, api_key = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    agent_id = agent.config.agent_id
    good = wire.encode(_item(agent_id, "ok")).decode()
    bad_name = wire.encode(_item(agent_id, "ok")).decode().replace("ok.example.test", "not a name")
    bodies = {
        "empty list": '{"certificates": []}',
        "too many": '{"certificates": [' + ", ".join([good] * (wire.BULK_CREATE_LIMIT + 1)) + "]}",
        "bad item": '{"certificates": [' + good + ", " + bad_name + "]}",
        "no list": '{"certificates": {}}',
        "not json": '{"certificates": [',
    }
    service = coordinator.coordinator
    before = await _counts(service)
    async with raw_client(coordinator, headers={"Authorization": f"Bearer {api_key}"}) as client:
        for label, body in bodies.items():
            response = await client.post("/api/v1/certificates/bulk", content=body,
                                         headers={"Content-Type": "application/json"})
            assert response.status_code == 400, (label, response.text)
            if label == "bad item":
                assert "certificates[1]" in response.json()["detail"]
    assert await _counts(service) == before
