"""Jobs: each issuance or renewal from request to deployed certificate, across as
many work orders as its retries need. Every transition goes through the table in
:mod:`..lifecycle.jobs` and is audited with its reason."""

from __future__ import annotations

import random
from typing import Any

from certfleet.shared import wire

from .. import errors
from ..auth.principal import Principal, PrincipalKind
from ..core import Call, Page, new_id, page_request, paged
from ..lifecycle.jobs import TERMINAL, JobEvent, JobState, advance, retry_delay
from ..storage import Certificates, Jobs, Profiles, Tx, WorkOrders
from .notifications import NotificationOperations

__all__ = ["JobOperations"]

MAX_ATTEMPTS = 5
PICKUP_TIMEOUT = 6 * 3600
"""An order nobody picked up in this long is withdrawn and retried."""
SILENT_TIMEOUT = 2 * 3600
"""An agent that took an order and said nothing for this long is presumed stuck."""
SUPERVISOR = Principal(PrincipalKind.ANONYMOUS, "job-supervisor")
_rng = random.SystemRandom()


def _job_info(row: dict[str, Any]) -> wire.JobInfo:
    return wire.JobInfo(id=row["id"], certificate_id=row["certificate_id"], kind=row["kind"], state=row["state"],
                        attempts=row["attempts"], max_attempts=row["max_attempts"], order_id=row["order_id"],
                        next_attempt_at=row["next_attempt_at"], last_error=row["last_error"],
                        created_at=row["created_at"], updated_at=row["updated_at"])


