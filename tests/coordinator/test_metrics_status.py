"""/metrics parses and moves; liveness from polls; the status summary."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from certfleet.coordinator.metrics import liveness
from tests.pki_support import issue_through_agent
from tests.support import admin_client, enroll_agent, raw_client


async def _scrape(running, api_key) -> dict[tuple[str, tuple], float]:
    async with raw_client(running) as http:
        response = await http.get("/metrics", headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_parse_and_move_when_a_certificate_is_issued(coordinator, tmp_path):
    api, api_key = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    before = await _scrape(coordinator, api_key)
    assert before[("certfleet_issuance_seconds_count", ())] == 0
    info = await issue_through_agent(api, agent, ["m.example.test"], tmp_path / "t")
    after = await _scrape(coordinator, api_key)
    assert after[("certfleet_issuance_seconds_count", ())] == 1
    assert after[("certfleet_certificates", (("status", "deployed"),))] == 1
    assert after[("certfleet_deployments_total", (("outcome", "succeeded"),))] == 1
    assert after[("certfleet_jobs", (("kind", "issue"), ("state", "done")))] == 1
    assert after[("certfleet_work_orders", (("kind", "issue"), ("status", "succeeded")))] == 1
    assert after[("certfleet_agents", (("liveness", "online"),))] == 1
    remaining = after[("certfleet_certificate_expiry_seconds", (("certificate_id", info.id),))]
    assert 0 < remaining <= info.lifetime_seconds


async def test_metrics_need_a_key(coordinator):
    async with raw_client(coordinator) as http:
        assert (await http.get("/metrics")).status_code == 401


def test_liveness_from_polls():
    now = 10_000
    assert [liveness(None, now), liveness(now - 30, now), liveness(now - 200, now), liveness(now - 600, now)] == [
        "never-seen", "online", "late", "offline"]


async def test_status_names_what_needs_attention(coordinator, tmp_path):
    api, _ = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    await issue_through_agent(api, agent, ["ok.example.test"], tmp_path / "ok", lifetime_seconds=3600)
    failing = await issue_through_agent(api, agent, ["bad.example.test"], tmp_path / "ok/cert.pem")
    assert failing.status == "failed"
    coordinator.coordinator._clock = lambda: time.time() + 3000
    summary = await api.call("status")
    assert summary.certificates == {"deployed": 1, "failed": 1}
    assert [c.names for c in summary.expiring_soon] == [["ok.example.test"]]
    assert [c.id for c in summary.failing] == [failing.id]
    assert summary.agents == {"offline": 1} and summary.offline_agents[0].id == agent.config.agent_id
    assert (await api.call("agents.get", agent_id=agent.config.agent_id)).liveness == "offline"

