"""Discovery orders: asking agents to scan their files or probe their network, by an
operator or on the fleet's schedule. What they find arrives as discovery reports
(see :mod:`.discovery`); the order's own result is the agent's summary."""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from certfleet.shared import wire
from certfleet.shared.workorder import OrderKind, sign_work_order

from .. import errors
from ..auth.principal import Principal, PrincipalKind
from ..core import Call, CoordinatorBase, new_id
from ..storage import Agents, Tx, WorkOrders

__all__ = ["DEFAULT_SCAN_INTERVAL", "ScanOperations"]

log = logging.getLogger("certfleet.discovery")

DEFAULT_SCAN_INTERVAL = 86400
"""Seconds between an agent's scheduled filesystem scans (a day)."""
SCHEDULER = Principal(PrincipalKind.ANONYMOUS, "discovery-scheduler")
SCAN_KINDS = (str(OrderKind.SCAN), str(OrderKind.PROBE))


def _scan_info(row: dict[str, Any]) -> wire.DiscoveryScanInfo:
    return wire.DiscoveryScanInfo(order_id=row["id"], agent_id=row["agent_id"], kind=row["kind"],
                                  status=row["status"], detail=row["result_detail"], created_at=row["created_at"],
                                  completed_at=row["completed_at"])


class ScanOperations(CoordinatorBase):
    scan_interval: int | None = DEFAULT_SCAN_INTERVAL

    def _queue_discovery(self, tx: Tx, call: Call, agent_id: str, kind: OrderKind,
                         payload: msgspec.Struct) -> dict[str, Any]:
        agent = Agents(tx).find(agent_id)
        if agent is None or not self.integrity.valid("agents", agent):
            raise errors.UnprocessableEntity(f"no agent {agent_id!r}", slug="unknown-agent")
        if agent["retired_at"] is not None:
            raise errors.Conflict("the agent is retired", slug="agent-retired")
        order_id = new_id("ord")
        token = sign_work_order(key=self.keys.work_order_key, order_id=order_id, agent_id=agent_id, kind=kind,
                                payload=payload, now=self.now(), ttl=self.work_order_ttl)
        WorkOrders(tx).insert(id=order_id, agent_id=agent_id, certificate_id=None, target_id=None, kind=str(kind),
                              token=token, expires_at=self.now() + self.work_order_ttl, now=self.now())
        self.record(tx, call, action=f"discovery.{kind}", resource_type="work-order", resource_id=order_id,
                    details={"agent_id": agent_id, **msgspec.to_builtins(payload)})
        return tx.one("SELECT * FROM work_orders WHERE id = ?", (order_id,))  # type: ignore[return-value]

    async def discovery_scan(self, call: Call) -> wire.DiscoveryScanInfo:
        body: wire.DiscoveryScanRequest = call.body
        row = await self.database.transact(lambda tx: self._queue_discovery(
            tx, call, body.agent_id, OrderKind.SCAN, wire.ScanOrder(roots=body.roots)))
        self.wake(body.agent_id)
        return _scan_info(row)

    async def discovery_probe(self, call: Call) -> wire.DiscoveryScanInfo:
        body: wire.DiscoveryProbeRequest = call.body
        order = wire.ProbeOrder(**{name: getattr(body, name) for name in wire.ProbeOrder.__struct_fields__})
        row = await self.database.transact(lambda tx: self._queue_discovery(
            tx, call, body.agent_id, OrderKind.PROBE, order))
        self.wake(body.agent_id)
        return _scan_info(row)

    async def discovery_scans(self, call: Call) -> list[wire.DiscoveryScanInfo]:
        agent_id = call.query.get("agent_id")
        limit = max(1, min(int(call.query.get("limit") or 100), 1000))

        def list_(tx: Tx) -> list[dict[str, Any]]:
            where, params = "kind IN (?, ?)", list(SCAN_KINDS)
            if agent_id:
                where += " AND agent_id = ?"
                params.append(agent_id)
            return tx.all(f"SELECT * FROM work_orders WHERE {where} ORDER BY created_at DESC, id LIMIT ?",
                          (*params, limit))

        return [_scan_info(row) for row in await self.database.transact(list_)]

    async def queue_scheduled_scans(self) -> list[str]:
        """A filesystem scan for every active agent whose last scan order (or its
        enrollment) is ``scan_interval`` old; returns the agents asked. A newly
        enrolled agent is first scanned one interval later, or at once by hand
        (``certfleet discovery scan``)."""
        if not self.scan_interval:
            return []
        now = self.now()
        call = Call(SCHEDULER, operation="discovery.scan")

        def due(tx: Tx) -> list[str]:
            rows = tx.all(
                "SELECT a.id FROM agents a WHERE a.retired_at IS NULL AND a.created_at <= ?"
                " AND NOT EXISTS (SELECT 1 FROM work_orders o WHERE o.agent_id = a.id AND o.kind = ?"
                "  AND o.created_at > ?) LIMIT 200", (now - self.scan_interval, str(OrderKind.SCAN),
                                                        now - self.scan_interval))
            asked = []
            for row in rows:
                try:
                    self._queue_discovery(tx, call, row["id"], OrderKind.SCAN, wire.ScanOrder())
                except errors.CertfleetError as exc:  # an agent row that fails its integrity check
                    log.warning("no scheduled scan for agent %s: %s", row["id"], exc)
                    continue
                asked.append(row["id"])
            return asked

        asked = await self.database.transact(due)
        for agent_id in asked:
            self.wake(agent_id)
        return asked
