"""Every operation × every built-in role: allowed calls pass the gate, denied calls
get 403 problem+json. Generated from the catalogue, so a new operation is covered
the moment it is declared."""

from __future__ import annotations

import json
import time

import pytest

from certfleet.coordinator.auth.rbac import BUILTIN_ROLES
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


_FOREIGN_BODIES = {
    # Bodies that aim at the other profile's resources, for the scoped operations that take one.
    "auth.grants.create": lambda f: {"principal_type": "api-key", "principal_id": f["key_id"], "role": "operator",
                                     "scope_type": "profile", "scope_id": f["profile_id"]},
    "profiles.create": lambda f: {"name": "sneaky", "issuer": f["issuer_id"]},
    "profiles.update": lambda f: {"policy": {"requires_approval": False}},
    "certificates.create": lambda f: {"common_name": "x.example.test", "agent_id": f["agent_id"],
                                      "profile": f["profile_id"], "target_id": f["target_id"]},
    "certificates.create-bulk": lambda f: {"certificates": [
        {"common_name": "x.example.test", "agent_id": f["agent_id"], "profile": f["profile_id"],
         "target": {"kind": "file", "directory": "/tmp/sneaky"}}]},
    "certificates.revoke": lambda f: {"reason": "key-compromise"},
    "certificates.revoke-bulk": lambda f: {"reason": "key-compromise", "agent": f["agent_id"]},
    "approvals.approve": lambda f: {},
    "approvals.reject": lambda f: {},
    "auth.own-keys.create": lambda f: {"name": "mine", "roles": ["viewer"]},
}


async def test_every_operation_against_a_principal_scoped_to_another_profile(coordinator, tmp_path):
    """A key holding every permission on one profile reaches nothing of another profile:
    global objects refuse it outright, and the scoped operations neither show nor change
    the other profile's certificates, jobs, approvals, targets, agents or issuer."""
    admin, admin_key = await admin_client(coordinator)
    root = await admin.call("issuers.create-root", wire.RootCreate(name="their-root"))
    theirs_ca = await admin.call("issuers.create-intermediate", wire.IntermediateCreate(name="their-ca",
                                                                                         parent=root.id))
    theirs = await admin.call("profiles.create", wire.ProfileCreate(
        name="theirs", issuer=theirs_ca.id, policy=wire.ProfilePolicy(requires_approval=True)))
    mine = await admin.call("profiles.create", wire.ProfileCreate(name="mine"))
    agent = await enroll_agent(admin, coordinator, tmp_path / "their-agent", name="their-agent")
    certificate = await admin.call("certificates.create", wire.CertificateCreate(
        common_name="theirs.example.test", agent_id=agent.config.agent_id, profile=theirs.id,
        target=wire.FileTarget(directory=str(tmp_path / "theirs"))))
    job = (await admin.call("jobs.list", query={"certificate_id": certificate.id}))[0]
    approval = next(a for a in await admin.call("approvals.list") if a.subject_id == certificate.id)
    _, bystander = await key_with_roles(admin, coordinator, name="bystander")
    grant = await admin.call("auth.grants.create", wire.GrantCreate(
        principal_type="api-key", principal_id=bystander.id, role="viewer", scope_type="profile",
        scope_id=theirs.id))
    channel = await admin.call("channels.create", wire.ChannelCreate(
        name="theirs", kind="webhook", settings={"url": "http://127.0.0.1:9/hook"}, secrets={"secret": "s" * 20}))
    await admin.call("auth.roles.create", wire.RoleCreate(name="their-role", permissions=["cert.read"]))
    _, scoped_key = await key_with_roles(admin, coordinator, name="scoped admin")
    await admin.call("auth.grants.create", wire.GrantCreate(
        principal_type="api-key", principal_id=scoped_key.id, role="admin", scope_type="profile",
        scope_id=mine.id))

    foreign = {"certificate_id": certificate.id, "job_id": job.id, "approval_id": approval.id,
               "agent_id": agent.config.agent_id, "target_id": certificate.target_id, "profile_id": theirs.id,
               "issuer_id": theirs_ca.id, "key_id": admin_key, "grant_id": grant.id, "role": "their-role",
               "channel_id": channel.id, "notification_id": "ntf_none", "discovery_id": "1"}
    # What a response to the scoped key must never contain (the agent's id may come back
    # only from an operation the caller named it in).
    secret_ids = [certificate.id, job.id, approval.id, certificate.target_id, theirs.id, theirs_ca.id, root.id,
                  grant.id, channel.id, "their-role"]
    mismatches = []
    async with raw_client(coordinator) as http:
        for op in GATED:
            if op.auth is not Auth.API_KEY:
                continue
            path = op.url_path(**{name: foreign[name] for name in op.path_params})
            headers = {"Authorization": f"Bearer {scoped_key.token}"}
            content = None
            if op.input is not None:
                headers["Content-Type"] = "application/json"
                content = json.dumps(_FOREIGN_BODIES.get(op.name, lambda f: {})(foreign)).encode()
            response = await http.request(op.method, path, headers=headers, content=content)
            if not op.scoped:
                if response.status_code != 403 or "scope-denied" not in response.text:
                    mismatches.append(f"{op.name} is global yet answered {response.status_code}: {response.text[:200]}")
                continue
            if response.status_code >= 500:
                mismatches.append(f"{op.name}: {response.status_code}")
            elif response.status_code < 300:
                leaked = [i for i in secret_ids if i in response.text]
                if leaked:
                    mismatches.append(f"{op.name} showed {leaked}")
    assert mismatches == []

    # Nothing of theirs changed.
    assert (await admin.call("certificates.get", certificate_id=certificate.id)).status == "awaiting-approval"
    assert (await admin.call("jobs.get", job_id=job.id)).state == job.state
    assert (await admin.call("agents.get", agent_id=agent.config.agent_id)).retired_at is None
    assert [a.status for a in await admin.call("approvals.list") if a.id == approval.id] == ["pending"]
    assert (await admin.call("profiles.get", profile_id=theirs.id)).policy.requires_approval
    assert grant.id in {g.id for g in await admin.call("auth.grants.list")}
    assert channel.id in {c.id for c in await admin.call("channels.list")}
    assert (await admin.call("issuers.get", issuer_id=theirs_ca.id)).status == "active"
    assert [c.id for c in await admin.call("certificates.list")] == [certificate.id]
