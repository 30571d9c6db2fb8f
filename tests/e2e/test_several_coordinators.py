"""Two coordinator processes on one PostgreSQL, agents on both: every renewal
happens exactly once, and when the leader dies the other takes over its loops."""

from __future__ import annotations

import base64
import secrets
import signal
import ssl
import time

import httpx
import psycopg
import pytest

from tests.e2e.processes import AgentHost, Coordinator, wait_until

pytestmark = pytest.mark.e2e
CERTIFICATES = 500
LEADS = "this coordinator leads the periodic loops"


def test_renewals_happen_once_and_leadership_fails_over(tmp_path, fresh_postgres_url):
    master_key = base64.b64encode(secrets.token_bytes(32)).decode()
    first = Coordinator(tmp_path / "a", fresh_postgres_url, master_key=master_key)
    second = Coordinator(tmp_path / "b", fresh_postgres_url, master_key=master_key, api_key=first.api_key)
    processes = [first.process, second.process]
    try:
        leader, follower = wait_until(
            lambda: (first, second) if LEADS in first.process.output else
            (second, first) if LEADS in second.process.output else None, what="a leader")
        assert LEADS not in follower.process.output

        agents = []
        for index, coordinator in enumerate((first, second, first, second)):
            agent = AgentHost(tmp_path / f"agent{index}", coordinator)
            processes.append(agent.start())
            agents.append(agent)

        context = ssl.create_default_context(cafile=str(first.ca_path))
        headers = {"Authorization": f"Bearer {first.api_key}"}
        with httpx.Client(base_url=first.url, verify=context, headers=headers, timeout=30) as api:
            for i in range(CERTIFICATES):
                response = api.post("/api/v1/certificates", json={
                    "common_name": f"n{i}.fleet.test", "agent_id": agents[i % len(agents)].agent_id,
                    "target": {"kind": "file", "directory": str(tmp_path / "targets" / str(i))}})
                assert response.status_code == 201, response.text

        def statuses() -> dict[str, int]:
            with psycopg.connect(fresh_postgres_url) as connection:
                rows = connection.execute("SELECT status, COUNT(*) FROM certificates GROUP BY status").fetchall()
            return dict(rows)

        wait_until(lambda: statuses() == {"deployed": CERTIFICATES}, timeout=300, what="every first deployment")
        with psycopg.connect(fresh_postgres_url) as connection:
            connection.execute("UPDATE certificates SET renew_at = %s", (int(time.time()) - 1,))

        def renewed() -> bool:
            with psycopg.connect(fresh_postgres_url) as connection:
                done = connection.execute(
                    "SELECT COUNT(*) FROM certificates c WHERE c.status = 'deployed' AND"
                    " (SELECT COUNT(*) FROM work_orders o WHERE o.certificate_id = c.id"
                    "  AND o.status = 'succeeded') = 2").fetchone()[0]
            return done == CERTIFICATES

        wait_until(renewed, timeout=300, what="every renewal")
        with psycopg.connect(fresh_postgres_url) as connection:
            per_certificate = connection.execute(
                "SELECT certificate_id, COUNT(*) FROM work_orders GROUP BY certificate_id").fetchall()
            versions = connection.execute("SELECT COUNT(*) FROM certificate_versions").fetchone()[0]
        assert {count for _, count in per_certificate} == {2}, "a renewal ran twice or not at all"
        assert versions == 2 * CERTIFICATES

        leader.process.popen.send_signal(signal.SIGKILL)
        leader.process.popen.wait(timeout=30)
        wait_until(lambda: LEADS in follower.process.output, timeout=30, what="the follower to take over")
    finally:
        for process in processes:
            process.stop()
