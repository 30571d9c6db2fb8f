"""``certfleet certificates create`` without ``--lifetime`` lets the profile decide:
the CLI sends no lifetime, so a short-lived profile's certificate is created within
the profile's limit instead of being refused for the CLI's own default."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import trio

from certfleet.shared import wire
from tests.support import admin_client, enroll_agent

BIN = Path(sys.executable).parent


async def _certfleet(running, api_key: str, *args: str) -> trio.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}
    return await trio.run_process([str(BIN / "certfleet"), "--url", running.url, "--api-key", api_key,
                                   "--ca-bundle", str(running.ca_path), "--json", *args],
                                  env=env, capture_stdout=True, capture_stderr=True, check=False)


async def test_without_lifetime_a_short_lived_profile_decides(coordinator, tmp_path):
    api, api_key = await admin_client(coordinator)
    async with api:
        await api.call("profiles.create", wire.ProfileCreate(
            name="short", policy=wire.ProfilePolicy(max_lifetime_seconds=2 * 86400, short_lived=True)))
        agent = await enroll_agent(api, coordinator, tmp_path / "agent")

        done = await _certfleet(coordinator, api_key, "certificates", "create", "--cn", "app.example.test",
                                "--agent", agent.config.agent_id, "--profile", "short",
                                "--target-dir", str(tmp_path / "target"))

    assert done.returncode == 0, done.stderr.decode()
    created = json.loads(done.stdout)
    assert 0 < created["lifetime_seconds"] <= 2 * 86400


async def test_an_explicit_lifetime_is_sent_as_given(coordinator, tmp_path):
    api, api_key = await admin_client(coordinator)
    async with api:
        agent = await enroll_agent(api, coordinator, tmp_path / "agent")

        done = await _certfleet(coordinator, api_key, "certificates", "create", "--cn", "app.example.test",
                                "--agent", agent.config.agent_id, "--lifetime", "30d",
                                "--target-dir", str(tmp_path / "target"))

    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["lifetime_seconds"] == 30 * 86400


async def test_a_profile_made_with_a_default_lifetime_gives_it_to_certificates_without_one(coordinator, tmp_path):
    api, api_key = await admin_client(coordinator)
    async with api:
        agent = await enroll_agent(api, coordinator, tmp_path / "agent")
        made = await _certfleet(coordinator, api_key, "profiles", "create", "weekly", "--max-lifetime", "30d",
                                "--default-lifetime", "7d")
        assert made.returncode == 0, made.stderr.decode()
        assert json.loads(made.stdout)["policy"]["default_lifetime_seconds"] == 7 * 86400
        refused = await _certfleet(coordinator, api_key, "profiles", "create", "odd", "--max-lifetime", "7d",
                                   "--default-lifetime", "30d")
        assert refused.returncode != 0 and len(refused.stderr.decode().strip().splitlines()) == 1

        done = await _certfleet(coordinator, api_key, "certificates", "create", "--cn", "app.example.test",
                                "--agent", agent.config.agent_id, "--profile", "weekly",
                                "--target-dir", str(tmp_path / "target"))

    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["lifetime_seconds"] == 7 * 86400
