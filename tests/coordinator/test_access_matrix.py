"""Every operation × every built-in role: allowed calls pass the gate, denied calls
get 403 problem+json. Generated from the catalogue, so a new operation is covered
the moment it is declared."""

from __future__ import annotations

import time

import pytest

from certfleet.coordinator.rbac import BUILTIN_ROLES
from certfleet.shared import wire
from certfleet.shared.agent_token import AUTH_SCHEME, sign_request_token
from certfleet.shared.api import OPERATIONS, Auth
from tests.support import admin_client, enroll_agent, key_with_roles, raw_client

GATED = [op for op in OPERATIONS if op.auth is not Auth.PUBLIC]


def _path(op) -> str:
    return op.url_path(**{name: "does-not-exist" for name in op.path_params})


async def _agent_with_only(admin_api, running, tmp_path, role: str):
    agent = await enroll_agent(admin_api, running, tmp_path / f"agent-{role}", name=f"agent-{role}")
    grants = await admin_api.call("auth.grants.list")
    for grant in grants:
        if grant.principal_id == agent.config.agent_id:
            await admin_api.call("auth.grants.revoke", grant_id=grant.id)
    await admin_api.call("auth.grants.create", wire.GrantCreate(
        principal_type="agent", principal_id=agent.config.agent_id, role=role))
    return agent


async def test_every_operation_against_every_builtin_role(coordinator, tmp_path):
    from certfleet.agent.config import load_identity

    admin_api, _ = await admin_client(coordinator)
    keys, agents = {}, {}
    for role in BUILTIN_ROLES:
        _, created = await key_with_roles(admin_api, coordinator, role, name=f"key-{role}")
        keys[role] = created.token
        agents[role] = await _agent_with_only(admin_api, coordinator, tmp_path, role)

    mismatches = []
    async with raw_client(coordinator) as http:
        for role, (_, permissions) in BUILTIN_ROLES.items():
            for op in GATED:
                path = _path(op)
                if op.auth is Auth.API_KEY:
                    authorization = f"Bearer {keys[role]}"
                else:
                    agent = agents[role]
                    token = sign_request_token(load_identity(agent.paths), agent_id=agent.config.agent_id,
                                               method=op.method, path=path, now=int(time.time()))
                    authorization = f"{AUTH_SCHEME} {token}"
                headers = {"Authorization": authorization}
                content = None
                if op.input is not None:
                    headers["Content-Type"] = "application/json"
                    content = b"{}"
                response = await http.request(op.method, path, headers=headers, content=content,
                                              params={"wait": "0"} if op.name == "agent.work" else None)
                allowed = op.permission in permissions
                if allowed and response.status_code == 403:
                    mismatches.append(f"{role} was refused {op.name}: {response.text}")
                if not allowed:
                    if response.status_code != 403:
                        mismatches.append(f"{role} was not refused {op.name} ({response.status_code})")
                    elif response.headers["content-type"] != "application/problem+json":
                        mismatches.append(f"{role} got a 403 for {op.name} that is not problem+json")
    assert mismatches == []


def test_builtin_roles_follow_their_definitions():
    admin, operator, viewer = (BUILTIN_ROLES[r][1] for r in ("admin", "operator", "viewer"))
    agent, mcp, cli, auditor = (BUILTIN_ROLES[r][1] for r in ("agent", "mcp", "cli", "auditor"))
    every = {op.permission for op in GATED}
    assert admin == every
    assert auditor == {"audit.read", "audit.export", "discovery.read"}
    assert agent == {op.permission for op in GATED if op.auth is Auth.AGENT}
    assert not any(p.startswith(("auth.key.", "auth.role.")) for p in operator)
    assert all(p.endswith(".read") for p in viewer) and viewer <= operator
    destructive = {op.permission for op in OPERATIONS if op.destructive}
    assert mcp == operator - destructive
    assert cli == operator | {"auth.own-key.read", "auth.own-key.manage"}


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.name)
def test_every_operation_names_a_namespaced_permission(op):
    assert op.permission.count(".") >= 1 and op.permission == op.permission.lower()


def test_operation_groups_do_not_shadow_each_others_methods():
    """The coordinator is composed from one class per area; two areas defining the
    same method name would silently replace one with the other."""
    from certfleet.coordinator.core import CoordinatorBase
    from certfleet.coordinator.service import Coordinator

    owners: dict[str, list[str]] = {}
    for cls in Coordinator.__mro__:
        if cls in (Coordinator, CoordinatorBase, object):
            continue
        for name, value in vars(cls).items():
            if callable(value) and not name.startswith("__"):
                owners.setdefault(name, []).append(cls.__name__)
    assert {n: o for n, o in owners.items() if len(o) > 1} == {}
