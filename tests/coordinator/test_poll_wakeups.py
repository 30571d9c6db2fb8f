"""Long polls learn of new orders without re-reading the database per waiting poll:
whatever queues an order wakes the poll, and one periodic query per coordinator
finds orders queued elsewhere (another coordinator behind the load balancer)."""

from __future__ import annotations

import pytest
import trio

from certfleet.agent.client import CoordinatorError
from certfleet.coordinator.core import Call
from certfleet.coordinator.operations.renewal import SCHEDULER
from certfleet.coordinator.storage import Certificates
from certfleet.shared import wire
from tests.support import admin_client, enroll_agent


async def _deployed_certificate(coordinator, tmp_path, name: str):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / name, name=name)
    created = await api.call("certificates.create", wire.CertificateCreate(
        common_name=f"{name}.example.test", agent_id=agent.config.agent_id,
        target=wire.FileTarget(directory=str(tmp_path / f"{name}-files"))))
    await agent.poll_once()
    await agent.flush_outbox()
    return api, agent, created


async def test_an_order_queued_elsewhere_reaches_a_waiting_poll(coordinator, tmp_path, nursery):
    service = coordinator.coordinator
    api, agent, created = await _deployed_certificate(coordinator, tmp_path, "waiting")

    received: list[wire.WorkBatch] = []

    async def long_poll() -> None:
        received.append(await agent.client.call("agent.work", query={"wait": 30}))

    async with trio.open_nursery() as polls:
        polls.start_soon(long_poll)
        await trio.sleep(0.5)  # the poll is waiting (not a timing assertion: it would only be late)
        assert not received

        def queue_without_wakeup(tx):
            # What another coordinator does: its wake-up cannot reach this process.
            certificate = Certificates(tx).get(created.id)
            return service.request_issuance(tx, Call(SCHEDULER, operation="renewal.start"), certificate,
                                            kind="renewal")

        order_id = await service.database.transact(queue_without_wakeup)
        nursery.start_soon(service.wake_polls_for_queued_orders, 0.05)
        with trio.fail_after(20):  # far less than the poll's 30 s: only the sweep can deliver it
            while not received:
                await trio.sleep(0.05)
    assert [d.id for d in received[0].orders] == [order_id]


async def test_a_poll_yields_the_database_until_it_is_woken(coordinator, tmp_path, monkeypatch):
    """An agent's long poll authenticates and looks for orders as idle transactions
    (they wait behind any other when the database is busy); once woken it delivers an
    order, and that transaction, like any other agent request's, is not idle."""
    service = coordinator.coordinator
    _, agent, created = await _deployed_certificate(coordinator, tmp_path, "yielding")
    database = service.database
    transact = database.transact
    done: list[tuple[str, bool]] = []

    async def recording(fn, **kwargs):
        result = await transact(fn, **kwargs)
        done.append((fn.__qualname__.split(".")[1], kwargs.get("idle", False)))
        return result

    monkeypatch.setattr(database, "transact", recording)
    received: list[wire.WorkBatch] = []

    async def long_poll() -> None:
        received.append(await agent.client.call("agent.work", query={"wait": 30}))

    async with trio.open_nursery() as polls:
        polls.start_soon(long_poll)
        with trio.fail_after(20):
            while ("agent_work", True) not in done:  # the poll has looked and is waiting
                await trio.sleep(0.01)
        order_id = await transact(lambda tx: service.request_issuance(
            tx, Call(SCHEDULER, operation="renewal.start"), Certificates(tx).get(created.id), kind="renewal"))
        service.wake(agent.config.agent_id)
    assert [d.id for d in received[0].orders] == [order_id]
    assert done == [("authenticate_agent", True), ("agent_work", True), ("agent_work", False)]

    done.clear()
    with pytest.raises(CoordinatorError):
        await agent.client.call("agent.csr", wire.CsrSubmission(csr="not a CSR"), order_id=order_id)
    assert done[0] == ("authenticate_agent", False)


async def test_a_poll_that_times_out_answers_empty(coordinator, tmp_path):
    _, agent, _ = await _deployed_certificate(coordinator, tmp_path, "idle")
    batch = await agent.client.call("agent.work", query={"wait": 1})
    assert batch.orders == []


async def test_a_storm_of_due_renewals_starts_in_batches_each_once(coordinator, tmp_path):
    service = coordinator.coordinator
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    ids = []
    for n in range(5):
        created = await api.call("certificates.create", wire.CertificateCreate(
            common_name=f"storm{n}.example.test", agent_id=agent.config.agent_id,
            target=wire.FileTarget(directory=str(tmp_path / f"files{n}"))))
        ids.append(created.id)
    await agent.poll_once()
    await agent.flush_outbox()
    await service.database.transact(lambda tx: tx.execute(
        "UPDATE certificates SET renew_at = ?", (int(service.now()) - 1,)))

    started = await service.start_due_renewals(batch=2)  # three transactions: 2 + 2 + 1
    assert sorted(started) == sorted(ids)
    assert await service.start_due_renewals(batch=2) == []
    jobs = await service.database.transact(lambda tx: tx.all(
        "SELECT certificate_id, COUNT(*) AS n FROM jobs WHERE kind = 'renewal' GROUP BY certificate_id"))
    assert {row["certificate_id"]: row["n"] for row in jobs} == {i: 1 for i in ids}
    assert await agent.poll_once() == 5
