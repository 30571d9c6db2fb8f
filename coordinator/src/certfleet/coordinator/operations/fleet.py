"""Agents: enrollment tokens, enrollment, listing, retirement."""

from __future__ import annotations

import json
from typing import Any

from certfleet.shared import jws, wire

from .. import errors
from ..auth import credentials
from ..auth.rbac import GLOBAL
from ..core import Call, Page, new_id, page_request, paged
from ..lifecycle.jobs import TERMINAL, JobEvent
from ..metrics import liveness
from ..storage import Agents, EnrollmentTokens, Grants, Tx, WorkOrders
from .jobs import JobOperations

__all__ = ["FleetOperations", "agent_info"]


def agent_info(row: dict[str, Any], now: int) -> wire.AgentInfo:
    retired = row["retired_at"] is not None
    return wire.AgentInfo(id=row["id"], name=row["name"], created_at=row["created_at"],
                          last_seen_at=row["last_seen_at"], labels=json.loads(row["labels"]),
                          liveness="retired" if retired else liveness(row["last_seen_at"], now),
                          retired_at=row["retired_at"])


class FleetOperations(JobOperations):
    async def agents_enrollment_token_create(self, call: Call) -> wire.EnrollmentTokenInfo:
        body: wire.EnrollmentTokenCreate = call.body
        minted = credentials.mint(credentials.ENROLLMENT)
        now = self.now()
        expires_at = now + body.ttl_seconds

        def create(tx: Tx) -> None:
            EnrollmentTokens(tx).insert(id=minted.id, secret_hash=minted.secret_hash, uses=body.uses,
                                        expires_at=expires_at, labels=body.labels,
                                        created_by=call.principal.actor, now=now)
            self.record(tx, call, resource_type="enrollment-token", resource_id=minted.id,
                        details={"uses": body.uses, "expires_at": expires_at})

        await self.database.transact(create)
        return wire.EnrollmentTokenInfo(id=minted.id, token=minted.token, uses_left=body.uses,
                                        expires_at=expires_at, labels=body.labels)

    async def agent_enroll(self, call: Call) -> wire.EnrollResponse:
        body: wire.EnrollRequest = call.body
        refused = errors.Unauthorized("invalid, spent or expired enrollment token", slug="invalid-enrollment-token")
        token_id = credentials.parse(body.token, credentials.ENROLLMENT)
        if token_id is None:
            raise refused
        try:
            public_key = jws.public_key_from_raw(body.public_key)
        except jws.TokenError as exc:
            raise errors.BadRequest(exc.detail) from exc
        now = self.now()
        agent_id = new_id("agt")

        def enroll(tx: Tx) -> None:
            tokens = EnrollmentTokens(tx)
            row = tokens.find(token_id)
            if row is None or not credentials.matches(body.token, row["secret_hash"]):
                raise refused
            if not tokens.consume(token_id, now):
                raise refused
            raw_key = jws.public_key_raw(public_key)
            if tx.one("SELECT id FROM agents WHERE public_key = ?", (raw_key,)):
                raise errors.Conflict("this identity key is already enrolled")
            labels = {**body.labels, **json.loads(row["labels"])}  # the operator's token has the last word
            Agents(tx).insert(id=agent_id, name=body.name, public_key=raw_key, labels=labels,
                              enrollment_token_id=token_id, now=now)
            self.integrity.seal(tx, "agents", agent_id)
            # The agent role is an ordinary grant: visible, and revocable to cut an agent off.
            grant_id = new_id("grt")
            Grants(tx).insert(id=grant_id, principal_type="agent", principal_id=agent_id, role="agent",
                              scope_type=GLOBAL.type, scope_id=None, expires_at=None,
                              created_by=f"enrollment-token:{token_id}", now=now)
            self.integrity.seal(tx, "grants", grant_id)
            self.record(tx, call, resource_type="agent", resource_id=agent_id, details={"name": body.name},
                        actor=("enrollment-token", token_id))

        await self.database.transact(enroll)
        key = self.keys.work_order_key.public_key()
        return wire.EnrollResponse(
            agent_id=agent_id,
            work_order_keys=[wire.WorkOrderKey(kid=self.keys.work_order_kid, public_key=jws.public_key_raw(key))],
        )

    async def agents_list(self, call: Call) -> Page:
        after, limit = page_request(call)

        def list_(tx: Tx) -> tuple[list[dict[str, Any]], str | None]:
            rows = Agents(tx).list(after=after, limit=limit)
            hidden = self.agents_out_of_reach(tx, call, "agent.read", [row["id"] for row in rows])
            return paged(rows, limit, lambda row: row["id"] not in hidden)

        rows, next_after = await self.database.transact(list_)
        return Page([agent_info(row, self.now()) for row in rows], next_after)

    async def agents_get(self, call: Call) -> wire.AgentInfo:
        def get(tx: Tx) -> dict[str, Any]:
            self.require_in_reach(tx, call, "agent.read", "agent", call.params["agent_id"], hide=True)
            return Agents(tx).get(call.params["agent_id"])

        return agent_info(await self.database.transact(get), self.now())

    async def agents_retire(self, call: Call) -> wire.AgentInfo:
        """Retire a host from the fleet: its identity key is refused from now on (the
        agent, told so at its next poll, stops and does not restart), open jobs on its
        certificates are cancelled with their orders, other orders for it are
        withdrawn, and its certificates leave the renewal schedule."""
        agent_id = call.params["agent_id"]
        now = self.now()

        def retire(tx: Tx) -> tuple[dict[str, Any], dict[str, int]]:
            agents = Agents(tx)
            agent = agents.get(agent_id)
            self.require_in_reach(tx, call, "agent.read", "agent", agent_id, hide=True)
            self.require_in_reach(tx, call, "agent.retire", "agent", agent_id)
            if agent["retired_at"] is not None:
                raise errors.Conflict("the agent is already retired", slug="agent-retired")
            agents.retire(agent_id, now)
            self.integrity.seal(tx, "agents", agent_id)
            cancelled_jobs = 0
            for job in tx.all("SELECT j.* FROM jobs j JOIN certificates c ON c.id = j.certificate_id"
                              " WHERE c.agent_id = ?", (agent_id,)):
                if job["state"] in TERMINAL:
                    continue
                self._withdraw_order(tx, job, "the agent was retired")
                self.job_event(tx, call, job, JobEvent.CANCELLED, "the agent was retired")
                cancelled_jobs += 1
            withdrawn = 0
            orders = WorkOrders(tx)
            for order in tx.all("SELECT id, status FROM work_orders WHERE agent_id = ?", (agent_id,)):
                if order["status"] in WorkOrders.ACTIVE:
                    orders.set_status(order["id"], "cancelled", now, "the agent was retired")
                    withdrawn += 1
            unscheduled = tx.execute("UPDATE certificates SET renew_at = NULL WHERE agent_id = ?"
                                     " AND renew_at IS NOT NULL", (agent_id,))
            counts = {"jobs_cancelled": cancelled_jobs, "orders_withdrawn": withdrawn,
                      "certificates_unscheduled": unscheduled}
            self.record(tx, call, resource_type="agent", resource_id=agent_id,
                        details={"name": agent["name"], **counts})
            return agents.get(agent_id), counts

        row, _ = await self.database.transact(retire)
        self.wake(agent_id)  # a waiting long poll returns now; the next one is refused
        return agent_info(row, now)
