"""The agent protocol, coordinator side.

Isolation: an agent sees only what is addressed or bound to it. Every lookup is
filtered by the calling agent's id, and anything else answers 404, so an agent
cannot even learn whether another agent's order or certificate exists.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import msgspec
import trio
from cryptography.hazmat.primitives import serialization

from certfleet.shared import wire
from certfleet.shared.pki import CsrError, certificate_fingerprint, parse_csr
from certfleet.shared.wire.agent import (
    MAX_REPORT_DETAIL,
    MAX_REPORT_ORDER_ID,
    MAX_REPORT_REASON,
    MAX_RESULT_DETAIL,
    MAX_RESULT_FINGERPRINT,
)
from certfleet.shared.workorder import OrderKind

from .. import errors
from ..core import Call, CoordinatorBase, printable
from ..lifecycle.jobs import TERMINAL, JobEvent, JobState
from ..storage import Agents, Certificates, Issuers, Tx, WorkOrders
from .certificates import certificate_info

__all__ = ["MAX_POLL_WAIT", "AgentOperations"]

MAX_POLL_WAIT = 30
# Orders queued by another coordinator (several behind a load balancer) reach the
# long polls waiting here within this many seconds: one query per coordinator per
# interval finds them, whatever the number of waiting polls.
POLL_RECHECK = 5.0


def _escaped_result(result: wire.OrderResult) -> wire.OrderResult:
    """``result`` with the text the agent wrote spelt printable (:func:`printable`). A
    reload command's output may hold anything, NUL and terminal escapes included: it
    reaches operators' terminals and notifications, PostgreSQL cannot store NUL, and a
    result refused for its text would leave the order open and the agent retrying it
    for ever. Kept to the wire's length limit."""
    fingerprint = result.fingerprint_sha256
    return msgspec.structs.replace(result, detail=printable(result.detail)[:MAX_RESULT_DETAIL],
                                   fingerprint_sha256=None if fingerprint is None else printable(fingerprint)[:MAX_RESULT_FINGERPRINT])


def _escaped_report(report: wire.AgentReport) -> wire.AgentReport:
    """``report`` with the text the agent wrote spelt printable, as results are."""
    return msgspec.structs.replace(
        report, reason=printable(report.reason)[:MAX_REPORT_REASON],
        detail=printable(report.detail)[:MAX_REPORT_DETAIL],
        order_id=None if report.order_id is None else printable(report.order_id)[:MAX_REPORT_ORDER_ID])


def _spki_sha256(public_key: Any) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


