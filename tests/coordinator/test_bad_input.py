"""Bad input gets a clear problem+json 4xx and changes nothing.

Each case snapshots every domain table before and after. The audit trail is the one
table that does grow: a refused request is itself an event worth recording (who,
from where, which problem), so the test checks that exactly those refusal rows were
added and nothing else.
"""

from __future__ import annotations

import time

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ed25519

from certfleet.agent.config import load_identity
from certfleet.shared import wire
from certfleet.shared.agent_token import AUTH_SCHEME, sign_request_token
from certfleet.shared.pki import KeyType, build_csr, generate_private_key
from tests.support import admin_client, enroll_agent, raw_client

TABLES = ("certificates", "certificate_versions", "work_orders", "agents", "api_keys", "enrollment_tokens",
          "agent_events", "grants", "profiles", "issuers", "roles", "approvals", "crls")


async def _counts(running) -> dict[str, int]:
    def count(tx):
        return {t: tx.one(f"SELECT COUNT(*) AS n FROM {t}")["n"] for t in TABLES}

    return await running.coordinator.database.transact(count)


async def _audit_outcomes_since(running, last_id: int) -> list[str]:
    rows = await running.coordinator.database.transact(lambda tx: tx.all(
        "SELECT outcome FROM audit_events WHERE id > ? ORDER BY id", (last_id,)))
    return [r["outcome"] for r in rows]


async def _last_audit_id(running) -> int:
    row = await running.coordinator.database.transact(lambda tx: tx.one("SELECT MAX(id) AS n FROM audit_events"))
    return row["n"] or 0


@pytest.fixture
async def scene(coordinator, tmp_path):
    api, api_key = await admin_client(coordinator)
    agent = await enroll_agent(api, coordinator, tmp_path / "agent")
    created = await api.call("certificates.create", wire.CertificateCreate(
        common_name="app.example.test", sans=["www.example.test"], agent_id=agent.config.agent_id,
        target=wire.FileTarget(directory=str(tmp_path / "target"))))
    order = await coordinator.coordinator.database.transact(lambda tx: tx.one(
        "SELECT id FROM work_orders WHERE certificate_id = ?", (created.id,)))
    return api_key, agent, order["id"]


def _agent_headers(agent, method: str, path: str, **overrides) -> dict[str, str]:
    now = overrides.pop("now", int(time.time()))
    key = overrides.pop("key", None) or load_identity(agent.paths)
    token = sign_request_token(key, agent_id=agent.config.agent_id, method=method, path=path, now=now)
    return {"Authorization": f"{AUTH_SCHEME} {token}", "Content-Type": "application/json"}


