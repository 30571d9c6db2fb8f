"""Per-aggregate repositories, written once against :class:`~.engine.Tx`.

Each class wraps one transaction; a service composes them inside a single
``database.transact`` call so a mutation and its audit row commit together.
Methods are named for the entity; a missing row raises :class:`NotFound`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .engine import Conflict, NotFound, Tx

__all__ = [
    "Agents",
    "ApiKeys",
    "BootstrapTokens",
    "Approvals",
    "Certificates",
    "Crls",
    "DiscoveredCertificates",
    "EnrollmentTokens",
    "Grants",
    "Issuers",
    "Jobs",
    "Meta",
    "Notifications",
    "Ocsp",
    "Profiles",
    "RateLimits",
    "RenewalPolicies",
    "Roles",
    "SigningKeys",
    "Targets",
    "WorkOrders",
]


# Ids per ``IN (...)`` list: far below either engine's limit on parameters.
_IDS_PER_STATEMENT = 500


def _by_id(tx: Tx, select: str, ids: Iterable[str], column: str = "id") -> dict[str, dict[str, Any]]:
    """Rows of ``select ... WHERE {column} IN (ids)`` by their ``id``: a few statements
    for any number of ids instead of one each."""
    wanted, rows = sorted(set(ids)), {}
    for start in range(0, len(wanted), _IDS_PER_STATEMENT):
        chunk = wanted[start:start + _IDS_PER_STATEMENT]
        for row in tx.all(f"{select} WHERE {column} IN ({', '.join('?' * len(chunk))})", chunk):
            rows[row["id"]] = row
    return rows


def _all_by_id(tx: Tx, select: str, ids: Iterable[str], what: str, column: str = "id") -> dict[str, dict[str, Any]]:
    """:func:`_by_id`, with :class:`NotFound` for the first id that has no row."""
    wanted = set(ids)
    rows = _by_id(tx, select, wanted, column)
    missing = wanted - rows.keys()
    if missing:
        raise NotFound(f"{what} {min(missing)}")
    return rows


def _required(row: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if row is None:
        raise NotFound(what)
    return row


ALL_ROWS = 2**62
"""A LIMIT that keeps every row (both engines accept it; PostgreSQL refuses -1)."""


def _keyset(table: str, alias: str, order: tuple[str, ...], after: str | None) -> tuple[str, tuple[str, ...]]:
    """SQL keeping the rows after the row whose id is ``after`` in the order ``order``
    (keyset paging: a page costs the same wherever it starts). An ``after`` that names
    no row leaves nothing."""
    if after is None:
        return "1 = 1", ()
    columns = ", ".join(f"{alias}.{column}" for column in order)
    return f"({columns}) > (SELECT {', '.join(order)} FROM {table} WHERE id = ?)", (after,)


@dataclass
class Meta:
    tx: Tx

    def get(self, key: str) -> str | None:
        row = self.tx.one("SELECT value FROM meta WHERE key = ?", (key,))
        return row["value"] if row else None

    def insert(self, key: str, value: str) -> None:
        self.tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))


@dataclass
class Issuers:
    tx: Tx

    def insert(self, *, id: str, name: str, kind: str, status: str, parent_id: str | None,
               certificate_pem: str | None, chain_pem: str, sealed_key: str, now: int,
               csr_pem: str | None = None) -> None:
        self.tx.execute(
            "INSERT INTO issuers (id, name, kind, status, parent_id, certificate_pem, chain_pem, csr_pem,"
            " sealed_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (id, name, kind, status, parent_id, certificate_pem, chain_pem, csr_pem, sealed_key, now),
        )

    def get_by_name(self, name: str) -> dict[str, Any]:
        return _required(self.tx.one("SELECT * FROM issuers WHERE name = ?", (name,)), f"issuer {name}")

    def find(self, name_or_id: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM issuers WHERE id = ? OR name = ?", (name_or_id, name_or_id))

    def get(self, name_or_id: str) -> dict[str, Any]:
        return _required(self.find(name_or_id), f"issuer {name_or_id}")

    def list(self) -> list[dict[str, Any]]:
        return self.tx.all("SELECT * FROM issuers ORDER BY created_at, id")

    def activate(self, id: str, *, certificate_pem: str, chain_pem: str) -> None:
        self.tx.execute("UPDATE issuers SET certificate_pem = ?, chain_pem = ?, csr_pem = NULL, status = 'active'"
                        " WHERE id = ?", (certificate_pem, chain_pem, id))

    def set_status(self, id: str, status: str, now: int) -> None:
        self.tx.execute("UPDATE issuers SET status = ?, retired_at = CASE WHEN ? = 'retired' THEN ? ELSE retired_at"
                        " END WHERE id = ?", (status, status, now, id))

    def mark_crl_dirty(self, id: str, now: int) -> None:
        """Ask for a CRL rebuild; the first unserved request's time is kept (debounce)."""
        self.tx.execute("UPDATE issuers SET crl_dirty_since = COALESCE(crl_dirty_since, ?) WHERE id = ?", (now, id))

    def crl_due(self, *, dirty_before: int, stale_before: int) -> list[dict[str, Any]]:
        """Issuers whose CRL is dirty long enough, stale, or missing, or whose last
        CRL number taken was never stored (a build cut short)."""
        return self.tx.all(
            "SELECT i.* FROM issuers i LEFT JOIN crls c ON c.issuer_id = i.id"
            " WHERE i.status IN ('active', 'retiring') AND i.certificate_pem IS NOT NULL"
            "  AND (c.issuer_id IS NULL OR i.crl_dirty_since <= ? OR c.this_update <= ? OR c.number < i.crl_number)",
            (dirty_before, stale_before))

    def take_crl_number(self, id: str) -> int:
        """The next CRL number (RFC 5280 §5.2.3: monotonically increasing); clears the dirty mark."""
        self.tx.execute("UPDATE issuers SET crl_number = crl_number + 1, crl_dirty_since = NULL WHERE id = ?", (id,))
        return int(_required(self.tx.one("SELECT crl_number FROM issuers WHERE id = ?", (id,)), id)["crl_number"])

    def children(self, parent_id: str) -> list[dict[str, Any]]:
        """The CAs this one signed: its CRL and OCSP responder speak for them."""
        return self.tx.all("SELECT * FROM issuers WHERE parent_id = ? AND certificate_pem IS NOT NULL ORDER BY id",
                           (parent_id,))

    def revoke(self, id: str, *, reason: str, now: int) -> None:
        self.tx.execute("UPDATE issuers SET status = 'revoked', revoked_at = ?, revocation_reason = ? WHERE id = ?",
                        (now, reason, id))

    def revoked_above(self, id: str) -> dict[str, Any] | None:
        """The nearest revoked CA above ``id`` (its parent, its parent's parent, ...), if any."""
        row = self.find(id)
        while row is not None and row["parent_id"] is not None:
            row = self.find(row["parent_id"])
            if row is not None and row["revoked_at"] is not None:
                return row
        return None

    def below(self, id: str) -> list[str]:
        """``id`` and every CA under it, at any depth."""
        found, frontier = [id], [id]
        while frontier:
            frontier = [row["id"] for parent in frontier for row in self.children(parent)]
            found += frontier
        return found


