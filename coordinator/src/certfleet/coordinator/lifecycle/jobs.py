"""Issuance and renewal jobs as an explicit state machine (as h11 keeps its
connection states): a transition table, and one function that refuses anything the
table does not list.

A job lives from the request to the deployed certificate, across as many work
orders as its retries need. Failures that may pass (a reload that failed, an agent
that went quiet) wait with exponential backoff and full jitter, up to a cap of
attempts; then the job fails with its last error kept, and operators can retry or
cancel it. A retried job starts over as a new job, so it takes the whole path again.
"""

from __future__ import annotations

import enum
import random

__all__ = ["ACTIVE", "TERMINAL", "JobEvent", "JobState", "advance", "retry_delay"]


class JobState(enum.StrEnum):
    AWAITING_APPROVAL = "awaiting-approval"
    PENDING = "pending"            # an order is queued for the agent
    DISPATCHED = "dispatched"      # the agent has the order
    DEPLOYING = "deploying"        # the certificate is issued; the agent deploys it
    RETRY_WAIT = "retry-wait"      # the last attempt failed; the next one is scheduled
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobEvent(enum.StrEnum):
    QUEUED = "queued"
    DELIVERED = "delivered"
    ISSUED = "issued"
    DEPLOYED = "deployed"
    ATTEMPT_FAILED = "attempt-failed"
    TIMED_OUT = "timed-out"
    RETRY_DUE = "retry-due"
    GAVE_UP = "gave-up"
    REFUSED = "refused"            # a failure no retry can fix (policy, rejection)
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})
ACTIVE = frozenset(JobState) - TERMINAL

_TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    (JobState.AWAITING_APPROVAL, JobEvent.QUEUED): JobState.PENDING,
    (JobState.PENDING, JobEvent.DELIVERED): JobState.DISPATCHED,
    (JobState.PENDING, JobEvent.ISSUED): JobState.DEPLOYING,
    (JobState.DISPATCHED, JobEvent.ISSUED): JobState.DEPLOYING,
    (JobState.DEPLOYING, JobEvent.DEPLOYED): JobState.DONE,
    (JobState.RETRY_WAIT, JobEvent.RETRY_DUE): JobState.PENDING,
}
for _state in (JobState.PENDING, JobState.DISPATCHED, JobState.DEPLOYING):
    _TRANSITIONS[(_state, JobEvent.ATTEMPT_FAILED)] = JobState.RETRY_WAIT
    _TRANSITIONS[(_state, JobEvent.TIMED_OUT)] = JobState.RETRY_WAIT
    _TRANSITIONS[(_state, JobEvent.GAVE_UP)] = JobState.FAILED
for _state in ACTIVE:
    _TRANSITIONS[(_state, JobEvent.REFUSED)] = JobState.FAILED
    _TRANSITIONS[(_state, JobEvent.CANCELLED)] = JobState.CANCELLED


def advance(state: JobState, event: JobEvent) -> JobState:
    """The next state; raises ``ValueError`` for a transition the table does not list."""
    try:
        return _TRANSITIONS[(JobState(state), JobEvent(event))]
    except KeyError:
        raise ValueError(f"a {state} job cannot take {event}") from None


def retry_delay(attempt: int, rng: random.Random, *, base: float = 60.0, cap: float = 6 * 3600.0) -> float:
    """Exponential backoff with full jitter: uniform in [base·2^(n-1)/2, base·2^(n-1)],
    capped. Half the window is kept so delays visibly grow from attempt to attempt."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return rng.uniform(ceiling / 2, ceiling)
