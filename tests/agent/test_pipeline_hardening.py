"""What a hostile or unlucky target cannot do to the agent: hang it on a FIFO, leave a
key readable by others, or crash it with a setting that names one file twice."""

from __future__ import annotations

import os
import stat

import msgspec
import pytest
import trio

from certfleet.agent.deployers import Bundle, DeployError, Deployers
from certfleet.agent.secrets import Secrets
from certfleet.agent.state import AgentState
from certfleet.shared import wire


def _bundle() -> Bundle:
    return Bundle(b"-----CERT-----\n", b"", b"-----KEY-----\n", "0" * 64)


def _deployers(tmp_path) -> Deployers:
    return Deployers(AgentState(tmp_path / "state.db"), Secrets(tmp_path / "secrets.json"))


async def test_a_fifo_at_a_target_path_fails_the_deployment_instead_of_hanging_the_agent(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    os.mkfifo(site / "cert.pem")
    target = wire.NginxTarget(certificate_path=str(site / "cert.pem"), key_path=str(site / "key.pem"),
                              test_command=["/bin/true"], reload_command=["/bin/true"])
    with trio.fail_after(10):
        with pytest.raises(DeployError, match="not a regular file"):
            await _deployers(tmp_path).deploy("ord_fifo", target, _bundle(), server_name="www.example.test")
    assert stat.S_ISFIFO((site / "cert.pem").lstat().st_mode) and not (site / "key.pem").exists()


async def test_a_key_written_over_a_world_readable_file_is_not_world_readable(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "key.pem").write_text("old certificate, not a key\n")
    (site / "key.pem").chmod(0o644)
    target = wire.NginxTarget(certificate_path=str(site / "cert.pem"), key_path=str(site / "key.pem"),
                              test_command=["/bin/true"], reload_command=["/bin/true"])
    await _deployers(tmp_path).deploy("ord_key", target, _bundle(), server_name="www.example.test")
    assert stat.S_IMODE((site / "key.pem").stat().st_mode) == 0o640
    assert stat.S_IMODE((site / "cert.pem").stat().st_mode) == 0o644


def test_two_spellings_of_one_file_are_refused_in_the_settings():
    with pytest.raises(msgspec.ValidationError, match="trailing"):
        wire.decode(b'{"kind": "nginx", "certificate_path": "/x/site.pem", "key_path": "/x/site.pem/"}',
                    wire.Target)


async def test_an_unexpected_error_fails_the_order_and_the_agent_goes_on(coordinator, tmp_path, monkeypatch):
    from tests.support import admin_client, enroll_agent

    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    created = await api.call("certificates.create", wire.CertificateCreate(
        common_name="bug.example.test", agent_id=agent.config.agent_id,
        target=wire.FileTarget(directory=str(tmp_path / "t"))))

    async def broken(*args, **kwargs):
        raise RuntimeError("a bug in a deployer")

    monkeypatch.setattr(Deployers, "deploy", broken)
    assert await agent.poll_once() == 1
    await agent.flush_outbox()
    info = await api.call("certificates.get", certificate_id=created.id)
    assert info.status == "failed" and "RuntimeError: a bug in a deployer" in info.last_error
    assert (await api.call("jobs.list", query={"certificate_id": created.id}))[0].state == "failed"
    assert await agent.poll_once() == 0  # the agent is still polling



async def test_old_keys_and_snapshots_are_deleted_once_a_newer_certificate_is_deployed(coordinator, tmp_path):
    from certfleet.agent.daemon import Agent
    from tests.coordinator.test_renewal_cycle import SimulatedClock
    from tests.support import admin_client, enroll_agent

    clock = SimulatedClock()
    service = coordinator.coordinator
    service._clock = clock
    api, _ = await admin_client(coordinator)
    enrolled = await enroll_agent(api, coordinator, tmp_path / "agent")
    agent = Agent(enrolled.paths, poll_wait=0, clock=clock)
    created = await api.call("certificates.create", wire.CertificateCreate(
        common_name="keys.example.test", agent_id=agent.config.agent_id, lifetime_seconds=3600,
        target=wire.FileTarget(directory=str(tmp_path / "t"))))
    await agent.poll_once()
    await agent.flush_outbox()
    (first,) = [row["id"] for row in agent.state.db.query("SELECT id FROM orders")]
    keys = agent.executor.keystore
    assert keys.path_for(first).exists() and agent.state.snapshots(first)

    clock.now = (await api.call("certificates.get", certificate_id=created.id)).renew_at + 1
    assert await service.start_due_renewals() == [created.id]
    await agent.poll_once()
    await agent.flush_outbox()
    (second,) = [row["id"] for row in agent.state.db.query("SELECT id FROM orders WHERE id != ?", [first])]
    assert not keys.path_for(first).exists() and agent.state.snapshots(first) is None
    assert keys.path_for(second).exists() and agent.state.snapshots(second)


async def test_a_result_refused_for_now_stays_in_the_outbox(coordinator, tmp_path, monkeypatch):
    """401 (a request token refused for its time), 429: the result is sent again later,
    not dropped; a 409 (the order is closed) is final."""
    from certfleet.agent.client import CoordinatorError
    from tests.support import admin_client, enroll_agent

    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    await api.call("certificates.create", wire.CertificateCreate(
        common_name="later.example.test", agent_id=agent.config.agent_id,
        target=wire.FileTarget(directory=str(tmp_path / "t"))))
    await agent.poll_once()
    real_call = agent.client.call
    for status, stays in ((401, True), (429, True), (409, False)):
        async def refuse(name, *args, status=status, **kwargs):
            if name == "agent.result":
                raise CoordinatorError(status, {"type": "urn:test", "title": "refused"})
            return await real_call(name, *args, **kwargs)

        monkeypatch.setattr(agent.client, "call", refuse)
        agent.state.db.execute("UPDATE outbox SET next_attempt_at = 0, acknowledged_at = NULL")
        await agent.flush_outbox()
        assert bool(agent.state.outbox_pending()) is stays, status
