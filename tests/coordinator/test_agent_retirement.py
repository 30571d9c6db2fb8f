"""Retiring an agent: its identity is refused, its work cancelled, its certificates
leave the schedule, and the agent itself stops (exit 0, so no service manager
restarts it)."""

from __future__ import annotations

import json

import pytest
import trio

from certfleet.agent.client import CoordinatorError
from certfleet.coordinator.client import ApiError
from certfleet.shared import wire
from tests.support import admin_client, enroll_agent, key_with_roles


async def _agent_with_certificate(coordinator, tmp_path, name="retiring"):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / name, name=name)
    created = await api.call("certificates.create", wire.CertificateCreate(
        common_name=f"{name}.example.test", agent_id=agent.config.agent_id,
        target=wire.FileTarget(directory=str(tmp_path / f"{name}-files"))))
    await agent.poll_once()
    await agent.flush_outbox()
    return api, agent, created


async def test_retiring_refuses_the_identity_and_cancels_its_work(coordinator, tmp_path):
    service = coordinator.coordinator
    api, agent, deployed = await _agent_with_certificate(coordinator, tmp_path)
    agent_id = agent.config.agent_id
    # Work in flight: a second certificate whose order the agent has not taken yet.
    pending = await api.call("certificates.create", wire.CertificateCreate(
        common_name="pending.example.test", agent_id=agent_id,
        target=wire.FileTarget(directory=str(tmp_path / "pending-files"))))

    retired = await api.call("agents.retire", agent_id=agent_id)
    assert retired.liveness == "retired" and retired.retired_at is not None

    with pytest.raises(CoordinatorError) as refused:
        await agent.client.call("agent.work", query={"wait": 0})
    assert (refused.value.status, refused.value.slug) == (410, "agent-retired")

    rows = await service.database.transact(lambda tx: (
        tx.all("SELECT status FROM work_orders WHERE certificate_id = ?", (pending.id,)),
        tx.all("SELECT state FROM jobs WHERE certificate_id = ?", (pending.id,)),
        tx.all("SELECT renew_at FROM certificates WHERE agent_id = ?", (agent_id,)),
        tx.all("SELECT details FROM audit_events WHERE action = 'agents.retire' AND resource_id = ?",
               (agent_id,))))
    orders, jobs, schedule, audit = rows
    assert [o["status"] for o in orders] == ["cancelled"]
    assert [j["state"] for j in jobs] == ["cancelled"]
    assert [s["renew_at"] for s in schedule] == [None, None]
    assert len(audit) == 1
    assert json.loads(audit[0]["details"]) == {"name": "retiring", "jobs_cancelled": 1, "orders_withdrawn": 0,
                                               "certificates_unscheduled": 1}

    # A year passes: whatever renewal time the certificates had, nothing renews them.
    real_clock = service._clock
    service._clock = lambda: real_clock() + 365 * 86400
    try:
        assert await service.start_due_renewals() == []
    finally:
        service._clock = real_clock

    with pytest.raises(ApiError) as twice:
        await api.call("agents.retire", agent_id=agent_id)
    assert twice.value.status == 409
    listed = {a.id: a.liveness for a in await api.call("agents.list")}
    assert listed[agent_id] == "retired"


async def test_clearing_retirement_in_the_database_does_not_bring_the_agent_back(coordinator, tmp_path):
    service = coordinator.coordinator
    api, agent, _ = await _agent_with_certificate(coordinator, tmp_path)
    await api.call("agents.retire", agent_id=agent.config.agent_id)
    await service.database.transact(lambda tx: tx.execute(
        "UPDATE agents SET retired_at = NULL WHERE id = ?", (agent.config.agent_id,)))
    with pytest.raises(CoordinatorError) as refused:
        await agent.client.call("agent.work", query={"wait": 0})
    assert refused.value.status == 401  # the row's seal no longer matches: the key is not honoured


async def test_only_holders_of_agent_retire_may_retire(coordinator, tmp_path):
    api, agent, _ = await _agent_with_certificate(coordinator, tmp_path)
    viewer, _ = await key_with_roles(api, coordinator, "viewer")
    with pytest.raises(ApiError) as denied:
        await viewer.call("agents.retire", agent_id=agent.config.agent_id)
    assert denied.value.status == 403
    with pytest.raises(ApiError) as unknown:
        await api.call("agents.retire", agent_id="agt_doesnotexist")
    assert unknown.value.status == 404
    assert (await api.call("agents.get", agent_id=agent.config.agent_id)).liveness != "retired"


async def _stops_after(agent, stop, *, within: float) -> None:
    """Run the agent (its long poll waiting 25 s), call ``stop`` once it waits, and
    require ``run`` to return within ``within`` seconds."""
    agent.poll_wait = 25
    async with trio.open_nursery() as nursery:
        stopped = trio.Event()

        async def run() -> None:
            await agent.run()
            stopped.set()

        nursery.start_soon(run)
        await trio.sleep(0.5)  # the long poll is waiting (were it not, the test would only be quicker)
        await stop()
        with trio.fail_after(within):  # well inside the 25 s poll
            await stopped.wait()


async def test_a_waiting_agent_learns_of_its_retirement_and_stops(coordinator, tmp_path):
    api, agent, _ = await _agent_with_certificate(coordinator, tmp_path)

    async def retire() -> None:
        await api.call("agents.retire", agent_id=agent.config.agent_id)

    await _stops_after(agent, retire, within=15)
    assert agent.retired


async def test_stop_abandons_a_waiting_poll(coordinator, tmp_path):
    _, agent, _ = await _agent_with_certificate(coordinator, tmp_path)

    async def stop() -> None:
        agent.stop()

    await _stops_after(agent, stop, within=10)
    assert not agent.retired


async def test_an_agent_labels_itself_at_enrollment_and_the_token_has_the_last_word(coordinator, tmp_path):
    from certfleet.agent.config import AgentPaths
    from certfleet.agent.enroll import enroll
    from tests.support import ca_fingerprint

    api, _ = await admin_client(coordinator)
    token = await api.call("agents.enrollment-token.create", wire.EnrollmentTokenCreate(
        uses=2, labels={"site": "lab-1"}))
    enrolled = await enroll(AgentPaths(tmp_path / "a"), coordinator=coordinator.url, token=token.token,
                            ca_fingerprint=ca_fingerprint(coordinator), name="labelled",
                            labels={"role": "web", "site": "claimed-by-the-host"})
    info = await api.call("agents.get", agent_id=enrolled.agent_id)
    assert info.labels == {"role": "web", "site": "lab-1"}

    from tests.support import raw_client

    async with raw_client(coordinator) as client:
        for hostile in ({"Role": "web"}, {"role": "web prod"}, {f"k{n}": "v" for n in range(33)}):
            response = await client.post("/api/v1/agent/enroll", json={
                "token": token.token, "name": "x", "public_key": "A" * 43, "labels": hostile})
            assert response.status_code == 400, (hostile, response.text)
    uses = await coordinator.coordinator.database.transact(lambda tx: tx.one(
        "SELECT uses_left FROM enrollment_tokens WHERE id = ?", (token.id,)))
    assert uses["uses_left"] == 1  # the refused requests spent nothing
