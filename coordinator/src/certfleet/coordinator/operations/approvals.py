"""Four-eyes approval: requests under an approval-tier profile wait for a second person.

"A second person" is a different user, or for keys without a user a different key,
whose key was not minted by the requester's (directly or through other keys) and did
not mint it: a user name on an API key is a label its minter chose. The requester can
never decide their own request, and undecided requests expire.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from certfleet.shared import wire

from .. import errors
from ..core import Call, Page, page_request, paged
from ..lifecycle.jobs import JobEvent
from ..storage import ApiKeys, Approvals, Certificates, Jobs, Profiles, Tx
from .certificates import CertificateOperations
from .jobs import SUPERVISOR

__all__ = ["ApprovalOperations"]


def _approval_info(row: dict[str, Any]) -> wire.ApprovalInfo:
    return wire.ApprovalInfo(id=row["id"], kind=row["kind"], subject_id=row["subject_id"], profile_id=row["profile_id"],
                             status=row["status"], requested_by=row["requested_by"], created_at=row["created_at"],
                             expires_at=row["expires_at"], decided_by=row["decided_by"],
                             decision_note=row["decision_note"])


MAX_CHAIN = 64
"""How many minting steps are followed; a longer chain is cut there."""


def _minting_chain(tx: Tx, actor: str) -> list[str]:
    """Who stands behind a credential: its own person first (its user, or the key itself
    when it has none), then the person behind every key up the chain that minted it.

    A key's user is a label its minter chose, so an admin who mints a second key for a
    made-up user still stands behind both: a key never counts as a second person to a
    key it was minted by, or minted."""
    chain: list[str] = []
    seen: set[str] = set()
    while actor.startswith("api-key:") and actor not in seen and len(seen) < MAX_CHAIN:
        seen.add(actor)
        row = ApiKeys(tx).find(actor.removeprefix("api-key:"))
        if row is None:
            break
        chain.append(f"user:{row['user_id']}" if row["user_id"] else actor)
        actor = row["created_by"]
    return chain or [actor]


class ApprovalOperations(CertificateOperations):
    def expire_approvals(self, tx: Tx) -> None:
        for row in Approvals(tx).expire_due(self.now()):
            if row["kind"] == "issuance":
                Certificates(tx).set_status(row["subject_id"], "approval-expired", self.now())
                self._close_waiting_job(tx, row, "the approval request expired")

    def _close_waiting_job(self, tx: Tx, approval: dict[str, Any], reason: str) -> None:
        job = Jobs(tx).active_for_certificate(approval["subject_id"])
        if job is not None:
            self.job_event(tx, Call(SUPERVISOR, operation="approval.close"), job, JobEvent.REFUSED, reason,
                           last_error=reason)

    async def expire_pending_approvals(self) -> None:
        await self.database.transact(self.expire_approvals)

    async def approvals_list(self, call: Call) -> Page:
        after, limit = page_request(call)
        visible = self.profile_visible(call, "approval.read")

        def listing(tx: Tx) -> tuple[list[dict[str, Any]], str | None]:
            self.expire_approvals(tx)
            return paged(Approvals(tx).list(call.query.get("status"), after=after, limit=limit), limit, visible)

        rows, next_after = await self.database.transact(listing)
        return Page([_approval_info(r) for r in rows], next_after)

    def _decide(self, tx: Tx, call: Call, approve: bool) -> dict[str, Any]:
        self.expire_approvals(tx)
        approvals = Approvals(tx)
        row = approvals.get(call.params["approval_id"])
        profile = Profiles(tx).get(row["profile_id"])
        self.require_on_profile(call, "approval.decide", profile)
        if row["status"] != "pending":
            raise errors.Conflict(f"this request is {row['status']}", slug="approval-closed")
        if (call.principal.user or call.principal.actor) == row["requester"]:
            raise errors.Forbidden("a request needs a second person: you cannot decide your own",
                                   slug="four-eyes")
        requester_chain = _minting_chain(tx, row["requested_by"])
        approver_chain = _minting_chain(tx, call.principal.actor)
        if requester_chain[0] in approver_chain or approver_chain[0] in requester_chain:
            raise errors.Forbidden("a request needs a second person: the requester's key and yours were minted"
                                   " one by the other, so they may be one person", slug="four-eyes")
        status = "approved" if approve else "rejected"
        approvals.decide(row["id"], status=status, decided_by=call.principal.actor, note=call.body.note,
                         now=self.now())
        self.record(tx, call, resource_type="approval", resource_id=row["id"],
                    details={"kind": row["kind"], "subject_id": row["subject_id"]})
        if row["kind"] == "issuance":
            certificates = Certificates(tx)
            job = Jobs(tx).active_for_certificate(row["subject_id"])
            if approve:
                self.queue_issue(tx, call, certificates.get(row["subject_id"]), job, event=JobEvent.QUEUED)
            else:
                certificates.set_status(row["subject_id"], "rejected", self.now(), call.body.note or None)
                self._close_waiting_job(tx, row, f"rejected: {call.body.note}")
        elif row["kind"] == "profile-edit" and approve:
            payload = json.loads(row["payload"])
            self.apply_profile_policy(tx, call, profile, msgspec.convert(payload["policy"], wire.ProfilePolicy),
                                      payload["expected_version"])
        return approvals.get(row["id"])

    async def approvals_approve(self, call: Call) -> wire.ApprovalInfo:
        row = await self.database.transact(lambda tx: self._decide(tx, call, True))
        if row["kind"] == "issuance":
            agent = await self.database.transact(lambda tx: Certificates(tx).get(row["subject_id"])["agent_id"])
            self.wake(agent)
        return _approval_info(row)

    async def approvals_reject(self, call: Call) -> wire.ApprovalInfo:
        return _approval_info(await self.database.transact(lambda tx: self._decide(tx, call, False)))
