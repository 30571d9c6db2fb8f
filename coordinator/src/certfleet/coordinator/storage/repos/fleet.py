"""The agents, with their used request-token ids and their events, and the deployment
targets they serve."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..engine import Tx
from ._common import ALL_ROWS, _all_by_id, _keyset, _required

__all__ = [
    "Agents",
    "Targets",
]


@dataclass
class Agents:
    tx: Tx

    def insert(self, *, id: str, name: str, public_key: str, labels: dict[str, str],
               enrollment_token_id: str, now: int) -> None:
        self.tx.execute(
            "INSERT INTO agents (id, name, public_key, labels, enrollment_token_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (id, name, public_key, json.dumps(labels), enrollment_token_id, now),
        )

    def find(self, id: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM agents WHERE id = ?", (id,))

    def get(self, id: str) -> dict[str, Any]:
        return _required(self.find(id), f"agent {id}")

    def list(self, *, after: str | None = None, limit: int = ALL_ROWS) -> list[dict[str, Any]]:
        page, params = _keyset("agents", "a", ("created_at", "id"), after)
        return self.tx.all(f"SELECT * FROM agents a WHERE {page} ORDER BY created_at, id LIMIT ?", (*params, limit))

    def seen(self, id: str, now: int) -> None:
        self.tx.execute("UPDATE agents SET last_seen_at = ? WHERE id = ?", (now, id))

    def retire(self, id: str, now: int) -> None:
        self.tx.execute("UPDATE agents SET retired_at = ? WHERE id = ?", (now, id))

    def use_token_id(self, agent_id: str, jti: str, expires_at: int) -> bool:
        """Record a request token id; ``False`` when it was used before (a replay)."""
        return self.tx.execute(
            "INSERT INTO agent_token_uses (agent_id, jti, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (agent_id, jti, expires_at),
        ) == 1

    def prune_token_ids(self, now: int) -> int:
        """Forget token ids five minutes past their expiry; returns how many.

        A token past its expiry is refused by its ``exp`` anyway, so its id need not
        be remembered. The coordinator's upkeep runs this, not every request.
        """
        return self.tx.execute("DELETE FROM agent_token_uses WHERE expires_at < ?", (now - 300,))

    def add_event(self, *, agent_id: str, event: str, order_id: str | None, reason: str,
                  detail: str, now: int) -> None:
        self.tx.execute(
            "INSERT INTO agent_events (agent_id, event, order_id, reason, detail, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (agent_id, event, order_id, reason, detail, now),
        )

    def events(self, agent_id: str) -> list[dict[str, Any]]:
        return self.tx.all("SELECT * FROM agent_events WHERE agent_id = ? ORDER BY id", (agent_id,))


@dataclass
class Targets:
    tx: Tx

    def insert(self, *, id: str, name: str, agent_id: str, kind: str, settings: str, created_by: str,
               now: int) -> None:
        self.tx.execute(
            "INSERT INTO targets (id, name, agent_id, kind, settings, created_by, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (id, name, agent_id, kind, settings, created_by, now, now))

    def find(self, id_or_name: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM targets WHERE id = ? OR name = ?", (id_or_name, id_or_name))

    def get(self, id_or_name: str) -> dict[str, Any]:
        return _required(self.find(id_or_name), f"target {id_or_name}")

    def get_many(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """By id; every one must exist."""
        return _all_by_id(self.tx, "SELECT * FROM targets", ids, "target")

    def list(self, agent_id: str | None = None, *, after: str | None = None, limit: int = ALL_ROWS) -> list[dict[str, Any]]:
        page, params = _keyset("targets", "t", ("name",), after)
        if agent_id is not None:
            return self.tx.all(f"SELECT * FROM targets t WHERE agent_id = ? AND {page} ORDER BY name LIMIT ?",
                               (agent_id, *params, limit))
        return self.tx.all(f"SELECT * FROM targets t WHERE {page} ORDER BY name LIMIT ?", (*params, limit))

    def certificates(self, id: str) -> list[str]:
        return self.certificates_of([id])[id]

    def certificates_of(self, ids: Iterable[str]) -> dict[str, list[str]]:
        """Target id → the ids of the certificates deployed to it, in one statement per
        500 targets (a list must not cost a statement per row)."""
        ids = list(ids)
        found: dict[str, list[str]] = {id: [] for id in ids}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for row in self.tx.all(f"SELECT id, target_id FROM certificates WHERE target_id IN"
                                   f" ({', '.join('?' * len(chunk))}) ORDER BY id", tuple(chunk)):
                found[row["target_id"]].append(row["id"])
        return found

    def count_deployment(self, id: str, *, counters: dict[str, int], outcome: str, detail: str,
                         served_fingerprint: str | None, now: int) -> None:
        """Add one reported attempt to the target's counters (column → increment; the
        names come from code, never from a request) and remember its outcome."""
        increments = ", ".join(f"{column} = {column} + ?" for column in counters)
        self.tx.execute(
            f"UPDATE targets SET {increments}, last_outcome = ?, last_detail = ?,"
            " last_served_fingerprint = COALESCE(?, last_served_fingerprint), last_deployed_at = ? WHERE id = ?",
            (*counters.values(), outcome, detail, served_fingerprint, now, id))

    def set_check(self, id: str, *, status: str, detail: str | None, now: int) -> None:
        self.tx.execute("UPDATE targets SET last_check_status = ?, last_check_detail = ?, last_check_at = ?"
                        " WHERE id = ?", (status, detail, now, id))
