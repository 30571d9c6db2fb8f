"""Write access to the database alone does not make an admin, a role or an agent."""

from __future__ import annotations

import pytest

from certfleet.coordinator.auth import credentials
from certfleet.coordinator.client import ApiClient, ApiError
from certfleet.shared import jws
from tests.support import admin_client, enroll_agent, key_with_roles


async def _status(call) -> int:
    try:
        await call
    except ApiError as exc:
        return exc.status
    return 200


async def test_a_key_and_grant_inserted_behind_the_coordinators_back_do_nothing(coordinator):
    await admin_client(coordinator)
    minted = credentials.mint(credentials.API_KEY)

    def forge(tx):
        tx.execute("INSERT INTO api_keys (id, secret_hash, name, user_id, created_by, created_at)"
                   " VALUES (?, ?, 'forged', NULL, 'attacker', 1)", (minted.id, minted.secret_hash))
        tx.execute("INSERT INTO grants (id, principal_type, principal_id, role, scope_type, created_by, created_at)"
                   " VALUES ('grt_forged', 'api-key', ?, 'admin', 'global', 'attacker', 1)", (minted.id,))

    await coordinator.coordinator.database.transact(forge)
    forged = ApiClient(coordinator.url, api_key=minted.token, ca_bundle=coordinator.ca_path)
    assert await _status(forged.call("auth.me")) == 401


async def test_a_forged_grant_to_a_real_key_is_ignored(coordinator):
    admin, _ = await admin_client(coordinator)
    viewer, key = await key_with_roles(admin, coordinator, "viewer")
    await coordinator.coordinator.database.transact(lambda tx: tx.execute(
        "INSERT INTO grants (id, principal_type, principal_id, role, scope_type, created_by, created_at, mac)"
        " VALUES ('grt_forged', 'api-key', ?, 'admin', 'global', 'attacker', 1, 'f00d')", (key.id,)))
    assert await _status(viewer.call("auth.keys.list")) == 403
    assert await _status(viewer.call("certificates.list")) == 200


async def test_an_un_revoked_key_stays_revoked(coordinator):
    admin, _ = await admin_client(coordinator)
    viewer, key = await key_with_roles(admin, coordinator, "viewer")
    await admin.call("auth.keys.revoke", key_id=key.id)
    await coordinator.coordinator.database.transact(lambda tx: tx.execute(
        "UPDATE api_keys SET revoked_at = NULL WHERE id = ?", (key.id,)))
    assert await _status(viewer.call("certificates.list")) == 401


async def test_a_swapped_agent_identity_key_is_refused(coordinator, tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from certfleet.agent.client import CoordinatorError
    from certfleet.agent.config import save_identity

    admin, _ = await admin_client(coordinator)
    agent = await enroll_agent(admin, coordinator, tmp_path / "agent")
    attacker = ed25519.Ed25519PrivateKey.generate()
    await coordinator.coordinator.database.transact(lambda tx: tx.execute(
        "UPDATE agents SET public_key = ? WHERE id = ?", (jws.public_key_raw(attacker.public_key()),
                                                          agent.config.agent_id)))
    save_identity(agent.paths, attacker)
    from certfleet.agent.daemon import Agent

    impostor = Agent(agent.paths, poll_wait=0)
    with pytest.raises(CoordinatorError) as refused:
        await impostor.client.call("agent.work", query={"wait": 0})
    assert refused.value.status == 401
