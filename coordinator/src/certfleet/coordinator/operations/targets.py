"""Deployment targets: where an agent puts certificates, declared here, run there.

A target belongs to one agent. Its settings travel inside signed work orders; they are
validated when declared and again by the agent. Its row carries an integrity MAC, so a
database writer without the master key cannot change the commands an agent will run.
Secrets are never part of a target: settings name them, the agent holds them.

The agent reports how every deployment went (skipped as identical, config test,
reload or verification failures, rollbacks); those reports become the target's
counters here and per-target Prometheus series.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from certfleet.shared import wire
from certfleet.shared.targets import kind_of
from certfleet.shared.workorder import OrderKind, sign_work_order

from .. import errors
from ..core import Call, CoordinatorBase, Page, new_id, page_request, paged
from ..storage import Agents, Targets, Tx, WorkOrders

__all__ = ["TargetOperations", "target_info"]


def target_info(row: dict[str, Any], certificates: list[str]) -> wire.TargetInfo:
    return wire.TargetInfo(
        id=row["id"], name=row["name"], agent_id=row["agent_id"], kind=row["kind"],
        settings=msgspec.json.decode(row["settings"], type=wire.Target), created_at=row["created_at"],
        updated_at=row["updated_at"], certificates=certificates,
        counters=wire.TargetCounters(**{c: row[c] for c in wire.TargetCounters.__struct_fields__}),
        last_outcome=row["last_outcome"], last_detail=row["last_detail"],
        last_served_fingerprint=row["last_served_fingerprint"], last_deployed_at=row["last_deployed_at"],
        last_check_status=row["last_check_status"], last_check_detail=row["last_check_detail"],
        last_check_at=row["last_check_at"])


class TargetOperations(CoordinatorBase):
    # --- helpers other areas use --------------------------------------------------------

    def create_target(self, tx: Tx, call: Call, *, name: str, agent_id: str, settings: wire.Target) -> dict[str, Any]:
        if Agents(tx).find(agent_id) is None:
            raise errors.UnprocessableEntity(f"no agent {agent_id!r}", slug="unknown-agent")
        targets = Targets(tx)
        if targets.find(name) is not None:
            raise errors.Conflict(f"a target named {name!r} already exists", slug="target-exists")
        target_id = new_id("tgt")
        targets.insert(id=target_id, name=name, agent_id=agent_id, kind=kind_of(settings),
                       settings=wire.encode(settings).decode(), created_by=call.principal.actor, now=self.now())
        self.integrity.seal(tx, "targets", target_id)
        self.record(tx, call, action="targets.create", resource_type="target", resource_id=target_id,
                    details={"name": name, "agent_id": agent_id, "kind": kind_of(settings)})
        return targets.get(target_id)

    def trusted_settings(self, tx: Tx, target_id: str) -> wire.Target:
        """A target's settings, only if its row passes the integrity check: these become
        commands in a signed work order."""
        return self.trusted_settings_many(tx, [target_id])[target_id]

    def trusted_settings_many(self, tx: Tx, target_ids: Iterable[str]) -> dict[str, wire.Target]:
        """:meth:`trusted_settings` of several targets by id, read in one statement."""
        rows = Targets(tx).get_many(target_ids)
        for row in rows.values():
            if not self.integrity.valid("targets", row):
                raise errors.Conflict(f"target {row['name']} failed its integrity check and is not used;"
                                      " recreate it", slug="target-integrity")
        return {target_id: msgspec.json.decode(row["settings"], type=wire.Target) for target_id, row in rows.items()}

    def resolve_target(self, tx: Tx, id_or_name: str, *, agent_id: str) -> dict[str, Any]:
        row = Targets(tx).find(id_or_name)
        if row is None:
            raise errors.UnprocessableEntity(f"no target {id_or_name!r}", slug="unknown-target")
        if row["agent_id"] != agent_id:
            raise errors.UnprocessableEntity(f"target {row['name']} belongs to agent {row['agent_id']}, not {agent_id}",
                                             slug="target-agent-mismatch")
        return row

    def count_deployment(self, tx: Tx, target_id: str, body: wire.OrderResult) -> None:
        facts = body.deployment
        if facts is None:
            return
        step = facts.failed_step
        counters = {  # the columns named in metrics.TARGET_EVENTS
            "attempts": 1,
            "skipped": int(facts.skipped),
            "config_test_failures": int(step == "config-test"),
            "reload_failures": int(step == "reload"),
            "verification_failures": int(step == "verify"),
            "rollbacks": int(facts.rolled_back),
        }
        outcome = "skipped" if facts.skipped else body.status if not facts.rolled_back else "rolled-back"
        Targets(tx).count_deployment(target_id, counters=counters, outcome=outcome, detail=body.detail[:2048],
                                     served_fingerprint=facts.served_fingerprint, now=self.now())

    def record_check(self, tx: Tx, target_id: str, body: wire.OrderResult) -> None:
        Targets(tx).set_check(target_id, status="passed" if body.status == "succeeded" else "failed",
                              detail=body.detail[:2048], now=self.now())

    # --- operations ---------------------------------------------------------------------

    async def targets_create(self, call: Call) -> wire.TargetInfo:
        body: wire.TargetCreate = call.body

        def create(tx: Tx) -> dict[str, Any]:
            return self.create_target(tx, call, name=body.name, agent_id=body.agent_id, settings=body.settings)

        return target_info(await self.database.transact(create), [])

    def _target_in_reach(self, tx: Tx, call: Call, permission: str) -> dict[str, Any]:
        """The target named in the path, if the caller reaches every certificate
        deployed to it (one out of reach is as absent as one that does not exist)."""
        row = Targets(tx).get(call.params["target_id"])
        self.require_in_reach(tx, call, permission, "target", row["id"], hide=True)
        return row

    async def targets_list(self, call: Call) -> Page:
        after, limit = page_request(call)

        def list_(tx: Tx) -> Page:
            targets = Targets(tx)
            rows = targets.list(call.query.get("agent_id"), after=after, limit=limit)
            hidden = self.targets_out_of_reach(tx, call, "target.read", [row["id"] for row in rows])
            rows, next_after = paged(rows, limit, lambda row: row["id"] not in hidden)
            certificates = targets.certificates_of(row["id"] for row in rows)
            return Page([target_info(row, certificates[row["id"]]) for row in rows], next_after)

        return await self.database.transact(list_)

    async def targets_get(self, call: Call) -> wire.TargetInfo:
        def get(tx: Tx) -> wire.TargetInfo:
            row = self._target_in_reach(tx, call, "target.read")
            return target_info(row, Targets(tx).certificates(row["id"]))

        return await self.database.transact(get)

    async def targets_test(self, call: Call) -> wire.TargetInfo:
        def queue(tx: Tx) -> wire.TargetInfo:
            targets = Targets(tx)
            row = self._target_in_reach(tx, call, "target.test")
            settings = self.trusted_settings(tx, row["id"])
            certificate = tx.one(
                "SELECT c.names, v.fingerprint_sha256 FROM certificates c"
                " LEFT JOIN certificate_versions v ON v.certificate_id = c.id"
                " WHERE c.target_id = ? ORDER BY v.created_at DESC LIMIT 1", (row["id"],))
            server_name = msgspec.json.decode(certificate["names"])[0] if certificate else row["name"]
            order_id = new_id("ord")
            payload = wire.CheckTargetOrder(
                target_id=row["id"], target=settings, server_name=server_name,
                expected_fingerprint=certificate["fingerprint_sha256"] if certificate else None)
            token = sign_work_order(key=self.keys.work_order_key, order_id=order_id, agent_id=row["agent_id"],
                                    kind=OrderKind.CHECK_TARGET, payload=payload, now=self.now(),
                                    ttl=self.work_order_ttl)
            WorkOrders(tx).insert(id=order_id, agent_id=row["agent_id"], certificate_id=None, target_id=row["id"],
                                  kind=str(OrderKind.CHECK_TARGET), token=token,
                                  expires_at=self.now() + self.work_order_ttl, now=self.now())
            targets.set_check(row["id"], status="queued", detail=f"work order {order_id}", now=self.now())
            self.record(tx, call, action="targets.test", resource_type="target", resource_id=row["id"],
                        details={"order_id": order_id})
            return target_info(targets.get(row["id"]), targets.certificates(row["id"]))

        info = await self.database.transact(queue)
        self.wake(info.agent_id)
        return info