@dataclass
class Crls:
    tx: Tx

    def put(self, *, issuer_id: str, number: int, der: str, this_update: int, next_update: int, etag: str) -> None:
        self.tx.execute("DELETE FROM crls WHERE issuer_id = ?", (issuer_id,))
        self.tx.execute(
            "INSERT INTO crls (issuer_id, number, der, this_update, next_update, etag) VALUES (?, ?, ?, ?, ?, ?)",
            (issuer_id, number, der, this_update, next_update, etag))

    def get(self, issuer_id: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM crls WHERE issuer_id = ?", (issuer_id,))


@dataclass
class Ocsp:
    """Delegated responder certificates and pre-signed responses."""

    tx: Tx

    def responder(self, issuer_id: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM ocsp_responders WHERE issuer_id = ?", (issuer_id,))

    def put_responder(self, *, issuer_id: str, certificate_pem: str, sealed_key: str, not_after: int) -> None:
        self.tx.execute("DELETE FROM ocsp_responders WHERE issuer_id = ?", (issuer_id,))
        self.tx.execute("INSERT INTO ocsp_responders (issuer_id, certificate_pem, sealed_key, not_after)"
                        " VALUES (?, ?, ?, ?)", (issuer_id, certificate_pem, sealed_key, not_after))
        self.tx.execute("DELETE FROM ocsp_responses WHERE issuer_id = ?", (issuer_id,))

    def response(self, issuer_id: str, serial: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM ocsp_responses WHERE issuer_id = ? AND serial = ?", (issuer_id, serial))

    def put_response(self, *, issuer_id: str, serial: str, der: str, refresh_at: int) -> None:
        self.tx.execute("DELETE FROM ocsp_responses WHERE issuer_id = ? AND serial = ?", (issuer_id, serial))
        self.tx.execute("INSERT INTO ocsp_responses (issuer_id, serial, der, refresh_at) VALUES (?, ?, ?, ?)",
                        (issuer_id, serial, der, refresh_at))

    def invalidate(self, issuer_id: str, serial: str) -> None:
        self.tx.execute("DELETE FROM ocsp_responses WHERE issuer_id = ? AND serial = ?", (issuer_id, serial))


@dataclass
class SigningKeys:
    tx: Tx

    def insert(self, *, kid: str, purpose: str, public_key: str, sealed_key: str, now: int) -> None:
        self.tx.execute(
            "INSERT INTO signing_keys (kid, purpose, public_key, sealed_key, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (kid, purpose, public_key, sealed_key, now),
        )

    def active(self, purpose: str) -> list[dict[str, Any]]:
        return self.tx.all(
            "SELECT * FROM signing_keys WHERE purpose = ? AND retired_at IS NULL ORDER BY created_at",
            (purpose,),
        )


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
    """Custom roles; the built-in ones live in code (:mod:`..rbac`)."""

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
class Profiles:
    tx: Tx

    def insert(self, *, id: str, name: str, issuer_id: str, policy: str, now: int) -> None:
        self.tx.execute(
            "INSERT INTO profiles (id, name, issuer_id, policy, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (id, name, issuer_id, policy, now, now))

    def find(self, name_or_id: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM profiles WHERE id = ? OR name = ?", (name_or_id, name_or_id))

    def get(self, name_or_id: str) -> dict[str, Any]:
        return _required(self.find(name_or_id), f"profile {name_or_id}")

    def get_many(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """By id; every one must exist."""
        return _all_by_id(self.tx, "SELECT * FROM profiles", ids, "profile")

    def list(self) -> list[dict[str, Any]]:
        return self.tx.all("SELECT * FROM profiles ORDER BY created_at, id")

    def update_policy(self, id: str, policy: str, *, expected_version: int, now: int) -> None:
        """Optimistic: fails with :class:`Conflict` if someone else changed it first."""
        if self.tx.execute("UPDATE profiles SET policy = ?, version = version + 1, updated_at = ?"
                           " WHERE id = ? AND version = ?", (policy, now, id, expected_version)) != 1:
            raise Conflict(f"profile {id} changed meanwhile")


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


def _scope_clause(profile_ids: Iterable[str], issuer_ids: Iterable[str]) -> tuple[str, list[str]]:
    """SQL keeping rows whose profile ``p`` is one of ``profile_ids`` or under one of
    ``issuer_ids`` (a scoped caller's reach); false when both are empty."""
    profiles, issuers = sorted(profile_ids), sorted(issuer_ids)
    parts = []
    if profiles:
        parts.append(f"p.id IN ({', '.join('?' * len(profiles))})")
    if issuers:
        parts.append(f"p.issuer_id IN ({', '.join('?' * len(issuers))})")
    return (f"({' OR '.join(parts)})" if parts else "1 = 0"), [*profiles, *issuers]


@dataclass
class Notifications:
    """Channels, and the outbox of deliveries to them (deduplicated per channel)."""

    tx: Tx

    def add_channel(self, *, id: str, name: str, kind: str, settings: str, sealed_secrets: str, min_severity: str,
                    now: int) -> None:
        self.tx.execute(
            "INSERT INTO notification_channels (id, name, kind, settings, sealed_secrets, min_severity, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)", (id, name, kind, settings, sealed_secrets, min_severity, now))

    def channel(self, name_or_id: str) -> dict[str, Any]:
        return _required(self.tx.one("SELECT * FROM notification_channels WHERE id = ? OR name = ?",
                                     (name_or_id, name_or_id)), f"channel {name_or_id}")

    def channels(self) -> list[dict[str, Any]]:
        return self.tx.all("SELECT * FROM notification_channels ORDER BY created_at, id")

    def delete_channel(self, id: str) -> None:
        self.tx.execute("DELETE FROM notifications WHERE channel_id = ?", (id,))
        self.tx.execute("DELETE FROM notification_channels WHERE id = ?", (id,))

    def enqueue(self, *, id: str, channel_id: str, event: str, dedup_key: str, now: int) -> bool:
        """Queue a delivery; ``False`` if this channel already has this dedup key."""
        return self.tx.execute(
            "INSERT INTO notifications (id, channel_id, event, dedup_key, status, next_attempt_at, created_at)"
            " VALUES (?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT DO NOTHING",
            (id, channel_id, event, dedup_key, now, now)) == 1

    def due(self, now: int, limit: int = 100) -> list[dict[str, Any]]:
        return self.tx.all(
            "SELECT n.*, c.kind, c.settings, c.sealed_secrets FROM notifications n"
            " JOIN notification_channels c ON c.id = n.channel_id"
            " WHERE n.status = 'pending' AND n.next_attempt_at <= ? ORDER BY n.next_attempt_at, n.id LIMIT ?",
            (now, limit))

    def get(self, id: str) -> dict[str, Any]:
        return _required(self.tx.one("SELECT * FROM notifications WHERE id = ?", (id,)), f"notification {id}")

    def list(self, status: str | None = None, *, after: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        page, params = _keyset("notifications", "n", ("created_at", "id"), after)
        if status:
            return self.tx.all(f"SELECT * FROM notifications n WHERE status = ? AND {page}"
                               " ORDER BY created_at, id LIMIT ?", (status, *params, limit))
        return self.tx.all(f"SELECT * FROM notifications n WHERE {page} ORDER BY created_at, id LIMIT ?",
                           (*params, limit))

    def update(self, id: str, **fields: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in fields)
        self.tx.execute(f"UPDATE notifications SET {columns} WHERE id = ?", (*fields.values(), id))


@dataclass
class RenewalPolicies:
    tx: Tx

    def insert(self, *, id: str, name: str, fraction: float | None, lead_seconds: int | None, jitter: float,
               reuse_key: bool, now: int) -> None:
        self.tx.execute("INSERT INTO renewal_policies (id, name, fraction, lead_seconds, jitter, reuse_key,"
                        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (id, name, fraction, lead_seconds, jitter, int(reuse_key), now))

    def find(self, name_or_id: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM renewal_policies WHERE id = ? OR name = ?", (name_or_id, name_or_id))

    def find_many(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """By id; the ones that exist."""
        return _by_id(self.tx, "SELECT * FROM renewal_policies", ids)

    def list(self) -> list[dict[str, Any]]:
        return self.tx.all("SELECT * FROM renewal_policies ORDER BY created_at, id")


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
        page, params = _keyset("approvals", "a", ("created_at", "id"), after)
        if status:
            return self.tx.all(f"SELECT * FROM approvals a WHERE status = ? AND {page} ORDER BY created_at, id"
                               " LIMIT ?", (status, *params, limit))
        return self.tx.all(f"SELECT * FROM approvals a WHERE {page} ORDER BY created_at, id LIMIT ?",
                           (*params, limit))

    def decide(self, id: str, *, status: str, decided_by: str | None, note: str, now: int) -> bool:
        return self.tx.execute(
            "UPDATE approvals SET status = ?, decided_by = ?, decision_note = ?, decided_at = ?"
            " WHERE id = ? AND status = 'pending'", (status, decided_by, note, now, id)) == 1

    def expire_due(self, now: int) -> list[dict[str, Any]]:
        due = self.tx.all("SELECT * FROM approvals WHERE status = 'pending' AND expires_at <= ?", (now,))
        for row in due:
            self.decide(row["id"], status="expired", decided_by=None, note="expired", now=now)
        return due


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


_CERTIFICATE_VIEW = (
    "SELECT c.*, p.issuer_id, t.settings AS target, v.serial, v.not_before, v.not_after, v.fingerprint_sha256"
    " FROM certificates c"
    " JOIN profiles p ON p.id = c.profile_id"
    " JOIN targets t ON t.id = c.target_id"
    " LEFT JOIN certificate_versions v ON v.serial = ("
    "  SELECT serial FROM certificate_versions WHERE certificate_id = c.id"
    "  ORDER BY created_at DESC, serial LIMIT 1)"
)


@dataclass
class Certificates:
    tx: Tx

    def insert(self, *, id: str, names: list[str], key_type: str, lifetime_seconds: int,
               agent_id: str, profile_id: str, target_id: str, now: int, tags: list[str] | None = None,
               status: str = "pending", renewal_policy_id: str | None = None) -> None:
        self.tx.execute(
            "INSERT INTO certificates (id, names, key_type, lifetime_seconds, agent_id, profile_id, tags, target_id,"
            " status, renewal_policy_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (id, json.dumps(names), key_type, lifetime_seconds, agent_id, profile_id, json.dumps(tags or []),
             target_id, status, renewal_policy_id, now, now),
        )

    def get(self, id: str) -> dict[str, Any]:
        return _required(self.tx.one(_CERTIFICATE_VIEW + " WHERE c.id = ?", (id,)), f"certificate {id}")

    def get_many(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """By id, as :meth:`get` shows them; every one must exist."""
        return _all_by_id(self.tx, _CERTIFICATE_VIEW, ids, "certificate", column="c.id")

    def list(self, *, within: tuple[Iterable[str], Iterable[str]] | None = None, after: str | None = None,
             limit: int = ALL_ROWS) -> list[dict[str, Any]]:
        """``within``: only certificates under these (profile ids, issuer ids)."""
        page, params = _keyset("certificates", "c", ("created_at", "id"), after)
        scope, scope_params = _scope_clause(*within) if within is not None else ("1 = 1", [])
        return self.tx.all(_CERTIFICATE_VIEW + f" WHERE {page} AND {scope} ORDER BY c.created_at, c.id LIMIT ?",
                           (*params, *scope_params, limit))

    def nearing_expiry(self, now: int) -> list[dict[str, Any]]:
        """Certificates (deployed, failed or pending) whose latest version has a third
        of its lifetime or less left, not yet expired: the only ones an expiry alert
        can concern, chosen in SQL so a large fleet is not read every round."""
        return self.tx.all(
            "SELECT c.id, c.agent_id, c.names, c.status, v.serial, v.not_before, v.not_after"
            " FROM certificate_versions v JOIN certificates c ON c.id = v.certificate_id"
            " WHERE v.not_after > ? AND 3 * (v.not_after - ?) <= v.not_after - v.not_before"
            " AND c.status IN ('deployed', 'failed', 'pending')"
            " AND v.serial = (SELECT serial FROM certificate_versions WHERE certificate_id = c.id"
            "  ORDER BY created_at DESC, serial LIMIT 1)", (now, now))

    def set_status(self, id: str, status: str, now: int, last_error: str | None = None) -> None:
        self.set_status_many([id], status, now, last_error)

    def set_status_many(self, ids: list[str], status: str, now: int, last_error: str | None = None) -> None:
        self.tx.execute_many("UPDATE certificates SET status = ?, last_error = ?, updated_at = ? WHERE id = ?",
                             [(status, last_error, now, id) for id in ids])

    def set_renew_at(self, id: str, renew_at: int | None) -> None:
        self.set_renew_at_many([id], renew_at)

    def set_renew_at_many(self, ids: list[str], renew_at: int | None) -> None:
        self.tx.execute_many("UPDATE certificates SET renew_at = ? WHERE id = ?", [(renew_at, id) for id in ids])

    def due_for_renewal(self, now: int, limit: int = 500) -> list[dict[str, Any]]:
        """Deployed certificates whose renewal time came, with no job in flight.

        On PostgreSQL the rows are locked and rows another coordinator holds are
        skipped, so two coordinators never start the same renewal.
        """
        lock = " FOR UPDATE OF c SKIP LOCKED" if self.tx.dialect == "postgresql" else ""
        return self.tx.all(
            "SELECT c.* FROM certificates c WHERE c.status = 'deployed' AND c.renew_at IS NOT NULL"
            " AND c.renew_at <= ? AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.certificate_id = c.id"
            "  AND j.state NOT IN ('done', 'failed', 'cancelled')) ORDER BY c.renew_at LIMIT ?" + lock, (now, limit))

    def latest_version(self, id: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM certificate_versions WHERE certificate_id = ? ORDER BY created_at DESC,"
                           " serial LIMIT 1", (id,))

    def latest_order_ids(self, ids: Iterable[str]) -> dict[str, str]:
        """Certificate id → the order of its latest version, for those with a version."""
        rows = _by_id(self.tx, "SELECT c.id, (SELECT order_id FROM certificate_versions WHERE certificate_id = c.id"
                               " ORDER BY created_at DESC, serial LIMIT 1) AS order_id FROM certificates c", ids,
                      column="c.id")
        return {id: row["order_id"] for id, row in rows.items() if row["order_id"] is not None}

    def add_version(self, *, serial: str, certificate_id: str, order_id: str, issuer_id: str,
                    certificate_pem: str, public_key_sha256: str, fingerprint_sha256: str,
                    not_before: int, not_after: int, now: int) -> None:
        self.tx.execute(
            "INSERT INTO certificate_versions (serial, certificate_id, order_id, issuer_id,"
            " certificate_pem, public_key_sha256, fingerprint_sha256, not_before, not_after,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (serial, certificate_id, order_id, issuer_id, certificate_pem, public_key_sha256,
             fingerprint_sha256, not_before, not_after, now),
        )

    def version_for_order(self, order_id: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM certificate_versions WHERE order_id = ?", (order_id,))

    def version(self, serial: str) -> dict[str, Any] | None:
        return self.tx.one("SELECT * FROM certificate_versions WHERE serial = ?", (serial,))

    def unrevoked_versions(self, certificate_id: str, now: int) -> list[dict[str, Any]]:
        return self.tx.all("SELECT * FROM certificate_versions WHERE certificate_id = ? AND revoked_at IS NULL"
                           " AND not_after > ? ORDER BY created_at", (certificate_id, now))

    def revoke_version(self, serial: str, *, reason: str, now: int) -> bool:
        return self.tx.execute("UPDATE certificate_versions SET revoked_at = ?, revocation_reason = ?"
                               " WHERE serial = ? AND revoked_at IS NULL", (now, reason, serial)) == 1

    def set_revocation_reason(self, serial: str, reason: str) -> bool:
        """Make a hold final (RFC 5280 §5.3.1): the entry keeps its revocation date."""
        return self.tx.execute("UPDATE certificate_versions SET revocation_reason = ? WHERE serial = ?"
                               " AND revocation_reason = 'certificate-hold'", (reason, serial)) == 1

    def release_hold(self, serial: str) -> bool:
        """Undo a ``certificate-hold``; any other revocation is final."""
        return self.tx.execute("UPDATE certificate_versions SET revoked_at = NULL, revocation_reason = NULL"
                               " WHERE serial = ? AND revocation_reason = 'certificate-hold'", (serial,)) == 1

    def held_versions(self, certificate_id: str, now: int) -> list[dict[str, Any]]:
        """Unexpired versions on ``certificate-hold``."""
        return self.tx.all("SELECT * FROM certificate_versions WHERE certificate_id = ?"
                           " AND revocation_reason = 'certificate-hold' AND not_after > ? ORDER BY created_at",
                           (certificate_id, now))

    def unrevoked_below(self, issuer_ids: list[str], now: int) -> list[dict[str, Any]]:
        """Certificates with an unexpired, unrevoked version signed by one of ``issuer_ids``."""
        if not issuer_ids:
            return []
        marks = ", ".join("?" for _ in issuer_ids)
        return self.tx.all(
            "SELECT DISTINCT c.id, c.names FROM certificates c JOIN certificate_versions v ON v.certificate_id = c.id"
            f" WHERE v.issuer_id IN ({marks}) AND v.revoked_at IS NULL AND v.not_after > ? ORDER BY c.id",
            (*issuer_ids, now))

    def revoked_for_issuer(self, issuer_id: str, now: int) -> list[dict[str, Any]]:
        """Revoked and not yet expired: what a CRL must list (RFC 5280 §3.3)."""
        return self.tx.all("SELECT serial, revoked_at, revocation_reason FROM certificate_versions"
                           " WHERE issuer_id = ? AND revoked_at IS NOT NULL AND not_after > ? ORDER BY serial",
                           (issuer_id, now))

    def live_count_for_issuer(self, issuer_id: str, now: int) -> int:
        row = self.tx.one("SELECT COUNT(*) AS n FROM certificate_versions WHERE issuer_id = ? AND not_after > ?",
                          (issuer_id, now))
        return int(row["n"]) if row else 0

    def select(self, *, issuer_id: str | None = None, profile_id: str | None = None,
               agent_id: str | None = None, tag: str | None = None) -> list[dict[str, Any]]:
        rows = self.list()
        return [r for r in rows
                if (issuer_id is None or r["issuer_id"] == issuer_id)
                and (profile_id is None or r["profile_id"] == profile_id)
                and (agent_id is None or r["agent_id"] == agent_id)
                and (tag is None or tag in json.loads(r["tags"]))]


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
class DiscoveredCertificates:
    """What the agents found: one row per certificate (by fingerprint) per location
    (path and position) per agent. Triage (dismissed, claimed) is kept on the row and
    survives the find going away and coming back."""

    tx: Tx

    def record(self, *, agent_id: str, source: str, scan_id: str, fingerprint_sha256: str, path: str,
               position: int, subject: str, sans: list[str], issuer: str, serial: str, not_before: int,
               not_after: int, key_algorithm: str, key_size: int | None, is_ca: bool, format: str,
               has_private_key: bool, managed_certificate_id: str | None, now: int) -> None:
        """Store a find, or refresh it if seen before (last seen now, present again).

        A find that is a version of a certfleet certificate (``managed_certificate_id``)
        becomes ``managed``; otherwise the status an operator gave it stays.
        """
        self.tx.execute(
            "INSERT INTO discovered_certificates (agent_id, source, fingerprint_sha256, path, position, subject,"
            " sans, issuer, serial, not_before, not_after, key_algorithm, key_size, is_ca, format, has_private_key,"
            " status, managed_certificate_id, scan_id, first_seen, last_seen)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (fingerprint_sha256, agent_id, path, position) DO UPDATE SET"
            "  last_seen = excluded.last_seen, removed_at = NULL, scan_id = excluded.scan_id,"
            "  format = excluded.format, has_private_key = excluded.has_private_key,"
            "  status = CASE WHEN excluded.managed_certificate_id IS NOT NULL THEN 'managed'"
            "                ELSE discovered_certificates.status END,"
            "  managed_certificate_id = COALESCE(excluded.managed_certificate_id,"
            "                                    discovered_certificates.managed_certificate_id)",
            (agent_id, source, fingerprint_sha256, path, position, subject, json.dumps(sans), issuer, serial,
             not_before, not_after, key_algorithm, key_size, int(is_ca), format, int(has_private_key),
             "managed" if managed_certificate_id else "unmanaged", managed_certificate_id, scan_id, now, now))

    def mark_removed(self, *, agent_id: str, fingerprint_sha256: str, path: str, position: int, now: int) -> bool:
        """``False`` if the agent has no such present find (already removed, or never there)."""
        return self.tx.execute(
            "UPDATE discovered_certificates SET removed_at = ? WHERE agent_id = ? AND fingerprint_sha256 = ?"
            " AND path = ? AND position = ? AND removed_at IS NULL",
            (now, agent_id, fingerprint_sha256, path, position)) == 1

    def seen_in_full_scan(self, *, agent_id: str, source: str, now: int) -> None:
        """A full scan ended: every present find of the agent and source it did not
        report removed is still there, reported in this scan or an earlier one."""
        self.tx.execute("UPDATE discovered_certificates SET last_seen = ? WHERE agent_id = ? AND source = ?"
                        " AND removed_at IS NULL", (now, agent_id, source))

    def present_count(self, agent_id: str) -> int:
        row = self.tx.one("SELECT COUNT(*) AS n FROM discovered_certificates WHERE agent_id = ? AND removed_at IS NULL",
                          (agent_id,))
        return int(row["n"]) if row else 0

    def certfleet_versions(self, fingerprints: list[str]) -> dict[str, str]:
        """Fingerprint → certificate id, for the fingerprints that are versions of a
        certificate certfleet issued."""
        if not fingerprints:
            return {}
        marks = ", ".join("?" for _ in fingerprints)
        return {row["fingerprint_sha256"]: row["certificate_id"] for row in self.tx.all(
            f"SELECT fingerprint_sha256, certificate_id FROM certificate_versions WHERE fingerprint_sha256 IN ({marks})",
            tuple(fingerprints))}

    def get(self, id: int) -> dict[str, Any]:
        return _required(self.tx.one("SELECT * FROM discovered_certificates WHERE id = ?", (id,)),
                         f"discovered certificate {id}")

    def list(self, *, status: str | None = None, agent_id: str | None = None, source: str | None = None,
             issuer: str | None = None, expires_before: int | None = None, include_removed: bool = False,
             after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Finds in discovery order, from the one after ``after``; ``issuer`` is a
        case-insensitive substring."""
        clauses, params = ["id > ?"], [after]
        for column, value in (("status", status), ("agent_id", agent_id), ("source", source)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if issuer:
            # '!' escapes LIKE's wildcards, so the substring is matched literally.
            escaped = issuer.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
            clauses.append("LOWER(issuer) LIKE ? ESCAPE '!'")
            params.append(f"%{escaped}%")
        if expires_before is not None:
            clauses.append("not_after < ?")
            params.append(expires_before)
        if not include_removed:
            clauses.append("removed_at IS NULL")
        return self.tx.all(f"SELECT * FROM discovered_certificates WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
                           (*params, limit))

    def dismiss(self, id: int, *, reason: str, by: str, now: int) -> bool:
        """``False`` unless the find was unmanaged."""
        return self.tx.execute(
            "UPDATE discovered_certificates SET status = 'dismissed', dismiss_reason = ?, triaged_by = ?,"
            " triaged_at = ? WHERE id = ? AND status = 'unmanaged'", (reason, by, now, id)) == 1

    def claim(self, id: int, *, certificate_id: str, by: str, now: int) -> bool:
        """``False`` if the find was managed meanwhile."""
        return self.tx.execute(
            "UPDATE discovered_certificates SET status = 'managed', claimed_certificate_id = ?, triaged_by = ?,"
            " triaged_at = ? WHERE id = ? AND status <> 'managed'", (certificate_id, by, now, id)) == 1

    def unmanaged_expiring(self, before: int) -> list[dict[str, Any]]:
        """Present, unmanaged finds whose certificate ends before ``before`` (expired
        ones included), soonest first."""
        return self.tx.all(
            "SELECT * FROM discovered_certificates WHERE status = 'unmanaged' AND removed_at IS NULL"
            " AND not_after < ? ORDER BY not_after, id", (before,))
