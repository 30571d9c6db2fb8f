"""Jobs retry with growing delays, give up at the cap with the error kept, and time
out when the agent never picks the order up. Driven through the real protocol with
a simulated wall clock shared by the coordinator and an in-process agent."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from certfleet.coordinator import storage
from certfleet.coordinator.storage import Jobs
from certfleet.shared import wire
from tests.support import admin_client, enroll_agent


class SimulatedClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _reload_failing(times: int, counter: Path) -> list[str]:
    """A reload command that fails its first ``times`` runs: a script file beside the
    counter (target commands are argv lists of plain words, never shell text)."""
    script = counter.with_name("reload-failing")
    script.write_text(
        f"#!{sys.executable}\nimport pathlib, sys\np = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text() or 0) if p.exists() else 0\np.write_text(str(n + 1))\n"
        f"if n < {times}:\n    sys.stderr.write('reload failed\\n')\n    sys.exit(3)\n")
    script.chmod(0o755)
    return [str(script)]


async def _setup(coordinator, tmp_path, reload_command):
    from certfleet.agent.daemon import Agent

    clock = SimulatedClock()
    coordinator.coordinator._clock = clock
    api, _ = await admin_client(coordinator)
    enrolled = await enroll_agent(api, coordinator, tmp_path / "agent")
    agent = Agent(enrolled.paths, poll_wait=0, clock=clock)
    created = await api.call("certificates.create", wire.CertificateCreate(
        common_name="flaky.example.test", agent_id=agent.config.agent_id,
        target=wire.FileTarget(directory=str(tmp_path / "t"), reload_command=reload_command)))
    return clock, api, agent, created


async def _job(api, certificate_id):
    (job,) = await api.call("jobs.list", query={"certificate_id": certificate_id})
    return job


async def test_a_job_retries_with_growing_delays_then_completes(coordinator, tmp_path):
    # Each failed attempt runs the reload twice (the deploy, then the restore).
    clock, api, agent, created = await _setup(coordinator, tmp_path, _reload_failing(4, tmp_path / "count"))
    delays = []
    for _ in range(10):
        await agent.poll_once()
        await agent.flush_outbox()
        job = await _job(api, created.id)
        if job.state == "done":
            break
        assert job.state == "retry-wait" and "reload failed" in job.last_error
        delays.append(job.next_attempt_at - clock.now)
        assert await coordinator.coordinator.advance_jobs() == {"retried": 0, "timed_out": 0}
        clock.now = job.next_attempt_at
        assert (await coordinator.coordinator.advance_jobs())["retried"] == 1
    assert job.state == "done" and job.attempts == 3
    assert len(delays) == 2 and delays[1] > delays[0]
    assert (await api.call("certificates.get", certificate_id=created.id)).status == "deployed"


async def test_a_job_that_keeps_failing_gives_up_with_its_error(coordinator, tmp_path):
    clock, api, agent, created = await _setup(coordinator, tmp_path, _reload_failing(99, tmp_path / "count"))
    for _ in range(10):
        await agent.poll_once()
        await agent.flush_outbox()
        job = await _job(api, created.id)
        if job.state == "failed":
            break
        clock.now = job.next_attempt_at
        await coordinator.coordinator.advance_jobs()
    assert job.state == "failed" and job.attempts == job.max_attempts == 5
    assert "reload failed" in job.last_error
    events = await coordinator.coordinator.database.transact(lambda tx: tx.all(
        "SELECT details FROM audit_events WHERE action = 'job.transition' AND resource_id = ?", (job.id,)))
    transitions = [json.loads(e["details"])["to"] for e in events]
    assert transitions.count("retry-wait") == 4 and transitions[-1] == "failed"


async def test_an_order_nobody_picks_up_times_out_and_is_withdrawn(coordinator, tmp_path):
    clock, api, agent, created = await _setup(coordinator, tmp_path, None)
    first = await _job(api, created.id)
    clock.now += coordinator.coordinator.pickup_timeout + 1
    assert (await coordinator.coordinator.advance_jobs())["timed_out"] == 1
    job = await _job(api, created.id)
    assert job.state == "retry-wait" and "did not pick up" in job.last_error
    withdrawn = await coordinator.coordinator.database.transact(lambda tx: tx.one(
        "SELECT status FROM work_orders WHERE id = ?", (first.order_id,)))
    assert withdrawn["status"] == "cancelled"
    assert (await agent.client.call("agent.work", query={"wait": 0})).orders == []
    clock.now = job.next_attempt_at
    await coordinator.coordinator.advance_jobs()
    await agent.poll_once()
    await agent.flush_outbox()
    assert (await _job(api, created.id)).state == "done"


async def test_only_one_job_per_certificate_and_cancel(coordinator, tmp_path):
    clock, api, agent, created = await _setup(coordinator, tmp_path, None)
    job = await _job(api, created.id)


    with pytest.raises(storage.Conflict):
        await coordinator.coordinator.database.transact(lambda tx: Jobs(tx).insert(
            id="job_second", certificate_id=created.id, kind="issue", state="pending", max_attempts=5, now=1))
    cancelled = await api.call("jobs.cancel", job_id=job.id)
    assert cancelled.state == "cancelled"
    assert (await agent.client.call("agent.work", query={"wait": 0})).orders == []


async def test_cancelling_a_job_whose_first_deployment_failed_does_not_claim_deployed(coordinator, tmp_path):
    """The certificate was issued but never deployed (the reload failed and the files
    were restored): after a cancel it is "cancelled", not "deployed"."""
    clock, api, agent, created = await _setup(coordinator, tmp_path, _reload_failing(99, tmp_path / "count"))
    await agent.poll_once()
    await agent.flush_outbox()
    job = await _job(api, created.id)
    assert job.state == "retry-wait"
    assert (await api.call("certificates.get", certificate_id=created.id)).serial is not None  # it was issued
    await api.call("jobs.cancel", job_id=job.id)
    assert (await api.call("certificates.get", certificate_id=created.id)).status == "cancelled"
