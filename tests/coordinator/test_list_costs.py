"""A list costs the same number of statements however many rows it shows: one full
scan per row (targets once read every certificate for each target) lets a read-only
key freeze the coordinator."""

from __future__ import annotations

from typing import Any

from certfleet.shared import wire
from certfleet.shared.api import OPERATIONS, Auth
from tests.support import admin_client, count_statements, enroll_agent, key_with_roles, raw_client

LISTS = [op for op in OPERATIONS if op.auth is Auth.API_KEY and op.method == "GET" and not op.path_params
         and op.content_type == "application/json"]


async def _grow(admin: Any, coordinator: Any, tmp_path: Any, tag: str, size: int) -> None:
    """More of every kind of row a list shows: agents, certificates with their targets
    and jobs, profiles, approvals, policies, channels, keys and grants."""
    agent = await enroll_agent(admin, coordinator, tmp_path / f"agent-{tag}", name=f"agent-{tag}")
    guarded = await admin.call("profiles.create", wire.ProfileCreate(
        name=f"guarded-{tag}", policy=wire.ProfilePolicy(requires_approval=True)))
    requester, _ = await key_with_roles(admin, coordinator, "operator", name=f"requester-{tag}", user=f"r-{tag}")
    for index in range(size):
        await admin.call("certificates.create", wire.CertificateCreate(
            common_name=f"c{index}.{tag}.example.test", agent_id=agent.config.agent_id,
            target=wire.FileTarget(directory=str(tmp_path / tag / str(index)))))
        await requester.call("certificates.create", wire.CertificateCreate(
            common_name=f"g{index}.{tag}.example.test", agent_id=agent.config.agent_id, profile=guarded.id,
            target=wire.FileTarget(directory=str(tmp_path / tag / f"g{index}"))))
        _, key = await key_with_roles(admin, coordinator, "viewer", name=f"k{index}-{tag}")
        await admin.call("auth.grants.create", wire.GrantCreate(principal_type="api-key", principal_id=key.id,
                                                                 role="operator", scope_type="profile",
                                                                 scope_id=guarded.id))
        await admin.call("renewal-policies.create", wire.RenewalPolicyCreate(name=f"p{index}-{tag}"))
        await admin.call("channels.create", wire.ChannelCreate(
            name=f"ch{index}-{tag}", kind="webhook", settings={"url": "http://127.0.0.1:9/hook"},
            secrets={"secret": "s" * 20}))


async def _costs(coordinator: Any, token: str, monkeypatch: Any) -> dict[str, int]:
    costs = {}
    async with raw_client(coordinator) as http:
        for op in LISTS:
            statements = count_statements(coordinator.coordinator, monkeypatch)
            response = await http.get(op.path, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, (op.name, response.text)
            costs[op.name] = len(statements)
            monkeypatch.undo()
    return costs


async def test_every_list_costs_the_same_statements_for_three_times_the_rows(coordinator, tmp_path, monkeypatch):
    admin, _ = await admin_client(coordinator)
    _, viewer = await key_with_roles(admin, coordinator, "admin", name="lister")
    await _grow(admin, coordinator, tmp_path, "small", 1)
    small = await _costs(coordinator, viewer.token, monkeypatch)
    await _grow(admin, coordinator, tmp_path, "large", 3)
    await _grow(admin, coordinator, tmp_path, "larger", 3)
    large = await _costs(coordinator, viewer.token, monkeypatch)
    assert {name: cost for name, cost in large.items() if cost != small[name]} == {}, small


async def test_lists_come_a_page_at_a_time_and_the_client_follows_the_links(coordinator, tmp_path, monkeypatch):
    admin, _ = await admin_client(coordinator)
    agent = await enroll_agent(admin, coordinator, tmp_path / "agent")
    created = [(await admin.call("certificates.create", wire.CertificateCreate(
        common_name=f"p{index}.example.test", agent_id=agent.config.agent_id,
        target=wire.FileTarget(directory=str(tmp_path / str(index)))))).id for index in range(5)]
    _, key = await key_with_roles(admin, coordinator, "admin", name="pager")
    seen, url, pages = [], "/api/v1/certificates?limit=2", 0
    async with raw_client(coordinator) as http:
        while url:
            response = await http.get(url, headers={"Authorization": f"Bearer {key.token}"})
            assert response.status_code == 200
            seen += [row["id"] for row in response.json()]
            url = response.links.get("next", {}).get("url")
            pages += 1
        for op in [op for op in OPERATIONS if op.paged]:
            answer = await http.get(op.path, params={"limit": "1", "after": "no-such-row"},
                                    headers={"Authorization": f"Bearer {key.token}"})
            assert (answer.status_code, answer.json()) == (200, []), op.name
    # Rows created in the same second list in id order; pages keep the list's order.
    listed = [c.id for c in await admin.call("certificates.list")]
    assert (sorted(seen), pages, seen) == (sorted(created), 3, listed)
    assert [c.id for c in await admin.call("certificates.list", query={"limit": 2})] == listed[:2]
    # With pages of two, the client still brings back the whole list, in order.
    monkeypatch.setattr("certfleet.coordinator.core.PAGE_LIMIT", 2)
    assert [c.id for c in await admin.call("certificates.list")] == listed
