"""Who may call and what they may do: API keys, roles, grants, the bootstrap and
enrollment tokens, and rate-limit counters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..engine import Tx
from ._common import ALL_ROWS, _keyset, _required

__all__ = [
    "ApiKeys",
    "BootstrapTokens",
    "EnrollmentTokens",
    "Grants",
    "RateLimits",
    "Roles",
]


@dataclass
class BootstrapTokens:
    tx: Tx

    def insert(self, *, id: str, secret_hash: str, now: int) -> None:
        self.tx.execute(
            "INSERT INTO bootstrap_tokens (id, secret_hash, created_at) VALUES (?, ?, ?)",
            (id, secret_hash, now),
        )

    def current(self) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM bootstrap_tokens ORDER BY created_at DESC LIMIT 1")

    def mark_used(self, id: str, now: int) -> bool:
        """Consume the token; ``False`` if someone else consumed it first."""
        return self.tx.execute(
            "UPDATE bootstrap_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL", (now, id)
        ) == 1


@dataclass
class ApiKeys:
    tx: Tx

    def insert(self, *, id: str, secret_hash: str, name: str, user_id: str | None, created_by: str,
               now: int, expires_at: int | None = None) -> None:
        self.tx.execute(
            "INSERT INTO api_keys (id, secret_hash, name, user_id, created_by, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (id, secret_hash, name, user_id, created_by, now, expires_at),
        )

    def find(self, id: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM api_keys WHERE id = ?", (id,))

    def get(self, id: str) -> dict[str, Any]:
        return _required(self.find(id), f"API key {id}")

    def list(self, user_id: str | None = None, *, key_id: str | None = None, after: str | None = None,
             limit: int = ALL_ROWS) -> list[dict[str, Any]]:
        page, page_params = _keyset("api_keys", "k", ("created_at", "id"), after)
        if user_id is None and key_id is None:
            return self.tx.all(f"SELECT * FROM api_keys k WHERE {page} ORDER BY created_at, id LIMIT ?",
                               (*page_params, limit))
        return self.tx.all(
            f"SELECT * FROM api_keys k WHERE (user_id = ? OR id = ?) AND {page} ORDER BY created_at, id LIMIT ?",
            (user_id, key_id, *page_params, limit))

    def touch(self, id: str, now: int) -> None:
        # Once a minute is precise enough, and spares a write on every request.
        self.tx.execute(
            "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
            (now, id, now - 60))

    def set_secret(self, id: str, secret_hash: str) -> None:
        self.tx.execute("UPDATE api_keys SET secret_hash = ? WHERE id = ?", (secret_hash, id))

    def revoke(self, id: str, now: int) -> None:
        self.tx.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, id))


@dataclass
class Roles:
    """Custom roles; the built-in ones live in code (:mod:`certfleet.coordinator.auth.rbac`)."""

    tx: Tx

    def insert(self, *, name: str, description: str, permissions: list[str], created_by: str, now: int) -> None:
        self.tx.execute(
            "INSERT INTO roles (name, description, permissions, created_by, created_at) VALUES (?, ?, ?, ?, ?)",
            (name, description, json.dumps(sorted(permissions)), created_by, now))

    def find(self, name: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM roles WHERE name = ?", (name,))

    def list(self) -> list[dict[str, Any]]:
        return self.tx.all("SELECT * FROM roles ORDER BY name")

    def delete(self, name: str) -> None:
        self.tx.execute("DELETE FROM roles WHERE name = ?", (name,))


@dataclass
class Grants:
    tx: Tx

    def insert(self, *, id: str, principal_type: str, principal_id: str, role: str, scope_type: str,
               scope_id: str | None, expires_at: int | None, created_by: str, now: int) -> None:
        self.tx.execute(
            "INSERT INTO grants (id, principal_type, principal_id, role, scope_type, scope_id, expires_at,"
            " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (id, principal_type, principal_id, role, scope_type, scope_id, expires_at, created_by, now))

    def get(self, id: str) -> dict[str, Any]:
        return _required(self.tx.one("SELECT * FROM grants WHERE id = ?", (id,)), f"grant {id}")

    def live_for(self, principals: list[tuple[str, str]], now: int) -> list[dict[str, Any]]:
        """Unexpired grants held by any of ``principals`` (type, id)."""
        if not principals:
            return []
        clause = " OR ".join("(principal_type = ? AND principal_id = ?)" for _ in principals)
        params = [value for principal in principals for value in principal]
        return self.tx.all(
            f"SELECT * FROM grants WHERE ({clause}) AND (expires_at IS NULL OR expires_at > ?)"
            " ORDER BY created_at, id", (*params, now))

    def list(self, *, after: str | None = None, limit: int = ALL_ROWS) -> list[dict[str, Any]]:
        page, params = _keyset("grants", "g", ("created_at", "id"), after)
        return self.tx.all(f"SELECT * FROM grants g WHERE {page} ORDER BY created_at, id LIMIT ?", (*params, limit))

    def count_for_role(self, role: str) -> int:
        row = self.tx.one("SELECT COUNT(*) AS n FROM grants WHERE role = ?", (role,))
        return int(row["n"]) if row else 0

    def delete(self, id: str) -> None:
        self.tx.execute("DELETE FROM grants WHERE id = ?", (id,))

    def delete_for_principal(self, principal_type: str, principal_id: str) -> None:
        self.tx.execute("DELETE FROM grants WHERE principal_type = ? AND principal_id = ?",
                        (principal_type, principal_id))

    def live_global_admins(self, now: int) -> list[dict[str, Any]]:
        """Global admin grants whose holder can still act (key not revoked or expired)."""
        return self.tx.all(
            "SELECT g.* FROM grants g LEFT JOIN api_keys k"
            "  ON g.principal_type = 'api-key' AND k.id = g.principal_id"
            " WHERE g.role = 'admin' AND g.scope_type = 'global'"
            "  AND (g.expires_at IS NULL OR g.expires_at > ?)"
            "  AND (g.principal_type <> 'api-key' OR (k.revoked_at IS NULL"
            "       AND (k.expires_at IS NULL OR k.expires_at > ?)))",
            (now, now))


@dataclass
class RateLimits:
    """Fixed-window counters in the database, shared by every coordinator."""

    tx: Tx

    def hits(self, key: str, window_start: int) -> int:
        row = self.tx.one("SELECT window_start, hits FROM rate_limits WHERE key = ?", (key,))
        if row is None or row["window_start"] != window_start:
            return 0
        return int(row["hits"])

    def hit(self, key: str, window_start: int) -> None:
        self.tx.execute(
            "INSERT INTO rate_limits (key, window_start, hits) VALUES (?, ?, 1)"
            " ON CONFLICT (key) DO UPDATE SET"
            "  hits = CASE WHEN rate_limits.window_start = excluded.window_start"
            "              THEN rate_limits.hits + 1 ELSE 1 END,"
            "  window_start = excluded.window_start",
            (key, window_start))


@dataclass
class EnrollmentTokens:
    tx: Tx

    def insert(self, *, id: str, secret_hash: str, uses: int, expires_at: int,
               labels: dict[str, str], created_by: str, now: int) -> None:
        self.tx.execute(
            "INSERT INTO enrollment_tokens"
            " (id, secret_hash, uses_left, expires_at, labels, created_by, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (id, secret_hash, uses, expires_at, json.dumps(labels), created_by, now),
        )

    def find(self, id: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM enrollment_tokens WHERE id = ?", (id,))

    def consume(self, id: str, now: int) -> bool:
        """Use one of the token's uses; ``False`` if it is spent or expired."""
        return self.tx.execute(
            "UPDATE enrollment_tokens SET uses_left = uses_left - 1"
            " WHERE id = ? AND uses_left > 0 AND expires_at > ?",
            (id, now),
        ) == 1
