"""``/ready`` tells a load balancer whether this coordinator can serve (the database
answers and holds this coordinator's schema), apart from ``/health``'s liveness;
``/api/v1/version`` and ``certfleet version`` say what runs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import trio

from certfleet.coordinator.operations.system import SCHEMA_VERSION
from tests.support import admin_client, raw_client

BIN = Path(sys.executable).parent


async def test_ready_when_the_database_answers_with_the_current_schema(coordinator):
    async with raw_client(coordinator) as http:
        response = await http.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "schema_version": SCHEMA_VERSION}


async def test_not_ready_while_the_schema_is_not_this_coordinators(coordinator):
    service = coordinator.coordinator
    await service.database.transact(lambda tx: tx.execute("DELETE FROM schema_migrations WHERE version = ?",
                                                          (SCHEMA_VERSION,)))
    async with raw_client(coordinator) as http:
        response = await http.get("/ready")
        health = await http.get("/health")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith(":schema-not-current") and "detail" not in response.json()
    assert health.status_code == 200  # alive, only not ready


async def test_not_ready_while_the_database_does_not_answer(coordinator, monkeypatch):
    async def unreachable(fn, **options):
        raise OSError("connection refused")

    monkeypatch.setattr(coordinator.coordinator.database, "transact", unreachable)
    async with raw_client(coordinator) as http:
        response = await http.get("/ready")
    assert response.status_code == 503
    assert response.json()["type"].endswith(":database-unreachable") and "refused" not in response.text


async def test_version_through_the_api_and_the_cli(coordinator):
    _, key = await admin_client(coordinator)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    base = [str(BIN / "certfleet"), "--url", coordinator.url, "--api-key", key, "--ca-bundle", str(coordinator.ca_path)]
    shown = await trio.run_process([*base, "version"], env=env, capture_stdout=True, capture_stderr=True,
                                   check=False)
    assert shown.returncode == 0, shown.stderr.decode()
    lines = shown.stdout.decode().splitlines()
    assert lines[0].startswith("certfleet ") and lines[1].startswith("coordinator ")
    assert f"schema {SCHEMA_VERSION}" in lines[1] and coordinator.coordinator.database.dialect in lines[1]
    as_json = await trio.run_process([*base, "--json", "version"], env=env, capture_stdout=True, check=False)
    answer = json.loads(as_json.stdout)
    assert answer["coordinator"]["api"] == "v1" and answer["client"] == answer["coordinator"]["version"]
