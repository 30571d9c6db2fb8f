"""Named deployment targets: declared on the coordinator, checked and deployed by the
agent, with per-target counters (API and Prometheus) from the agent's reports."""

from __future__ import annotations

import sys

import pytest

from certfleet.coordinator.client import ApiError
from certfleet.shared import wire
from tests.coordinator.test_metrics_status import _scrape
from tests.support import admin_client, enroll_agent


async def _scene(coordinator, tmp_path):
    from certfleet.agent.daemon import Agent

    api, api_key = await admin_client(coordinator)
    enrolled = await enroll_agent(api, coordinator, tmp_path / "agent")
    return api, api_key, Agent(enrolled.paths, poll_wait=0)


async def _round(agent) -> None:
    await agent.poll_once()
    await agent.flush_outbox()


def _script(path, body: str) -> list[str]:
    """A command for a target: a script file (target commands are plain argv words)."""
    path.write_text(f"#!{sys.executable}\nimport pathlib, sys\n{body}")
    path.chmod(0o755)
    return [str(path)]


async def test_a_named_target_counts_deployments_and_rollbacks(coordinator, tmp_path):
    api, api_key, agent = await _scene(coordinator, tmp_path)
    switch = tmp_path / "reload-fails"
    reload = _script(tmp_path / "reload", f"sys.exit(3 if pathlib.Path({str(switch)!r}).exists() else 0)\n")
    target = await api.call("targets.create", wire.TargetCreate(
        name="web-files", agent_id=agent.config.agent_id,
        settings=wire.FileTarget(directory=str(tmp_path / "web"), reload_command=reload)))
    assert target.kind == "file" and target.counters == wire.TargetCounters()

    first = await api.call("certificates.create", wire.CertificateCreate(
        common_name="web.example.test", agent_id=agent.config.agent_id, target_id="web-files"))
    await _round(agent)
    assert (await api.call("certificates.get", certificate_id=first.id)).status == "deployed"
    switch.write_text("")
    second = await api.call("certificates.create", wire.CertificateCreate(
        common_name="web.example.test", agent_id=agent.config.agent_id, target_id=target.id))
    await _round(agent)
    failed = await api.call("certificates.get", certificate_id=second.id)
    assert failed.status == "failed" and "restored" in failed.last_error and failed.target_id == target.id

    shown = await api.call("targets.get", target_id="web-files")
    assert shown.counters == wire.TargetCounters(attempts=2, reload_failures=1, rollbacks=1)
    assert shown.last_outcome == "rolled-back" and "reload failed" in shown.last_detail
    assert shown.certificates == sorted([first.id, second.id])
    assert [t.name for t in await api.call("targets.list", query={"agent_id": agent.config.agent_id})] == \
        ["web-files"]

    samples = await _scrape(coordinator, api_key)

    def sample(event: str) -> float:
        labels = tuple(sorted({"target": "web-files", "kind": "file", "event": event}.items()))
        return samples[("certfleet_target_deployments_total", labels)]

    assert (sample("attempts"), sample("reload_failures"), sample("rollbacks"), sample("skipped")) == (2, 1, 1, 0)


async def test_reported_skips_and_failed_steps_are_counted(coordinator, tmp_path):
    """The counters follow what the agent reports for each attempt."""
    from certfleet.shared.pki import KeyType, build_csr, generate_private_key

    api, _, agent = await _scene(coordinator, tmp_path)
    await api.call("targets.create", wire.TargetCreate(
        name="edge", agent_id=agent.config.agent_id, settings=wire.NginxTarget(
            certificate_path=str(tmp_path / "edge.pem"), key_path=str(tmp_path / "edge.key"))))
    facts = [wire.DeploymentFacts(kind="nginx", skipped=True),
             wire.DeploymentFacts(kind="nginx", failed_step="config-test", rolled_back=True),
             wire.DeploymentFacts(kind="nginx", failed_step="verify", rolled_back=True, served_fingerprint="a" * 64)]
    for fact in facts:
        created = await api.call("certificates.create", wire.CertificateCreate(
            common_name="edge.example.test", agent_id=agent.config.agent_id, target_id="edge"))
        order = (await agent.client.call("agent.work", query={"wait": 0})).orders[0]
        csr = build_csr(generate_private_key(KeyType.EC_P256), created.names).decode()
        await agent.client.call("agent.csr", wire.CsrSubmission(csr=csr), order_id=order.id)
        status = "succeeded" if fact.failed_step is None else "failed"
        await agent.client.call("agent.result", wire.OrderResult(status=status, detail="reported", deployment=fact),
                                order_id=order.id)
    edge = await api.call("targets.get", target_id="edge")
    assert edge.counters == wire.TargetCounters(attempts=3, skipped=1, config_test_failures=1,
                                                verification_failures=1, rollbacks=2)
    assert edge.last_served_fingerprint == "a" * 64 and edge.last_outcome == "rolled-back"


