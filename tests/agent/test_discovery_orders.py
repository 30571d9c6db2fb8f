"""Discovery through the real protocol: an operator asks for a scan or a probe, the
agent takes the signed order, looks, and reports; the coordinator's inventory holds
what was found. Also drift: a deployed file replaced by hand reaches the coordinator."""

from __future__ import annotations

import json

import pytest
import trio

from certfleet.agent.daemon import Agent
from certfleet.shared import wire
from tests.agent.test_discovery_probe import make_chain, serve, server_context, tls_handler
from tests.support import admin_client, enroll_agent


async def _agent(coordinator, tmp_path, **options) -> tuple:
    api, _ = await admin_client(coordinator)
    enrolled = await enroll_agent(api, coordinator, tmp_path / "agent")
    agent = Agent(enrolled.paths, poll_wait=0, **options)
    return api, agent


class CountedReports:
    """Counts what the agent's discovery reports carry, on their way to the coordinator."""

    def __init__(self, agent: Agent) -> None:
        self.added: list[int] = []
        self.removed: list[int] = []
        call = agent.client.call

        async def counting(name, body=None, **kwargs):
            if name == "agent.discoveries":
                self.added.append(len(body.added))
                self.removed.append(len(body.removed))
            return await call(name, body, **kwargs)

        agent.client.call = counting


async def _run_order(agent: Agent, api, info: wire.DiscoveryScanInfo) -> wire.DiscoveryScanInfo:
    assert await agent.poll_once() == 1
    await agent.flush_outbox()
    return next(s for s in await api.call("discovery.scans") if s.order_id == info.order_id)


async def test_a_scan_order_reports_the_tree_then_only_what_changed(coordinator, tmp_path):
    tree = tmp_path / "etc-ssl"
    first = make_chain(tree / "site", "site", length=2, names=("site.example.test",))
    make_chain(tree / "other", "other", length=1, names=("other.example.test",))
    (tree / "notes.txt").write_text("not a certificate\n")
    api, agent = await _agent(coordinator, tmp_path, discovery_roots=[tree])
    agent_id = agent.config.agent_id
    reports = CountedReports(agent)

    done = await _run_order(agent, api, await api.call("discovery.scan", wire.DiscoveryScanRequest(agent_id=agent_id)))
    assert done.status == "succeeded" and "3 certificate(s) found, 3 new" in done.detail
    found = (await api.call("discovery.list", query={"agent_id": agent_id})).certificates
    assert sorted((f.path, f.position, f.has_private_key) for f in found) == [
        (str(tree / "other" / "other.pem"), 0, True),
        (str(tree / "site" / "site.pem"), 0, True), (str(tree / "site" / "site.pem"), 1, False)]
    assert {f.fingerprint_sha256 for f in found if f.path.endswith("site.pem")} == set(first.fingerprints)

    # Unchanged: a rescan sends no record at all.
    await _run_order(agent, api, await api.call("discovery.scan", wire.DiscoveryScanRequest(agent_id=agent_id)))
    assert (reports.added[-1], reports.removed[-1]) == (0, 0)

    # One file replaced: exactly its new record, and the old one gone.
    make_chain(tree / "other", "other", length=1, names=("other.example.test",))
    done = await _run_order(agent, api, await api.call("discovery.scan", wire.DiscoveryScanRequest(agent_id=agent_id)))
    assert (sum(reports.added[2:]), sum(reports.removed[2:])) == (1, 1), done.detail
    present = (await api.call("discovery.list", query={"agent_id": agent_id})).certificates
    assert len(present) == 3


async def test_a_scan_outside_the_agents_roots_is_refused_and_reports_nothing(coordinator, tmp_path):
    tree = tmp_path / "allowed"
    make_chain(tree, "inside", length=1)
    make_chain(tmp_path / "private", "outside", length=1)
    api, agent = await _agent(coordinator, tmp_path, discovery_roots=[tree])
    reports = CountedReports(agent)
    for roots in ([str(tmp_path / "private")], [str(tree / ".." / "private")]):
        done = await _run_order(agent, api, await api.call("discovery.scan", wire.DiscoveryScanRequest(
            agent_id=agent.config.agent_id, roots=roots)))
        assert done.status == "failed" and "not inside the roots" in done.detail
    assert reports.added == [] and (await api.call("discovery.list")).certificates == []


async def test_a_probe_order_reports_served_chains_and_never_leaves_its_ranges(coordinator, tmp_path, nursery):
    chain = make_chain(tmp_path / "tls", "served", length=3, names=("served.example.test",))
    inside = await nursery.start(serve, tls_handler(server_context(chain)), "127.0.0.1")
    outside = await nursery.start(serve, tls_handler(server_context(chain)), "127.0.0.2")
    api, agent = await _agent(coordinator, tmp_path, probe_ranges=["127.0.0.1/32"])
    agent_id = agent.config.agent_id

    done = await _run_order(agent, api, await api.call("discovery.probe", wire.DiscoveryProbeRequest(
        agent_id=agent_id, ranges=["127.0.0.1/32"], ports=[inside.port], server_names=["served.example.test"])))
    assert done.status == "succeeded" and "2 served TLS" in done.detail, done.detail
    assert f"127.0.0.1:{inside.port}#served.example.test: TLSv1.3 TLS_" in done.detail  # protocol and cipher
    found = (await api.call("discovery.list", query={"source": "network"})).certificates
    by_location = {(f.path, f.position): f.fingerprint_sha256 for f in found}
    for location in (f"127.0.0.1:{inside.port}", f"127.0.0.1:{inside.port}#served.example.test"):
        assert [by_location[(location, n)] for n in range(3)] == chain.fingerprints
    assert {f.format for f in found} == {"tls"}

    refused = await _run_order(agent, api, await api.call("discovery.probe", wire.DiscoveryProbeRequest(
        agent_id=agent_id, ranges=["127.0.0.0/30"], ports=[outside.port])))
    assert refused.status == "failed" and "not inside the ranges this agent may probe" in refused.detail
    assert outside.accepted == 0