def _assert_problem(response, status: int, slug: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and problem["title"] and problem["type"].startswith("urn:certfleet:problem:")
    assert problem.get("detail"), problem
    if slug:
        assert problem["type"].endswith(slug), problem


def _csr(names, key_type=KeyType.EC_P256) -> str:
    return build_csr(generate_private_key(key_type), names).decode()


CSR_CASES = {
    "garbage": ("not a csr", 400, "invalid-csr"),
    "a certificate, not a CSR": ("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", 400, "invalid-csr"),
    "a host not in the order": (_csr(["app.example.test", "www.example.test", "evil.example.test"]), 422,
                                "csr-names"),
    "a host missing": (_csr(["app.example.test"]), 422, "csr-names"),
    "wrong key type": (_csr(["app.example.test", "www.example.test"], KeyType.RSA_2048), 422, "csr-key-type"),
}


@pytest.mark.parametrize("case", list(CSR_CASES))
async def test_bad_csr_is_refused_and_stores_nothing(coordinator, scene, case):
    _, agent, order_id = scene
    csr, status, slug = CSR_CASES[case]
    path = f"/api/v1/agent/orders/{order_id}/csr"
    before, last = await _counts(coordinator), await _last_audit_id(coordinator)
    async with raw_client(coordinator) as http:
        response = await http.post(path, json={"csr": csr}, headers=_agent_headers(agent, "POST", path))
    _assert_problem(response, status, slug)
    assert await _counts(coordinator) == before
    assert await _audit_outcomes_since(coordinator, last) == ["failed"]


async def test_bodies_that_are_too_large_wrong_or_unknown_are_refused(coordinator, scene, tmp_path):
    api_key, agent, _ = scene
    bearer = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    valid = {"common_name": "x.example.test", "agent_id": agent.config.agent_id,
             "target": {"kind": "file", "directory": str(tmp_path / "x")}}
    before = await _counts(coordinator)
    # The server answers 413 as soon as it sees the Content-Length, before the body
    # arrives (RFC 9110 §15.5.14), and closes; httpx cannot read such an early answer,
    # curl can.
    big = tmp_path / "big.json"
    big.write_bytes(b'{"common_name": "' + b"a" * (1024 * 1024 + 10) + b'"}')
    curl = await trio.run_process(
        ["curl", "-sS", "--cacert", str(coordinator.ca_path), "-o", "-", "-w", "\n%{http_code}",
         "-H", f"Authorization: Bearer {api_key}", "-H", "Content-Type: application/json",
         "--data-binary", f"@{big}", f"{coordinator.url}/api/v1/certificates"],
        capture_stdout=True, capture_stderr=True, check=False)
    body, _, code = curl.stdout.decode().rpartition("\n")
    assert code == "413" and "payload-too-large" in body, curl.stdout + curl.stderr
    async with raw_client(coordinator) as http:
        assert (await http.get("/health")).status_code == 200, "the server must survive an oversized upload"

        async def chunks():
            for _ in range(40):
                yield b"x" * 32768

        _assert_problem(await http.post("/api/v1/certificates", content=chunks(), headers=bearer), 413)
        _assert_problem(await http.post("/api/v1/certificates", json={**valid, "colour": "red"}, headers=bearer),
                        400, "invalid-body")
        _assert_problem(await http.post("/api/v1/certificates", json={**valid, "target": {"kind": "file",
            "directory": "relative/path"}}, headers=bearer), 400, "invalid-body")
        _assert_problem(await http.post("/api/v1/certificates", json={**valid, "common_name": "bad name!"},
                                        headers=bearer), 400, "invalid-body")
        _assert_problem(await http.post("/api/v1/certificates", content=b"{not json", headers=bearer), 400)
        _assert_problem(await http.post("/api/v1/certificates", content=b"[]", headers=bearer), 400)
        _assert_problem(await http.post("/api/v1/certificates", json=valid, headers={
            "Authorization": f"Bearer {api_key}", "Content-Type": "text/plain"}), 415)
        _assert_problem(await http.post("/api/v1/certificates", json={**valid, "agent_id": "agt_nobody"},
                                        headers=bearer), 422, "unknown-agent")
    assert await _counts(coordinator) == before


async def test_missing_or_invalid_api_keys_are_refused(coordinator, scene):
    api_key, _, _ = scene
    before, last = await _counts(coordinator), await _last_audit_id(coordinator)
    wrong_secret = api_key[:-4] + ("AAAA" if not api_key.endswith("AAAA") else "BBBB")
    async with raw_client(coordinator) as http:
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer not-a-key"},
                        {"Authorization": "Basic dXNlcjpwYXNz"},
                        {"Authorization": "Bearer cfk_zzzzzzzzzzzzzzzz_" + "x" * 43},
                        {"Authorization": f"Bearer {wrong_secret}"}):
            response = await http.get("/api/v1/certificates", headers=headers)
            _assert_problem(response, 401)
            assert "Bearer" in response.headers["www-authenticate"]
    assert await _counts(coordinator) == before
    outcomes = await _audit_outcomes_since(coordinator, last)
    assert outcomes == ["unauthenticated"] * 6
    assert not any(wrong_secret in str(r) for r in await coordinator.coordinator.database.transact(
        lambda tx: tx.all("SELECT * FROM audit_events")))


async def test_bad_agent_tokens_are_refused(coordinator, scene):
    api_key, agent, order_id = scene
    path = "/api/v1/agent/work"
    stranger = ed25519.Ed25519PrivateKey.generate()
    replayed = _agent_headers(agent, "GET", path)
    cases = {
        "missing": ({}, "unauthorized"),
        "garbage": ({"Authorization": f"{AUTH_SCHEME} garbage"}, "invalid-agent-token"),
        "unenrolled key": (_agent_headers(agent, "GET", path, key=stranger), "invalid-agent-token"),
        "another path": (_agent_headers(agent, "GET", "/api/v1/agent/reports"), "invalid-agent-token"),
        "expired": (_agent_headers(agent, "GET", path, now=int(time.time()) - 600), "invalid-agent-token"),
        "an API key": ({"Authorization": f"Bearer {api_key}"}, "unauthorized"),
    }
    before = await _counts(coordinator)
    async with raw_client(coordinator) as http:
        for headers, slug in cases.values():
            response = await http.get(path, params={"wait": "0"}, headers=headers)
            _assert_problem(response, 401, slug)
        assert (await http.get(path, params={"wait": "0"}, headers=replayed)).status_code == 200
        _assert_problem(await http.get(path, params={"wait": "0"}, headers=replayed), 401, "agent-token-replayed")
        agent_on_operator_api = _agent_headers(agent, "GET", "/api/v1/certificates")
        _assert_problem(await http.get("/api/v1/certificates", headers=agent_on_operator_api), 401)
    counts = await _counts(coordinator)
    assert counts == before


async def test_bootstrap_token_is_single_use(coordinator):
    from tests.support import BOOTSTRAP_TOKEN

    async with raw_client(coordinator) as http:
        _assert_problem(await http.post("/api/v1/auth/bootstrap", json={"token": "wrong"}), 401)
        assert (await http.post("/api/v1/auth/bootstrap", json={"token": BOOTSTRAP_TOKEN})).status_code == 201
        _assert_problem(await http.post("/api/v1/auth/bootstrap", json={"token": BOOTSTRAP_TOKEN}), 410,
                        "bootstrap-used")
    keys = await coordinator.coordinator.database.transact(lambda tx: tx.all("SELECT id FROM api_keys"))
    assert len(keys) == 1