async def test_targets_test_runs_the_config_test_on_the_agent_and_writes_nothing(coordinator, tmp_path):
    api, _, agent = await _scene(coordinator, tmp_path)
    verdict = tmp_path / "config-broken"
    tester = _script(tmp_path / "config-test", f"broken = pathlib.Path({str(verdict)!r}).exists()\n"
                                               "print('syntax error in site.conf' if broken else 'ok', file=sys.stderr)\n"
                                               "sys.exit(1 if broken else 0)\n")
    await api.call("targets.create", wire.TargetCreate(
        name="site", agent_id=agent.config.agent_id, settings=wire.NginxTarget(
            certificate_path=str(tmp_path / "site" / "cert.pem"), key_path=str(tmp_path / "site" / "key.pem"),
            test_command=tester, reload_command=_script(tmp_path / "reload", "sys.exit(0)\n"))))
    queued = await api.call("targets.test", target_id="site")
    assert queued.last_check_status == "queued"
    await _round(agent)
    passed = await api.call("targets.get", target_id="site")
    assert passed.last_check_status == "passed" and "config test passed" in passed.last_check_detail

    verdict.write_text("")
    await api.call("targets.test", target_id="site")
    await _round(agent)
    failed = await api.call("targets.get", target_id="site")
    assert failed.last_check_status == "failed" and "syntax error in site.conf" in failed.last_check_detail
    assert not (tmp_path / "site").exists(), "a check must not write anything"
    assert failed.counters == wire.TargetCounters(), "a check is not a deployment"


async def test_bad_target_settings_are_refused_and_change_nothing(coordinator, tmp_path):
    api, _, agent = await _scene(coordinator, tmp_path)
    other = await enroll_agent(api, coordinator, tmp_path / "other", name="other-agent")
    await api.call("targets.create", wire.TargetCreate(
        name="mine", agent_id=agent.config.agent_id, settings=wire.FileTarget(directory=str(tmp_path / "m"))))

    async def refused(status: int, slug: str, call):
        with pytest.raises(ApiError) as caught:
            await call
        assert caught.value.status == status and slug in caught.value.problem["type"], caught.value

    await refused(409, "target-exists", api.call("targets.create", wire.TargetCreate(
        name="mine", agent_id=agent.config.agent_id, settings=wire.FileTarget(directory=str(tmp_path / "m2")))))
    await refused(422, "unknown-agent", api.call("targets.create", wire.TargetCreate(
        name="nobody", agent_id="agt_nobody", settings=wire.FileTarget(directory=str(tmp_path / "n")))))
    await refused(422, "target-agent-mismatch", api.call("certificates.create", wire.CertificateCreate(
        common_name="x.example.test", agent_id=other.config.agent_id, target_id="mine")))
    await refused(422, "unknown-target", api.call("certificates.create", wire.CertificateCreate(
        common_name="x.example.test", agent_id=agent.config.agent_id, target_id="nowhere")))
    await refused(404, "not-found", api.call("targets.get", target_id="nowhere"))
    assert [t.name for t in await api.call("targets.list")] == ["mine"]
    assert await api.call("certificates.list") == []


@pytest.mark.parametrize("settings", [
    {"kind": "nginx", "certificate_path": "/etc/nginx/a.pem; rm -rf /", "key_path": "/etc/nginx/a.key"},
    {"kind": "nginx", "certificate_path": "/etc/nginx/a.pem", "key_path": "/etc/nginx/$(id).key"},
    {"kind": "apache", "certificate_path": "/a.pem", "key_path": "/a.key", "reload_command": ["apachectl", "`id`"]},
    {"kind": "haproxy", "certificate_path": "/etc/haproxy/site.pem", "master_socket": "/run/haproxy|x"},
    {"kind": "haproxy", "certificate_path": "/etc/haproxy/site.pem", "master_socket": "/run/haproxy.sock"},
    {"kind": "keystore", "path": "/opt/app/keystore.jks", "password_secret": "prod store"},
    {"kind": "postfix", "certificate_path": "/a.pem", "key_path": "/a.pem"},
    {"kind": "nginx", "certificate_path": "relative.pem", "key_path": "/a.key"},
    {"kind": "nginx", "certificate_path": "/a.pem", "key_path": "/a.key", "verify": {"port": 443, "host": "a b"}},
    {"kind": "kubernetes-secret", "namespace": "Prod", "name": "web-tls"},
    {"kind": "traefik", "certificate_path": "/a.pem", "key_path": "/a.key", "dynamic_config_path": "/d.json"},
], ids=lambda s: s["kind"])
async def test_hostile_target_settings_are_a_clear_400(coordinator, tmp_path, settings):
    from tests.support import raw_client

    api, api_key, agent = await _scene(coordinator, tmp_path)
    async with raw_client(coordinator) as http:
        response = await http.post("/api/v1/targets", headers={"Authorization": f"Bearer {api_key}"}, json={
            "name": "hostile", "agent_id": agent.config.agent_id, "settings": settings})
    assert response.status_code == 400, response.text
    assert response.json()["type"].endswith("invalid-body") and response.json()["detail"]
    assert await api.call("targets.list") == []


async def test_a_target_row_changed_in_the_database_is_never_signed_into_an_order(coordinator, tmp_path):
    api, _, agent = await _scene(coordinator, tmp_path)
    target = await api.call("targets.create", wire.TargetCreate(
        name="files", agent_id=agent.config.agent_id, settings=wire.FileTarget(directory=str(tmp_path / "f"))))
    forged = wire.encode(wire.FileTarget(directory=str(tmp_path / "f"), reload_command=["/usr/bin/id"])).decode()
    service = coordinator.coordinator
    await service.database.transact(lambda tx: tx.execute(
        "UPDATE targets SET settings = ? WHERE id = ?", (forged, target.id)))
    with pytest.raises(ApiError) as caught:
        await api.call("certificates.create", wire.CertificateCreate(
            common_name="f.example.test", agent_id=agent.config.agent_id, target_id="files"))
    assert caught.value.status == 409 and "target-integrity" in caught.value.problem["type"]
    orders = await service.database.transact(lambda tx: tx.one("SELECT COUNT(*) AS n FROM work_orders"))
    assert orders["n"] == 0