async def test_an_agent_without_probe_ranges_probes_nothing(coordinator, tmp_path, nursery):
    chain = make_chain(tmp_path / "tls", "served", length=1)
    listener = await nursery.start(serve, tls_handler(server_context(chain)), "127.0.0.1")
    api, agent = await _agent(coordinator, tmp_path)
    done = await _run_order(agent, api, await api.call("discovery.probe", wire.DiscoveryProbeRequest(
        agent_id=agent.config.agent_id, ranges=["127.0.0.1/32"], ports=[listener.port])))
    assert done.status == "failed" and "none configured" in done.detail
    assert listener.accepted == 0


@pytest.mark.parametrize("request_body", [
    {"agent_id": "x", "ranges": ["10.0.0.1/8"], "ports": [443]},
    {"agent_id": "x", "ranges": ["not-a-range"], "ports": [443]},
    {"agent_id": "x", "ranges": ["10.0.0.0/8"], "ports": [0]},
    {"agent_id": "x", "ranges": [], "ports": [443]},
])
async def test_a_malformed_probe_request_is_refused_and_queues_nothing(coordinator, request_body):
    from tests.support import raw_client

    api, key = await admin_client(coordinator)
    async with raw_client(coordinator) as client:
        response = await client.post("/api/v1/discovery/probes", content=json.dumps(request_body),
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert await api.call("discovery.scans") == []


async def test_a_deployed_file_replaced_by_hand_is_reported_as_drift(coordinator, tmp_path):
    api, agent = await _agent(coordinator, tmp_path, discovery_roots=[tmp_path / "nothing-here"],
                              watch_changes=True)
    target = tmp_path / "deployed"
    await api.call("certificates.create", wire.CertificateCreate(
        common_name="drift.example.test", agent_id=agent.config.agent_id,
        target=wire.FileTarget(directory=str(target))))
    await agent.poll_once()
    await agent.flush_outbox()
    service = coordinator.coordinator

    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        replacement = make_chain(tmp_path / "by-hand", "by-hand", length=1)
        (target / "cert.pem").write_bytes(replacement.certificate_file.read_bytes())
        with trio.fail_after(60):
            while True:
                events = await service.database.transact(lambda tx: tx.all(
                    "SELECT event, detail FROM agent_events WHERE agent_id = ?", (agent.config.agent_id,)))
                if events:
                    break
                await trio.sleep(0.2)
        agent.stop()
    assert events[0]["event"] == "certificate-drift"
    assert str(target / "cert.pem") in events[0]["detail"] and replacement.fingerprints[0] in events[0]["detail"]
    audit = await service.database.transact(lambda tx: tx.all(
        "SELECT action FROM audit_events WHERE action = 'agent.report' AND resource_type = 'agent'"))
    assert audit


async def test_each_agent_is_scanned_once_per_interval_starting_a_day_after_enrollment(coordinator, tmp_path):
    service = coordinator.coordinator
    api, agent = await _agent(coordinator, tmp_path)
    assert await service.queue_scheduled_scans() == []  # enrolled just now

    real_clock = service._clock
    service._clock = lambda: real_clock() + service.scan_interval + 60
    try:
        assert await service.queue_scheduled_scans() == [agent.config.agent_id]
        assert await service.queue_scheduled_scans() == []  # its scan is recent now
        await api.call("agents.retire", agent_id=agent.config.agent_id)
        service._clock = lambda: real_clock() + 3 * service.scan_interval
        assert await service.queue_scheduled_scans() == []  # retired agents are left alone
    finally:
        service._clock = real_clock
    scans = await api.call("discovery.scans")
    assert [(s.kind, s.agent_id) for s in scans] == [("scan", agent.config.agent_id)]


async def test_a_scan_by_hand_reports_like_an_order(coordinator, tmp_path):
    from certfleet.agent.manual import ManualError, scan_by_hand

    tree = tmp_path / "roots"
    make_chain(tree, "by-hand", length=2)
    api, agent = await _agent(coordinator, tmp_path)
    looked = await scan_by_hand(agent.paths, roots=[], configured_roots=[tree], report=False)
    assert not looked["reported"] and len(looked["certificates"]) == 2
    assert (await api.call("discovery.list")).certificates == []  # --no-report sends nothing

    reported = await scan_by_hand(agent.paths, roots=[], configured_roots=[tree], report=True)
    assert reported["reported"] and "2 new or changed" in reported["summary"]
    assert len((await api.call("discovery.list")).certificates) == 2
    with pytest.raises(ManualError, match="not inside the roots"):
        await scan_by_hand(agent.paths, roots=["/etc"], configured_roots=[tree], report=False)