class JobOperations(NotificationOperations):
    pickup_timeout = PICKUP_TIMEOUT
    silent_timeout = SILENT_TIMEOUT

    def open_jobs(self, tx: Tx, call: Call, certificates: list[dict[str, Any]], *, kind: str,
                  states: list[JobState]) -> list[dict[str, Any]]:
        """A job of ``kind`` for each certificate, in the state beside it; the rows."""
        job_ids = [new_id("job") for _ in certificates]
        Jobs(tx).insert_many([(job_id, certificate["id"], str(state))
                              for job_id, certificate, state in zip(job_ids, certificates, states, strict=True)],
                             kind=kind, max_attempts=MAX_ATTEMPTS, now=self.now())
        for job_id, certificate, state in zip(job_ids, certificates, states, strict=True):
            self.record(tx, call, action="job.open", resource_type="job", resource_id=job_id,
                        details={"certificate_id": certificate["id"], "kind": kind, "state": str(state)})
        rows = Jobs(tx).get_many(job_ids)
        return [rows[job_id] for job_id in job_ids]

    def job_event(self, tx: Tx, call: Call, job: dict[str, Any], event: JobEvent, reason: str,
                  **fields: Any) -> JobState:
        """Apply ``event`` to ``job``; raises ``ValueError`` if the table forbids it."""
        state = advance(JobState(job["state"]), event)
        Jobs(tx).update(job["id"], self.now(), state=str(state), **fields)
        self.record(tx, call, action="job.transition", resource_type="job", resource_id=job["id"],
                    details={"from": job["state"], "to": str(state), "event": str(event), "reason": reason[:512]})
        if state in (JobState.DONE, JobState.FAILED) and event != JobEvent.CANCELLED:
            succeeded = state == JobState.DONE
            if job["kind"] == "renewal" or not succeeded:
                self.emit(tx, kind=f"{job['kind']}.{'succeeded' if succeeded else 'failed'}",
                          severity="info" if succeeded else "critical", subject=f"certificate:{job['certificate_id']}",
                          summary=f"{job['kind']} of {job['certificate_id']} {'succeeded' if succeeded else 'failed'}"
                                  + ("" if succeeded else f" ({reason}): {fields.get('last_error') or ''}"),
                          dedup_key=f"job:{job['id']}:{state}", details={"job_id": job["id"]})
        return state

    def job_for_order(self, tx: Tx, order_id: str) -> dict[str, Any] | None:
        return Jobs(tx).for_order(order_id)

    def job_attempt_failed(self, tx: Tx, call: Call, job: dict[str, Any], error: str, *, retryable: bool = True) -> None:
        """Schedule the next attempt with backoff, or give up once the cap is reached."""
        if not retryable:
            self.job_event(tx, call, job, JobEvent.REFUSED, error, last_error=error[:2000])
        elif job["attempts"] >= job["max_attempts"]:
            self.job_event(tx, call, job, JobEvent.GAVE_UP, f"{job['attempts']} attempts failed",
                           last_error=error[:2000])
        else:
            delay = int(retry_delay(job["attempts"], _rng))
            self.job_event(tx, call, job, JobEvent.ATTEMPT_FAILED, error, last_error=error[:2000],
                           next_attempt_at=self.now() + delay)

    def _withdraw_order(self, tx: Tx, job: dict[str, Any], why: str) -> None:
        if job["order_id"]:
            order = tx.one("SELECT status FROM work_orders WHERE id = ?", (job["order_id"],))
            if order is not None and order["status"] in WorkOrders.ACTIVE:
                WorkOrders(tx).set_status(job["order_id"], "cancelled", self.now(), why)

    async def advance_jobs(self) -> dict[str, int]:
        """Retries that are due get a new order; stalled attempts time out."""
        now = self.now()

        def supervise(tx: Tx) -> dict[str, int]:
            call = Call(SUPERVISOR, operation="job.supervise")
            jobs, counts = Jobs(tx), {"retried": 0, "timed_out": 0}
            for job in jobs.stalled(pending_before=now - self.pickup_timeout, working_before=now - self.silent_timeout):
                why = ("the agent did not pick up the order" if job["state"] == JobState.PENDING
                       else "the agent went quiet mid-job")
                self._withdraw_order(tx, job, why)
                self.job_attempt_failed(tx, call, job, why)
                counts["timed_out"] += 1
            for job in jobs.due_retries(now):
                certificate = Certificates(tx).get(job["certificate_id"])
                self.queue_issue(tx, call, certificate, job, event=JobEvent.RETRY_DUE)
                counts["retried"] += 1
            return counts

        counts = await self.database.transact(supervise)
        return counts

    # --- operators ------------------------------------------------------------------------

    def _job_in_reach(self, tx: Tx, call: Call, permission: str) -> dict[str, Any]:
        """The job named in the path, if ``permission`` covers its certificate's profile
        (a job out of reach is as absent as one that does not exist)."""
        job = Jobs(tx).get(call.params["job_id"])
        certificate = Certificates(tx).get(job["certificate_id"])
        self.require_on_profile(call, permission, Profiles(tx).get(certificate["profile_id"]), hide=True)
        return job

    async def jobs_list(self, call: Call) -> Page:
        after, limit = page_request(call)
        everything, profiles, issuers = call.principal.permissions.profile_filter("job.read")
        rows, next_after = paged(await self.database.transact(lambda tx: Jobs(tx).list(
            state=call.query.get("state"), certificate_id=call.query.get("certificate_id"),
            within=None if everything else (profiles, issuers), after=after, limit=limit)), limit)
        return Page([_job_info(r) for r in rows], next_after)

    async def jobs_get(self, call: Call) -> wire.JobInfo:
        return _job_info(await self.database.transact(lambda tx: self._job_in_reach(tx, call, "job.read")))

    async def jobs_retry(self, call: Call) -> wire.JobInfo:
        """A failed job is retried as a new job of the same kind: it takes the whole
        path again, an approval-tier profile's second person included."""

        def retry(tx: Tx) -> dict[str, Any]:
            jobs = Jobs(tx)
            job = self._job_in_reach(tx, call, "job.retry")
            if job["state"] != JobState.FAILED:
                raise errors.Conflict(f"only a failed job can be retried; this one is {job['state']}",
                                      slug="job-not-failed")
            if jobs.active_for_certificate(job["certificate_id"]) is not None:
                raise errors.Conflict("the certificate has another job in flight", slug="job-in-flight")
            self.record(tx, call, resource_type="job", resource_id=job["id"], details={"reason": "operator retry"})
            self.request_issuance(tx, call, Certificates(tx).get(job["certificate_id"]), kind=job["kind"])
            return jobs.active_for_certificate(job["certificate_id"])  # type: ignore[return-value]

        row = await self.database.transact(retry)
        agent = await self.database.transact(lambda tx: Certificates(tx).get(row["certificate_id"])["agent_id"])
        self.wake(agent)
        return _job_info(row)

    async def jobs_cancel(self, call: Call) -> wire.JobInfo:
        def cancel(tx: Tx) -> dict[str, Any]:
            job = self._job_in_reach(tx, call, "job.cancel")
            if job["state"] in TERMINAL:
                raise errors.Conflict(f"the job is already {job['state']}", slug="job-closed")
            self._withdraw_order(tx, job, "job cancelled by an operator")
            self.record(tx, call, resource_type="job", resource_id=job["id"], details={"state": job["state"]})
            self.job_event(tx, call, job, JobEvent.CANCELLED, "cancelled by an operator")
            # "deployed" only if an earlier deployment succeeded and its certificate is
            # still valid: a version that was issued but never deployed does not count.
            certificates = Certificates(tx)
            live = certificates.unrevoked_versions(job["certificate_id"], self.now())
            deployed_before = tx.one("SELECT 1 AS yes FROM work_orders WHERE certificate_id = ? AND kind = 'issue'"
                                     " AND status = 'succeeded' LIMIT 1", (job["certificate_id"],))
            certificates.set_status(job["certificate_id"], "deployed" if live and deployed_before else "cancelled",
                                    self.now())
            return Jobs(tx).get(job["id"])

        return _job_info(await self.database.transact(cancel))
