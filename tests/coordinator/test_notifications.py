"""Routing, deduplication, retries, dead letters and requeue, end to end through a
coordinator and a local webhook receiver."""

from __future__ import annotations

import time

import pytest

from certfleet.coordinator.operations.notifications import MAX_DELIVERY_ATTEMPTS
from certfleet.shared import wire
from tests.coordinator.test_job_retries import SimulatedClock, _reload_failing
from tests.coordinator.test_notify_channels import Receiver
from tests.pki_support import issue_through_agent
from tests.support import admin_client, enroll_agent

SECRET = "webhook-secret-0123456789"


@pytest.fixture
async def receiver(nursery) -> Receiver:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    app = Receiver()
    (app.url,) = await nursery.start(serve, app, config)
    return app


async def _channel(api, url, *, min_severity="info", name="hook"):
    return await api.call("channels.create", wire.ChannelCreate(
        name=name, kind="webhook", settings={"url": url}, secrets={"secret": SECRET}, min_severity=min_severity))


async def test_events_reach_channels_by_severity_and_secrets_stay_sealed(coordinator, tmp_path, receiver):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    everything = await _channel(api, receiver.url + "/all", min_severity="info")
    await _channel(api, receiver.url + "/critical", min_severity="critical", name="pager")
    assert everything.secret_names == ["secret"] and "secret" not in everything.settings
    info = await issue_through_agent(api, agent, ["n.example.test"], tmp_path / "t")
    await api.call("certificates.revoke", wire.RevokeRequest(reason="superseded"), certificate_id=info.id)
    await coordinator.coordinator.deliver_notifications()
    kinds = [(r.path, r.json()["kind"]) for r in receiver.requests]
    assert ("/all", "deployment.succeeded") in kinds and ("/all", "certificate.revoked") in kinds
    assert not any(path == "/critical" for path, _ in kinds)
    stored = await coordinator.coordinator.database.transact(lambda tx: tx.all("SELECT * FROM notification_channels"))
    assert SECRET not in str(stored)


async def test_a_failing_job_pages_once_not_once_per_retry(coordinator, tmp_path, receiver):
    from certfleet.agent.daemon import Agent

    clock = SimulatedClock()
    coordinator.coordinator._clock = clock
    api, _ = await admin_client(coordinator)
    enrolled = await enroll_agent(api, coordinator, tmp_path / "agent")
    agent = Agent(enrolled.paths, poll_wait=0, clock=clock)
    await _channel(api, receiver.url + "/pager", min_severity="critical", name="pager")
    await _channel(api, receiver.url + "/ops", min_severity="warning", name="ops")
    created = await api.call("certificates.create", wire.CertificateCreate(
        common_name="doomed.example.test", agent_id=agent.config.agent_id,
        target=wire.FileTarget(directory=str(tmp_path / "t"),
                               reload_command=_reload_failing(99, tmp_path / "count"))))
    for _ in range(10):
        await agent.poll_once()
        await agent.flush_outbox()
        (job,) = await api.call("jobs.list", query={"certificate_id": created.id})
        if job.state == "failed":
            break
        clock.now = job.next_attempt_at
        await coordinator.coordinator.advance_jobs()
    assert job.state == "failed"
    await coordinator.coordinator.deliver_notifications()
    pages = [r.json() for r in receiver.requests if r.path == "/pager"]
    assert [p["kind"] for p in pages] == ["issue.failed"]
    assert "reload failed" in pages[0]["summary"]
    ops = [r.json()["kind"] for r in receiver.requests if r.path == "/ops"]
    assert sorted(ops) == ["deployment.rolled-back", "issue.failed"]


async def test_undeliverable_notifications_are_dead_lettered_and_can_be_requeued(coordinator, tmp_path, receiver):
    clock = SimulatedClock()
    coordinator.coordinator._clock = clock
    api, _ = await admin_client(coordinator)
    receiver.status = 503
    channel = await _channel(api, receiver.url + "/flaky")
    sent = await api.call("channels.test", channel_id=channel.id)
    assert sent.status == "pending" and sent.attempts == 1 and "503" in sent.last_error
    for _ in range(MAX_DELIVERY_ATTEMPTS):
        clock.now += 7200
        await coordinator.coordinator.deliver_notifications()
    (dead,) = await api.call("notifications.list", query={"status": "dead"})
    assert dead.attempts == MAX_DELIVERY_ATTEMPTS and len(receiver.requests) == MAX_DELIVERY_ATTEMPTS
    receiver.status = 200
    requeued = await api.call("notifications.requeue", notification_id=dead.id)
    assert requeued.status == "pending"
    await coordinator.coordinator.deliver_notifications()
    (delivered,) = await api.call("notifications.list", query={"status": "delivered"})
    assert delivered.id == dead.id


@pytest.mark.parametrize("database_url", [None])
async def test_expiry_thresholds_notify_once_each(coordinator, tmp_path, receiver):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    await _channel(api, receiver.url + "/all", min_severity="warning")
    info = await issue_through_agent(api, agent, ["e.example.test"], tmp_path / "t", lifetime_seconds=3600)
    service = coordinator.coordinator
    # Hold renewal back so the certificate really runs towards expiry.
    await service.database.transact(lambda tx: tx.execute("UPDATE certificates SET renew_at = NULL"))
    async def expiring_queued() -> int:
        rows = await service.database.transact(lambda tx: tx.all("SELECT event FROM notifications"))
        return sum('"certificate.expiring"' in r["event"] for r in rows)

    service._clock = lambda: info.not_after - 0.2 * 3600
    await service.scan_for_alerts()
    await service.scan_for_alerts()
    assert await expiring_queued() == 1
    service._clock = lambda: info.not_after - 0.05 * 3600
    await service.scan_for_alerts()
    assert await expiring_queued() == 2
    await service.deliver_notifications()
    severities = [r.json()["severity"] for r in receiver.requests if r.json()["kind"] == "certificate.expiring"]
    assert severities == ["warning", "critical"]


@pytest.mark.parametrize("database_url", [None])
async def test_an_offline_agent_with_certificates_near_expiry_raises_an_alert(coordinator, tmp_path, receiver):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    await _channel(api, receiver.url + "/pager", min_severity="critical")
    info = await issue_through_agent(api, agent, ["o.example.test"], tmp_path / "t", lifetime_seconds=3600)
    coordinator.coordinator._clock = lambda: time.time() + 0.7 * 3600
    await coordinator.coordinator.scan_for_alerts()
    await coordinator.coordinator.deliver_notifications()
    kinds = [r.json()["kind"] for r in receiver.requests]
    assert "agent.offline" in kinds and info.id
