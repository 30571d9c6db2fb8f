"""Managed certificates and what shapes them: profiles, renewal policies, and the
certificates with their issued versions."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..engine import Conflict, Tx
from ._common import ALL_ROWS, _all_by_id, _by_id, _keyset, _required, _scope_clause

__all__ = [
    "Certificates",
    "Profiles",
    "RenewalPolicies",
]


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

    def list(self, *, after: str | None = None, limit: int = ALL_ROWS) -> list[dict[str, Any]]:
        page, params = _keyset("profiles", "p", ('created_at', 'id'), after)
        return self.tx.all(f"SELECT * FROM profiles p WHERE {page} ORDER BY created_at, id LIMIT ?", (*params, limit))

    def update_policy(self, id: str, policy: str, *, expected_version: int, now: int) -> None:
        """Optimistic: fails with :class:`Conflict` if someone else changed it first."""
        if self.tx.execute("UPDATE profiles SET policy = ?, version = version + 1, updated_at = ?"
                           " WHERE id = ? AND version = ?", (policy, now, id, expected_version)) != 1:
            raise Conflict(f"profile {id} changed meanwhile")


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

    def list(self, *, after: str | None = None, limit: int = ALL_ROWS) -> list[dict[str, Any]]:
        page, params = _keyset("renewal_policies", "r", ('created_at', 'id'), after)
        return self.tx.all(f"SELECT * FROM renewal_policies r WHERE {page} ORDER BY created_at, id LIMIT ?", (*params, limit))


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