class AgentOperations(CoordinatorBase):
    async def agent_work(self, call: Call) -> wire.WorkBatch:
        """Long poll: answer at once if orders wait, else when one is queued or ``wait``
        seconds pass."""
        agent_id = call.principal.id
        wait = max(0, min(int(call.query.get("wait") or 0), MAX_POLL_WAIT))
        deadline = trio.current_time() + wait

        woken = False

        def take(tx: Tx) -> list[dict[str, Any]]:
            if woken and Agents(tx).get(agent_id)["retired_at"] is not None:
                # Retired while this poll waited: say so now rather than at the next poll.
                raise errors.Gone("this agent was retired", slug="agent-retired")
            orders = WorkOrders(tx)
            rows = orders.deliverable(agent_id, self.now())
            orders.mark_dispatched([row["id"] for row in rows], self.now())
            for row in rows:
                job = self.job_for_order(tx, row["id"])
                if job is not None and job["state"] == JobState.PENDING:
                    self.job_event(tx, call, job, JobEvent.DELIVERED, "the agent took the order")
            return rows

        while True:
            event = self._wakeups.setdefault(agent_id, trio.Event())
            # Until woken, a poll most likely finds nothing: it yields the database to
            # work that does (see Database.transact). A woken poll delivers an order.
            rows = await self.database.transact(take, idle=not woken)
            remaining = deadline - trio.current_time()
            if rows or remaining <= 0:
                return wire.WorkBatch(orders=[wire.Delivery(id=r["id"], token=r["token"]) for r in rows])
            # Nothing re-reads the database while waiting: whatever queues an order
            # here wakes the poll, and wake_polls_for_queued_orders covers the rest.
            with trio.move_on_after(remaining):
                await event.wait()
            if not event.is_set():
                return wire.WorkBatch(orders=[])
            woken = True

    async def wake_polls_for_queued_orders(self, interval: float = POLL_RECHECK) -> None:
        """Wake the long polls waiting here whose agent has a queued order this process
        did not queue itself (another coordinator did, or a path that does not wake).
        Runs on every coordinator, leader or not, until cancelled."""
        while True:
            await trio.sleep(interval)
            if not self._wakeups:
                continue
            agent_ids = await self.database.transact(lambda tx: WorkOrders(tx).agents_with_queued(self.now()))
            for agent_id in agent_ids:
                self.wake(agent_id)

    async def prune_used_token_ids(self) -> int:
        """Forget agent request-token ids long past their expiry (upkeep, on the leader)."""
        return await self.database.transact(lambda tx: Agents(tx).prune_token_ids(self.now()))

    async def agent_csr(self, call: Call) -> wire.CertificateBundle:
        agent_id, order_id = call.principal.id, call.params["order_id"]
        try:
            parsed = parse_csr(call.body.csr)
        except CsrError as exc:
            raise errors.BadRequest(str(exc), slug="invalid-csr") from exc
        public_key = parsed.csr.public_key()
        key_sha256 = _spki_sha256(public_key)
        now = self.now()

        def issue(tx: Tx) -> tuple[dict[str, Any], str]:
            """The version issued for this order and its issuer's chain."""
            order = WorkOrders(tx).find_for_agent(order_id, agent_id)
            if order["kind"] != OrderKind.ISSUE:
                raise errors.Conflict("this work order does not take a CSR")
            certificates = Certificates(tx)
            existing = certificates.version_for_order(order_id)
            if existing is not None:
                if existing["public_key_sha256"] != key_sha256:
                    raise errors.Conflict("a certificate for another key was already issued for this order",
                                          slug="order-already-issued")
                return existing, Issuers(tx).get(existing["issuer_id"])["chain_pem"]
            if order["status"] not in WorkOrders.ACTIVE or order["expires_at"] <= now:
                raise errors.Conflict(f"work order is {order['status']}", slug="order-not-active")
            certificate = certificates.get(order["certificate_id"])
            if certificate["status"] == "revoked":
                raise errors.Conflict("the certificate was revoked", slug="certificate-revoked")
            if parsed.key_type != certificate["key_type"]:
                raise errors.UnprocessableEntity(
                    f"CSR key is {parsed.key_type}, the order asks for {certificate['key_type']}", slug="csr-key-type")
            expected = set(json.loads(certificate["names"]))
            if parsed.names != expected:
                extra, missing = sorted(parsed.names - expected), sorted(expected - parsed.names)
                raise errors.UnprocessableEntity(
                    "CSR names do not match the order"
                    + (f"; not in the order: {', '.join(extra)}" if extra else "")
                    + (f"; missing: {', '.join(missing)}" if missing else ""),
                    slug="csr-names")
            issued, issuer = self.issue_under_profile(tx, certificate, public_key, parsed.key_type)
            leaf = issued.certificate
            version = dict(
                serial=issued.serial_hex, certificate_id=certificate["id"], order_id=order_id,
                issuer_id=issuer["id"], certificate_pem=issued.pem, public_key_sha256=key_sha256,
                fingerprint_sha256=certificate_fingerprint(leaf),
                not_before=int(leaf.not_valid_before_utc.timestamp()),
                not_after=int(leaf.not_valid_after_utc.timestamp()))
            certificates.add_version(**version, now=now)
            certificates.set_status(certificate["id"], "issued", now)
            WorkOrders(tx).set_status(order_id, "issued", now)
            job = self.job_for_order(tx, order_id)
            if job is not None and job["state"] in (JobState.PENDING, JobState.DISPATCHED):
                self.job_event(tx, call, job, JobEvent.ISSUED, f"serial {issued.serial_hex}")
            self.record(tx, call, resource_type="certificate", resource_id=certificate["id"],
                        details={"serial": issued.serial_hex, "order_id": order_id, "issuer_id": issuer["id"]})
            return version, issuer["chain_pem"]

        started = time.monotonic()
        version, chain = await self.database.transact(issue)
        self.telemetry.issuance_seconds.observe(time.monotonic() - started)
        return wire.CertificateBundle(certificate=version["certificate_pem"], chain=chain,
                                      serial=version["serial"], not_after=version["not_after"])

    async def agent_result(self, call: Call) -> wire.ResultAck:
        agent_id, order_id = call.principal.id, call.params["order_id"]
        body = _escaped_result(call.body)
        now = self.now()

        rolled_back = body.status == "failed" and body.deployment is not None and body.deployment.rolled_back

        def record(tx: Tx) -> str | None:
            """Record the result; the kind of the order, if it is new."""
            orders = WorkOrders(tx)
            order = orders.find_for_agent(order_id, agent_id)
            if order["status"] == body.status:
                return None  # the outbox re-sent a result we already have
            if order["status"] not in WorkOrders.ACTIVE:
                raise errors.Conflict(f"work order is already {order['status']}", slug="order-complete")
            orders.set_status(order_id, body.status, now, body.detail)
            if order["kind"] in (OrderKind.SCAN, OrderKind.PROBE):
                # The finds came in discovery reports; the result is the agent's summary.
                self.record(tx, call, resource_type="work-order", resource_id=order_id,
                            outcome="success" if body.status == "succeeded" else "failed",
                            details={"kind": order["kind"], "detail": body.detail[:512]})
                return order["kind"]
            if order["kind"] == OrderKind.CHECK_TARGET:
                self.record_check(tx, order["target_id"], body)
                self.record(tx, call, resource_type="work-order", resource_id=order_id,
                            outcome="success" if body.status == "succeeded" else "failed",
                            details={"detail": body.detail[:512]})
                return order["kind"]
            if order["certificate_id"]:
                self.count_deployment(tx, order["target_id"], body)
                succeeded = body.status == "succeeded"
                Certificates(tx).set_status(order["certificate_id"], "deployed" if succeeded else "failed",
                                            now, None if succeeded else body.detail)
                if succeeded:
                    self.schedule_renewal(tx, order["certificate_id"])
            job = self.job_for_order(tx, order_id)
            self.emit(tx, kind="deployment." + ("succeeded" if body.status == "succeeded" else
                                                "rolled-back" if rolled_back else "failed"),
                      severity="info" if body.status == "succeeded" else "warning",
                      subject=f"certificate:{order['certificate_id']}",
                      summary=f"deployment by {agent_id} {body.status}" + (f": {body.detail}" if body.detail else ""),
                      # Once per job for failures: retries of the same job do not page again.
                      dedup_key=f"deployment:{job['id'] if job else order_id}:{body.status}",
                      details={"order_id": order_id, "fingerprint_sha256": body.fingerprint_sha256})
            if job is not None and job["state"] not in TERMINAL:
                if body.status == "succeeded":
                    self.job_event(tx, call, job, JobEvent.DEPLOYED, body.detail or "deployed")
                else:
                    self.job_attempt_failed(tx, call, job, body.detail or "the agent reported a failure",
                                            retryable=body.retryable)
            self.record(tx, call, resource_type="work-order", resource_id=order_id,
                        outcome="success" if body.status == "succeeded" else "failed",
                        details={"fingerprint_sha256": body.fingerprint_sha256, "detail": body.detail[:512]})
            return order["kind"]

        kind = await self.database.transact(record)
        if kind == OrderKind.ISSUE:
            outcome = "succeeded" if body.status == "succeeded" else "rolled-back" if rolled_back else "failed"
            self.telemetry.deployments.labels(outcome=outcome).inc()
        return wire.ResultAck(accepted=True)

    async def agent_report(self, call: Call) -> wire.ResultAck:
        agent_id = call.principal.id
        body = _escaped_report(call.body)
        now = self.now()

        def record(tx: Tx) -> None:
            Agents(tx).add_event(agent_id=agent_id, event=body.event, order_id=body.order_id,
                                 reason=body.reason, detail=body.detail, now=now)
            order = None
            if body.order_id:
                order = tx.one("SELECT * FROM work_orders WHERE id = ? AND agent_id = ?", (body.order_id, agent_id))
            if order is not None and order["status"] in WorkOrders.ACTIVE:
                detail = f"agent refused the work order ({body.reason}): {body.detail}"
                WorkOrders(tx).set_status(order["id"], "refused", now, detail)
                if order["certificate_id"]:
                    Certificates(tx).set_status(order["certificate_id"], "failed", now, detail)
                job = self.job_for_order(tx, order["id"])
                if job is not None and job["state"] not in TERMINAL:
                    self.job_attempt_failed(tx, call, job, detail)
            if body.event == "certificate-drift":
                # A deployed file was replaced behind certfleet's back: the next renewal
                # would overwrite it, and until then the host may serve something else.
                digest = hashlib.sha256(body.detail.encode()).hexdigest()[:32]
                self.emit(tx, kind="certificate.drift", severity="warning", subject=f"agent:{agent_id}",
                          summary=f"a file certfleet deployed was changed on agent {agent_id}: {body.detail}",
                          dedup_key=f"drift:{agent_id}:{digest}", details={"detail": body.detail})
                self.record(tx, call, resource_type="agent", resource_id=agent_id,
                            details={"event": body.event, "reason": body.reason})
            else:
                self.record(tx, call, resource_type="work-order", resource_id=body.order_id or "-",
                            details={"event": body.event, "reason": body.reason})

        await self.database.transact(record)
        return wire.ResultAck(accepted=True)

    async def agent_certificate(self, call: Call) -> wire.CertificateInfo:
        def get(tx: Tx) -> dict[str, Any]:
            row = Certificates(tx).get(call.params["certificate_id"])
            if row["agent_id"] != call.principal.id:
                raise errors.NotFound("no such certificate")
            return row

        return certificate_info(await self.database.transact(get))
