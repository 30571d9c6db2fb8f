"""Work in flight: jobs, the work orders that carry them to agents, and approvals
waiting for a decision."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..engine import Tx
from ._common import ALL_ROWS, _all_by_id, _keyset, _required, _scope_clause

__all__ = [
    "Approvals",
    "Jobs",
    "WorkOrders",
]


@dataclass
class Jobs:
    tx: Tx

    TERMINAL = ("done", "failed", "cancelled")

    def insert(self, *, id: str, certificate_id: str, kind: str, state: str, max_attempts: int, now: int) -> None:
        self.insert_many([(id, certificate_id, state)], kind=kind, max_attempts=max_attempts, now=now)

    def insert_many(self, jobs: list[tuple[str, str, str]], *, kind: str, max_attempts: int, now: int) -> None:
        """Jobs of one kind: (id, certificate id, state) each."""
        self.tx.execute_many(
            "INSERT INTO jobs (id, certificate_id, kind, state, max_attempts, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(id, certificate_id, kind, state, max_attempts, now, now) for id, certificate_id, state in jobs])

    def get(self, id: str) -> dict[str, Any]:
        return _required(self.tx.one("SELECT * FROM jobs WHERE id = ?", (id,)), f"job {id}")

    def get_many(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return _all_by_id(self.tx, "SELECT * FROM jobs", ids, "job")

    def active_for_certificate(self, certificate_id: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM jobs WHERE certificate_id = ? AND state NOT IN (?, ?, ?)",
                           (certificate_id, *self.TERMINAL))

    def for_order(self, order_id: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM jobs WHERE order_id = ?", (order_id,))

    def update(self, id: str, now: int, **fields: Any) -> None:
        self.update_many({id: fields}, now)

    def update_many(self, changes: dict[str, dict[str, Any]], now: int) -> None:
        """Job id → the columns to set (names from code, never from a request); jobs
        changing the same columns go in one batch."""
        batches: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for id, fields in changes.items():
            batches.setdefault(tuple(fields), []).append((*fields.values(), now, id))
        for names, rows in batches.items():
            columns = ", ".join(f"{name} = ?" for name in names)
            self.tx.execute_many(f"UPDATE jobs SET {columns}, updated_at = ? WHERE id = ?", rows)

    def list(self, *, state: str | None = None, certificate_id: str | None = None,
             within: tuple[Iterable[str], Iterable[str]] | None = None, after: str | None = None,
             limit: int = 500) -> list[dict[str, Any]]:
        """``within``: only jobs of certificates under these (profile ids, issuer ids)."""
        page, page_params = _keyset("jobs", "j", ("created_at", "id"), after)
        clauses, params = [page], list(page_params)
        if state:
            clauses.append("j.state = ?")
            params.append(state)
        if certificate_id:
            clauses.append("j.certificate_id = ?")
            params.append(certificate_id)
        if within is not None:
            clause, scope_params = _scope_clause(*within)
            clauses.append(clause)
            params.extend(scope_params)
        return self.tx.all("SELECT j.* FROM jobs j JOIN certificates c ON c.id = j.certificate_id"
                           " JOIN profiles p ON p.id = c.profile_id"
                           f" WHERE {' AND '.join(clauses)} ORDER BY j.created_at, j.id LIMIT ?", (*params, limit))

    def due_retries(self, now: int) -> list[dict[str, Any]]:
        return self.tx.all("SELECT * FROM jobs WHERE state = 'retry-wait' AND next_attempt_at <= ?", (now,))

    def stalled(self, *, pending_before: int, working_before: int) -> list[dict[str, Any]]:
        """Jobs whose order was not picked up, or whose agent went quiet mid-job."""
        return self.tx.all(
            "SELECT * FROM jobs WHERE (state = 'pending' AND updated_at <= ?)"
            " OR (state IN ('dispatched', 'deploying') AND updated_at <= ?)", (pending_before, working_before))


@dataclass
class WorkOrders:
    tx: Tx

    ACTIVE = ("queued", "dispatched", "issued")

    def insert(self, *, id: str, agent_id: str, certificate_id: str | None, kind: str,
               token: str, expires_at: int, now: int, target_id: str | None = None) -> None:
        self.insert_many([(id, agent_id, certificate_id, target_id, token)], kind=kind, expires_at=expires_at,
                         now=now)

    def insert_many(self, orders: list[tuple[str, str, str | None, str | None, str]], *, kind: str,
                    expires_at: int, now: int) -> None:
        """Queued orders of one kind: (id, agent id, certificate id, target id, token) each."""
        self.tx.execute_many(
            "INSERT INTO work_orders (id, agent_id, certificate_id, target_id, kind, token, status,"
            " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
            [(id, agent_id, certificate_id, target_id, kind, token, now, expires_at)
             for id, agent_id, certificate_id, target_id, token in orders])

    def find_for_agent(self, id: str, agent_id: str) -> dict[str, Any]:
        """The order, only if it is addressed to ``agent_id`` (else NotFound: no leak)."""
        return _required(
            self.tx.one("SELECT * FROM work_orders WHERE id = ? AND agent_id = ?", (id, agent_id)),
            f"work order {id}",
        )

    def deliverable(self, agent_id: str, now: int, limit: int = 50) -> list[dict[str, Any]]:
        return self.tx.all(
            "SELECT id, token FROM work_orders WHERE agent_id = ? AND status IN (?, ?, ?)"
            " AND expires_at > ? ORDER BY created_at, id LIMIT ?",
            (agent_id, *self.ACTIVE, now, limit),
        )

    def agents_with_queued(self, now: int) -> list[str]:
        """Agents with an order nobody has taken yet."""
        return [row["agent_id"] for row in self.tx.all(
            "SELECT DISTINCT agent_id FROM work_orders WHERE status = 'queued' AND expires_at > ?", (now,))]

    def mark_dispatched(self, ids: list[str], now: int) -> None:
        for id in ids:
            self.tx.execute(
                "UPDATE work_orders SET status = 'dispatched', dispatched_at = ?"
                " WHERE id = ? AND status = 'queued'",
                (now, id),
            )

    def set_status(self, id: str, status: str, now: int, detail: str | None = None) -> None:
        terminal = status in ("succeeded", "failed", "refused")
        self.tx.execute(
            "UPDATE work_orders SET status = ?, result_detail = COALESCE(?, result_detail),"
            " completed_at = CASE WHEN ? THEN ? ELSE completed_at END WHERE id = ?",
            (status, detail, terminal, now, id),
        )


@dataclass
class Approvals:
    tx: Tx

    def insert(self, *, id: str, kind: str, subject_id: str, profile_id: str, payload: str, requested_by: str,
               requester: str, now: int, expires_at: int) -> None:
        self.tx.execute(
            "INSERT INTO approvals (id, kind, subject_id, profile_id, payload, status, requested_by, requester,"
            " created_at, expires_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
            (id, kind, subject_id, profile_id, payload, requested_by, requester, now, expires_at))

    def get(self, id: str) -> dict[str, Any]:
        return _required(self.tx.one("SELECT * FROM approvals WHERE id = ?", (id,)), f"approval {id}")

    def list(self, status: str | None = None, *, after: str | None = None, limit: int = ALL_ROWS) -> list[dict[str, Any]]:
        """With each request's profile's ``issuer_id``, which scope checks need."""
        page, params = _keyset("approvals", "a", ("created_at", "id"), after)
        where, status_params = ("a.status = ?", (status,)) if status else ("1 = 1", ())
        return self.tx.all(f"SELECT a.*, p.issuer_id FROM approvals a JOIN profiles p ON p.id = a.profile_id"
                           f" WHERE {where} AND {page} ORDER BY a.created_at, a.id LIMIT ?",
                           (*status_params, *params, limit))

    def decide(self, id: str, *, status: str, decided_by: str | None, note: str, now: int) -> bool:
        return self.tx.execute(
            "UPDATE approvals SET status = ?, decided_by = ?, decision_note = ?, decided_at = ?"
            " WHERE id = ? AND status = 'pending'", (status, decided_by, note, now, id)) == 1

    def expire_due(self, now: int) -> list[dict[str, Any]]:
        due = self.tx.all("SELECT * FROM approvals WHERE status = 'pending' AND expires_at <= ?", (now,))
        for row in due:
            self.decide(row["id"], status="expired", decided_by=None, note="expired", now=now)
        return due
