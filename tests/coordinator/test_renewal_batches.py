"""The renewal scheduler starts a whole batch of due certificates in one transaction
whose statements do not grow with the batch: the reads (profiles, targets, renewal
policies, reused keys) and the writes (jobs, orders, statuses) go by the batch."""

from __future__ import annotations

from typing import Any

from certfleet.shared import wire
from tests.support import admin_client, count_statements, enroll_agent


async def _deployed(api: Any, agent: Any, tmp_path: Any, names: list[str], **extra: Any) -> dict[str, Any]:
    ids = {}
    for name in names:
        created = await api.call("certificates.create", wire.CertificateCreate(
            common_name=f"{name}.example.test", agent_id=agent.config.agent_id,
            target=wire.FileTarget(directory=str(tmp_path / name)), **extra))
        ids[name] = created.id
    await agent.poll_once()
    await agent.flush_outbox()
    for name, certificate_id in ids.items():
        assert (await api.call("certificates.get", certificate_id=certificate_id)).status == "deployed", name
    return ids


async def _make_due(service: Any, ids: list[str]) -> None:
    def due(tx: Any) -> None:
        for certificate_id in ids:
            tx.execute("UPDATE certificates SET renew_at = ? WHERE id = ?", (int(service.now()) - 1, certificate_id))

    await service.database.transact(due)


async def test_starting_ten_renewals_costs_the_statements_of_starting_two(coordinator, tmp_path, monkeypatch):
    service = coordinator.coordinator
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    ids = list((await _deployed(api, agent, tmp_path, [f"web{n}" for n in range(12)])).values())
    statements = count_statements(service, monkeypatch)

    await _make_due(service, ids[:2])
    statements.clear()
    assert sorted(await service.start_due_renewals()) == sorted(ids[:2])
    for_two = list(statements)

    await _make_due(service, ids[2:])
    statements.clear()
    assert sorted(await service.start_due_renewals()) == sorted(ids[2:])
    assert len(statements) == len(for_two), (for_two, statements)
    assert await service.start_due_renewals() == []

    assert await agent.poll_once() == 12
    await agent.flush_outbox()
    for certificate_id in ids:
        jobs = await api.call("jobs.list", query={"certificate_id": certificate_id})
        # Jobs list by creation second, then id: two made within the same second come
        # in either order.
        assert sorted((j.kind, j.state, j.attempts) for j in jobs) == [("issue", "done", 1), ("renewal", "done", 1)]


async def test_one_batch_holds_renewals_for_approval_and_reuses_keys_where_asked(coordinator, tmp_path):
    service = coordinator.coordinator
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    await api.call("renewal-policies.create", wire.RenewalPolicyCreate(name="keep-key", fraction=0.5, reuse_key=True))
    ids = await _deployed(api, agent, tmp_path, ["plain", "guarded", "other"])
    ids |= await _deployed(api, agent, tmp_path, ["kept"], renewal_policy="keep-key")
    guarded = await api.call("profiles.create", wire.ProfileCreate(
        name="guarded", policy=wire.ProfilePolicy(requires_approval=True, approval_ttl_seconds=3600)))
    await service.database.transact(lambda tx: tx.execute(
        "UPDATE certificates SET profile_id = ? WHERE id = ?", (guarded.id, ids["guarded"])))
    keys = {name: (tmp_path / name / "privkey.pem").read_bytes() for name in ids}
    certs = {name: (tmp_path / name / "cert.pem").read_bytes() for name in ids}

    await _make_due(service, list(ids.values()))
    assert sorted(await service.start_due_renewals()) == sorted(ids.values())

    held = await api.call("certificates.get", certificate_id=ids["guarded"])
    assert held.status == "awaiting-approval"
    pending = await api.call("approvals.list", query={"status": "pending"})
    assert [a.subject_id for a in pending] == [ids["guarded"]]
    orders = await service.database.transact(lambda tx: tx.all(
        "SELECT o.certificate_id, o.id, j.order_id, j.attempts FROM work_orders o"
        " JOIN jobs j ON j.certificate_id = o.certificate_id AND j.kind = 'renewal'"
        " WHERE o.status = 'queued'"))
    assert sorted(o["certificate_id"] for o in orders) == sorted(ids[n] for n in ("plain", "other", "kept"))
    assert all(o["id"] == o["order_id"] and o["attempts"] == 1 for o in orders)

    assert await agent.poll_once() == 3
    await agent.flush_outbox()
    for name in ("plain", "other", "kept"):
        assert (await api.call("certificates.get", certificate_id=ids[name])).status == "deployed"
        assert (tmp_path / name / "cert.pem").read_bytes() != certs[name]
    assert (tmp_path / "kept" / "privkey.pem").read_bytes() == keys["kept"]
    assert (tmp_path / "plain" / "privkey.pem").read_bytes() != keys["plain"]
    assert (tmp_path / "other" / "privkey.pem").read_bytes() != keys["other"]
    assert (tmp_path / "guarded" / "cert.pem").read_bytes() == certs["guarded"]
