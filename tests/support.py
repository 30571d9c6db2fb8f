"""Helpers for tests: an admin API client, in-process agents, raw HTTP calls."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

BOOTSTRAP_TOKEN = "test-bootstrap-token-0123456789"


def ca_fingerprint(running) -> str:
    return hashlib.sha256(running.coordinator.keys.root.public_bytes(serialization.Encoding.DER)).hexdigest()


async def admin_client(running):
    """Exchange the bootstrap token and return an :class:`ApiClient` with the admin key."""
    from certfleet.coordinator.client import ApiClient
    from certfleet.shared import wire

    async with ApiClient(running.url, api_key=None, ca_bundle=running.ca_path) as anonymous:
        result = await anonymous.call("auth.bootstrap", wire.BootstrapRequest(token=BOOTSTRAP_TOKEN))
    return ApiClient(running.url, api_key=result.api_key, ca_bundle=running.ca_path), result.api_key


async def enroll_agent(api, running, agent_dir: Path, name: str = "test-agent"):
    """Enroll an in-process agent; returns :class:`certfleet.agent.daemon.Agent`."""
    from certfleet.agent.config import AgentPaths
    from certfleet.agent.daemon import Agent
    from certfleet.agent.enroll import enroll
    from certfleet.shared import wire

    token = await api.call("agents.enrollment-token.create", wire.EnrollmentTokenCreate(uses=1))
    paths = AgentPaths(agent_dir)
    await enroll(paths, coordinator=running.url, token=token.token, ca_fingerprint=ca_fingerprint(running),
                 name=name)
    return Agent(paths, poll_wait=0)


def tls_context(running):
    import ssl

    context = ssl.create_default_context(cafile=str(running.ca_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def raw_client(running, **kwargs):
    """An httpx client for hand-made requests (status codes, headers, bad bodies)."""
    import httpx

    return httpx.AsyncClient(base_url=running.url, verify=tls_context(running), timeout=30, **kwargs)


async def key_with_roles(admin_api, running, *roles: str, name: str = "test key", user: str | None = None):
    """A new API key holding ``roles`` globally; returns (ApiClient, key info)."""
    from certfleet.coordinator.client import ApiClient
    from certfleet.shared import wire

    created = await admin_api.call("auth.keys.create", wire.ApiKeyCreate(name=name, roles=list(roles), user=user))
    return ApiClient(running.url, api_key=created.token, ca_bundle=running.ca_path), created


class CountingTx:
    """A transaction that notes every statement sent through it."""

    def __init__(self, tx: Any, statements: list[str]) -> None:
        self._tx, self._statements = tx, statements

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def execute(self, sql: str, params: Any = ()) -> int:
        self._statements.append(sql)
        return self._tx.execute(sql, params)

    def execute_many(self, sql: str, rows: Any) -> None:
        self._statements.append(sql)
        self._tx.execute_many(sql, rows)

    def one(self, sql: str, params: Any = ()) -> Any:
        self._statements.append(sql)
        return self._tx.one(sql, params)

    def all(self, sql: str, params: Any = ()) -> Any:
        self._statements.append(sql)
        return self._tx.all(sql, params)


def count_statements(service: Any, monkeypatch: Any) -> list[str]:
    """Every statement the coordinator's transactions send from now on, in order."""
    statements: list[str] = []
    transact = service.database.transact

    async def counting(fn: Any, **options: Any) -> Any:
        return await transact(lambda tx: fn(CountingTx(tx, statements)), **options)

    monkeypatch.setattr(service.database, "transact", counting)
    return statements
