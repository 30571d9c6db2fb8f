"""Renewal: policies, planning each certificate's next renewal, and starting the
renewals that are due.

A renewal is an ordinary issuance through :meth:`request_issuance` (so an
approval-tier profile holds it for a second person), with a new key unless the
policy opts into reuse. At most one renewal per certificate is in flight: a
certificate with an active order is never picked again.
"""

from __future__ import annotations

import random
from typing import Any

from certfleet.shared import wire

from .. import errors
from ..auth.principal import Principal, PrincipalKind
from ..core import Call, Page, new_id, page_request, paged
from ..lifecycle.planning import DEFAULT_POLICY, RenewalPolicy, plan_renewal
from ..storage import Certificates, RenewalPolicies, Tx
from .approvals import ApprovalOperations

__all__ = ["RenewalOperations"]

SCHEDULER = Principal(PrincipalKind.ANONYMOUS, "renewal-scheduler")
# Renewals started per transaction: small enough that the agents' requests are not held
# up behind one long write (SQLite has one writer), large enough to amortize commits.
RENEWAL_BATCH = 200
_rng = random.SystemRandom()


def _policy_info(row: dict[str, Any]) -> wire.RenewalPolicyInfo:
    return wire.RenewalPolicyInfo(id=row["id"], name=row["name"], jitter=row["jitter"], reuse_key=bool(row["reuse_key"]),
                                  created_at=row["created_at"], fraction=row["fraction"],
                                  lead_seconds=row["lead_seconds"])


def _policy(row: dict[str, Any] | None) -> RenewalPolicy:
    if row is None:
        return DEFAULT_POLICY
    return RenewalPolicy(fraction=row["fraction"], lead_seconds=row["lead_seconds"], jitter=row["jitter"],
                         reuse_key=bool(row["reuse_key"]))


class RenewalOperations(ApprovalOperations):
    async def renewal_policies_list(self, call: Call) -> Page:
        after, limit = page_request(call)
        rows, next_after = paged(await self.database.transact(
            lambda tx: RenewalPolicies(tx).list(after=after, limit=limit)), limit)
        return Page([_policy_info(r) for r in rows], next_after)

    async def renewal_policies_create(self, call: Call) -> wire.RenewalPolicyInfo:
        body: wire.RenewalPolicyCreate = call.body
        policy_id = new_id("rnp")

        def create(tx: Tx) -> dict[str, Any]:
            policies = RenewalPolicies(tx)
            if policies.find(body.name) is not None:
                raise errors.Conflict(f"a renewal policy named {body.name!r} exists")
            policies.insert(id=policy_id, name=body.name, fraction=body.fraction, lead_seconds=body.lead_seconds,
                            jitter=body.jitter, reuse_key=body.reuse_key, now=self.now())
            self.record(tx, call, resource_type="renewal-policy", resource_id=policy_id,
                        details={"fraction": body.fraction, "lead_seconds": body.lead_seconds,
                                 "reuse_key": body.reuse_key})
            return policies.find(policy_id)  # type: ignore[return-value]

        return _policy_info(await self.database.transact(create))

    def resolve_renewal_policy(self, tx: Tx, name_or_id: str | None) -> str | None:
        if name_or_id is None:
            return None
        row = RenewalPolicies(tx).find(name_or_id)
        if row is None:
            raise errors.UnprocessableEntity(f"no renewal policy {name_or_id!r}", slug="unknown-renewal-policy")
        return row["id"]

    def schedule_renewal(self, tx: Tx, certificate_id: str) -> int | None:
        """Plan the next renewal of a just-deployed certificate; returns the time."""
        certificates = Certificates(tx)
        certificate = certificates.get(certificate_id)
        version = certificates.latest_version(certificate_id)
        if version is None:
            return None
        policy_row = RenewalPolicies(tx).find(certificate["renewal_policy_id"] or "")
        renew_at = int(plan_renewal(version["not_before"], version["not_after"], _policy(policy_row),
                                    now=self.now(), rng=_rng))
        certificates.set_renew_at(certificate_id, renew_at)
        return renew_at

    def reusable_key_orders(self, tx: Tx, certificates: list[dict[str, Any]]) -> dict[str, str]:
        """Certificate id → the order whose key its next issuance reuses, for the
        certificates whose renewal policy opts in and that have a version."""
        policies = RenewalPolicies(tx).find_many(
            {c["renewal_policy_id"] for c in certificates if c["renewal_policy_id"]})
        reusing = [c["id"] for c in certificates
                   if _policy(policies.get(c["renewal_policy_id"] or "")).reuse_key]
        return Certificates(tx).latest_order_ids(reusing) if reusing else {}

    async def start_due_renewals(self, batch: int = RENEWAL_BATCH) -> list[str]:
        """Start a renewal for every certificate whose time has come; returns their ids.

        In transactions of ``batch`` certificates, each one's agents woken as soon as it
        commits: a storm of thousands due at once is started in one call, while the
        agents' CSRs for the first batches are already being answered in between."""
        now = self.now()
        call = Call(SCHEDULER, operation="renewal.start")

        def start(tx: Tx) -> list[dict[str, Any]]:
            certificates = Certificates(tx)
            due = certificates.due_for_renewal(now, limit=batch)
            certificates.set_renew_at_many([certificate["id"] for certificate in due], None)
            for certificate in due:
                self.record(tx, call, resource_type="certificate", resource_id=certificate["id"],
                            details={"reason": "renewal time reached"})
            if due:
                self.request_issuances(tx, call, due, kind="renewal")
            return due

        started_ids: list[str] = []
        while True:
            started = await self.database.transact(start, ahead=True)
            for certificate in started:
                self.wake(certificate["agent_id"])
            started_ids += [c["id"] for c in started]
            if len(started) < batch:
                return started_ids
