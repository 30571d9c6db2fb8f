"""A real agent process keeps a one-hour certificate alive through a simulated day.

The coordinator runs in this test's trio loop with a simulated wall clock; the agent
is the real `certfleet-agent run` program, reading the same simulated time from a
file (CERTFLEET_AGENT_CLOCK_FILE). Renewals are started by the coordinator's own
maintenance loop; the test only moves time forward and watches.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import trio
from cryptography import x509

from certfleet.shared import wire
from tests.e2e.processes import BIN
from tests.support import admin_client, ca_fingerprint

pytestmark = [pytest.mark.e2e, pytest.mark.maintenance, pytest.mark.parametrize("database_url", [None])]


class FileClock:
    def __init__(self, path) -> None:
        self.path = path
        self.set(time.time())

    def set(self, now: float) -> None:
        self.now = now
        self.path.write_text(repr(now))

    def __call__(self) -> float:
        return self.now


async def test_one_hour_certificate_renewed_by_a_real_agent_all_day(coordinator, tmp_path):
    clock = FileClock(tmp_path / "clock")
    service = coordinator.coordinator
    service._clock = clock
    api, _ = await admin_client(coordinator)
    token = await api.call("agents.enrollment-token.create", wire.EnrollmentTokenCreate())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    env["CERTFLEET_AGENT_CLOCK_FILE"] = str(clock.path)
    agent_dir = tmp_path / "agent"
    enrolled = await trio.run_process(
        [str(BIN / "certfleet-agent"), "--agent-dir", str(agent_dir), "enroll", "--coordinator", coordinator.url,
         "--token", token.token, "--ca-fingerprint", ca_fingerprint(coordinator), "--json"],
        env=env, capture_stdout=True, capture_stderr=True)
    agent_id = json.loads(enrolled.stdout)["agent_id"]
    agent = await trio.lowlevel.open_process(
        [str(BIN / "certfleet-agent"), "--agent-dir", str(agent_dir), "run"], env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = tmp_path / "target"
    try:
        created = await api.call("certificates.create", wire.CertificateCreate(
            common_name="day.example.test", agent_id=agent_id, lifetime_seconds=3600,
            target=wire.FileTarget(directory=str(target))))

        async def deployed_serial() -> int:
            while True:
                info = await api.call("certificates.get", certificate_id=created.id)
                if info.status == "deployed" and (target / "cert.pem").exists():
                    return int(info.serial, 16)
                await trio.sleep(0.05)  # waiting on another process, not timing it

        serials = []
        with trio.fail_after(180):  # generous: a clock step can put the agent in backoff
            serials.append(await deployed_serial())
        end = clock.now + 86400
        while clock.now < end:
            leaf = x509.load_pem_x509_certificate((target / "cert.pem").read_bytes())
            assert leaf.not_valid_before_utc.timestamp() <= clock.now < leaf.not_valid_after_utc.timestamp(), \
                "the served certificate expired"
            info = await api.call("certificates.get", certificate_id=created.id)
            clock.set(max(clock.now + 300, min(info.renew_at + 1, clock.now + 600)))
            if clock.now > info.renew_at:
                with trio.fail_after(180):  # generous: a clock step can put the agent in backoff
                    while (serial := await deployed_serial()) == serials[-1]:
                        await trio.sleep(0.05)
                serials.append(serial)
        jobs = await api.call("jobs.list", query={"certificate_id": created.id})
        assert len(serials) >= 30 and len(set(serials)) == len(serials)
        assert [j.state for j in jobs] == ["done"] * len(serials)
        assert [j.kind for j in jobs].count("renewal") == len(serials) - 1
    finally:
        agent.terminate()
        with trio.CancelScope(shield=True):
            await agent.wait()
