"""The agent refuses work orders it cannot trust, touching no file, and says so.

The orders are planted the way an attacker with write access to the coordinator's
database would plant them: straight into the ``work_orders`` table. Everything else
is real: the coordinator over HTTPS, the agent's signed requests, its state database.
"""

from __future__ import annotations

import logging
import time

import pytest

from certfleet.coordinator.storage import WorkOrders
from certfleet.shared import wire
from certfleet.shared.workorder import OrderKind, sign_work_order
from tests.support import admin_client, enroll_agent


async def _plant(running, *, order_id, agent_id, certificate_id, token):
    def insert(tx):
        WorkOrders(tx).insert(id=order_id, agent_id=agent_id, certificate_id=certificate_id,
                              kind="issue", token=token, expires_at=int(time.time()) + 3600,
                              now=int(time.time()))

    await running.coordinator.database.transact(insert)


async def _setup(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    target = tmp_path / "target"
    created = await api.call("certificates.create", wire.CertificateCreate(
        common_name="app.example.test", agent_id=agent.config.agent_id,
        target=wire.FileTarget(directory=str(target))))
    order = await coordinator.coordinator.database.transact(lambda tx: tx.one(
        "SELECT * FROM work_orders WHERE certificate_id = ?", (created.id,)))
    return api, agent, target, created, order


async def _agent_events(running, agent_id):
    return await running.coordinator.database.transact(lambda tx: tx.all(
        "SELECT * FROM agent_events WHERE agent_id = ? ORDER BY id", (agent_id,)))


def _flip_one_byte(token: str) -> str:
    header, payload, signature = token.split(".")
    middle = len(payload) // 2
    flipped = "A" if payload[middle] != "A" else "B"
    return ".".join([header, payload[:middle] + flipped + payload[middle + 1:], signature])


@pytest.mark.parametrize("attack", ["tampered", "other-agent", "expired"])
async def test_untrusted_order_is_refused_reported_and_touches_nothing(coordinator, tmp_path, caplog, attack):
    api, agent, target, created, order = await _setup(coordinator, tmp_path)
    keys = coordinator.coordinator.keys
    # Take the legitimate order out of the queue so only the planted one is delivered.
    await coordinator.coordinator.database.transact(
        lambda tx: WorkOrders(tx).set_status(order["id"], "failed", int(time.time())))
    payload = wire.IssueOrder(certificate_id=created.id, names=["app.example.test"],
                              key_type=created.key_type, target=created.target)
    if attack == "tampered":
        token = _flip_one_byte(order["token"])
    elif attack == "other-agent":
        token = sign_work_order(key=keys.work_order_key, order_id="ord_forother", agent_id="agt_someoneelse",
                                kind=OrderKind.ISSUE, payload=payload, now=int(time.time()), ttl=3600)
    else:
        token = sign_work_order(key=keys.work_order_key, order_id="ord_expired", agent_id=agent.config.agent_id,
                                kind=OrderKind.ISSUE, payload=payload, now=int(time.time()) - 7200, ttl=3600)
    await _plant(coordinator, order_id="ord_planted", agent_id=agent.config.agent_id,
                 certificate_id=created.id, token=token)

    with caplog.at_level(logging.WARNING, logger="certfleet.agent.executor"):
        assert await agent.poll_once() == 1
    await agent.flush_outbox()

    assert not target.exists() or list(target.iterdir()) == []
    assert not (agent.paths.keys).exists() or list(agent.paths.keys.iterdir()) == []
    expected_reason = {"tampered": "signature", "other-agent": "audience", "expired": "expired"}[attack]
    assert any("refused work order ord_planted" in r.getMessage() and expected_reason in r.getMessage()
               for r in caplog.records)
    events = await _agent_events(coordinator, agent.config.agent_id)
    assert [(e["order_id"], e["reason"]) for e in events] == [("ord_planted", expected_reason)]
    planted = await coordinator.coordinator.database.transact(
        lambda tx: tx.one("SELECT status FROM work_orders WHERE id = 'ord_planted'"))
    assert planted["status"] == "refused"
    # Delivered again, the same token is not re-reported.
    assert await agent.poll_once() == 0


async def test_replayed_order_is_refused_after_execution(coordinator, tmp_path, caplog):
    api, agent, target, created, order = await _setup(coordinator, tmp_path)
    assert await agent.poll_once() == 1
    await agent.flush_outbox()
    info = await api.call("certificates.get", certificate_id=created.id)
    assert info.status == "deployed"
    deployed = {p.name: p.read_bytes() for p in target.iterdir()}
    mtimes = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}

    await _plant(coordinator, order_id="ord_replay", agent_id=agent.config.agent_id,
                 certificate_id=created.id, token=order["token"])
    with caplog.at_level(logging.WARNING, logger="certfleet.agent.executor"):
        assert await agent.poll_once() == 1
    await agent.flush_outbox()

    assert {p.name: p.read_bytes() for p in target.iterdir()} == deployed
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == mtimes
    assert any("replay" in r.getMessage() for r in caplog.records)
    events = await _agent_events(coordinator, agent.config.agent_id)
    assert [(e["order_id"], e["reason"]) for e in events] == [("ord_replay", "replay")]


async def test_an_order_coming_back_right_after_its_result_is_not_reported_as_a_replay(coordinator, tmp_path):
    """With several coordinators, a poll can race the result it follows: the same order,
    under its own id, just after its result was acknowledged. The agent does not run it
    again, and does not report it as an attack; later, the same thing is a replay."""
    api, agent, target, created, order = await _setup(coordinator, tmp_path)
    assert await agent.poll_once() == 1
    await agent.flush_outbox()
    mtimes = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}

    async def deliver_again() -> None:
        await coordinator.coordinator.database.transact(lambda tx: tx.execute(
            "UPDATE work_orders SET status = 'dispatched' WHERE id = ?", (order["id"],)))
        assert await agent.poll_once() == 1
        await agent.flush_outbox()

    await deliver_again()
    assert await _agent_events(coordinator, agent.config.agent_id) == []
    # Long after the acknowledgement, no race explains it any more.
    agent.state.db.execute("UPDATE outbox SET acknowledged_at = acknowledged_at - 600")
    await deliver_again()
    events = await _agent_events(coordinator, agent.config.agent_id)
    assert [(e["order_id"], e["reason"]) for e in events] == [(order["id"], "replay")]
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == mtimes
