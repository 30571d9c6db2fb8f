"""A one-hour certificate kept alive for a simulated day.

The coordinator and the agent share one simulated wall clock, moved forward by the
test: no sleeping, and every renewal is driven through the real protocol (signed
orders, CSR, deployment, result).
"""

from __future__ import annotations

import time

from cryptography import x509

from certfleet.shared import wire
from tests.support import admin_client, enroll_agent


class SimulatedClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_one_hour_certificate_renews_all_day_without_expiring(coordinator, tmp_path):
    from certfleet.agent.daemon import Agent

    clock = SimulatedClock()
    service = coordinator.coordinator
    service._clock = clock
    api, _ = await admin_client(coordinator)
    enrolled = await enroll_agent(api, coordinator, tmp_path / "agent")
    agent = Agent(enrolled.paths, poll_wait=0, clock=clock)
    target = tmp_path / "target"
    created = await api.call("certificates.create", wire.CertificateCreate(
        common_name="short.example.test", agent_id=agent.config.agent_id, lifetime_seconds=3600,
        target=wire.FileTarget(directory=str(target))))

    async def agent_round() -> None:
        await agent.poll_once()
        await agent.flush_outbox()

    await agent_round()
    serials, keys, renewals = set(), set(), 0
    end = clock.now + 86400
    while clock.now < end:
        info = await api.call("certificates.get", certificate_id=created.id)
        assert info.status == "deployed", info
        leaf = x509.load_pem_x509_certificate((target / "cert.pem").read_bytes())
        assert leaf.not_valid_before_utc.timestamp() <= clock.now < leaf.not_valid_after_utc.timestamp(), \
            "the served certificate expired"
        serials.add(leaf.serial_number)
        keys.add((target / "privkey.pem").read_bytes())
        assert info.renew_at is not None and clock.now < info.renew_at < leaf.not_valid_after_utc.timestamp()
        clock.now += 300  # five minutes pass
        started = await service.start_due_renewals()
        assert await service.start_due_renewals() == [], "a renewal was started twice"
        if started:
            renewals += 1
            await agent_round()
    # The last round may have renewed after the final look: count what is deployed now.
    serials.add(x509.load_pem_x509_certificate((target / "cert.pem").read_bytes()).serial_number)
    keys.add((target / "privkey.pem").read_bytes())
    assert renewals >= 30  # every ~40 minutes for 24 hours
    assert len(serials) == renewals + 1 and len(keys) == renewals + 1  # a new key each time
    orders = await service.database.transact(lambda tx: tx.all(
        "SELECT status, COUNT(*) AS n FROM work_orders GROUP BY status"))
    assert {r["status"]: r["n"] for r in orders} == {"succeeded": renewals + 1}


async def test_a_policy_can_reuse_the_key(coordinator, tmp_path):
    from certfleet.agent.daemon import Agent

    clock = SimulatedClock()
    service = coordinator.coordinator
    service._clock = clock
    api, _ = await admin_client(coordinator)
    enrolled = await enroll_agent(api, coordinator, tmp_path / "agent")
    agent = Agent(enrolled.paths, poll_wait=0, clock=clock)
    await api.call("renewal-policies.create", wire.RenewalPolicyCreate(name="keep-key", fraction=0.5, reuse_key=True))
    target = tmp_path / "target"
    created = await api.call("certificates.create", wire.CertificateCreate(
        common_name="steady.example.test", agent_id=agent.config.agent_id, lifetime_seconds=3600,
        renewal_policy="keep-key", target=wire.FileTarget(directory=str(target))))
    await agent.poll_once()
    await agent.flush_outbox()
    first_key, first_cert = (target / "privkey.pem").read_bytes(), (target / "cert.pem").read_bytes()
    info = await api.call("certificates.get", certificate_id=created.id)
    clock.now = info.renew_at + 1
    assert await service.start_due_renewals() == [created.id]
    await agent.poll_once()
    await agent.flush_outbox()
    assert (target / "cert.pem").read_bytes() != first_cert
    assert (target / "privkey.pem").read_bytes() == first_key
