"""Certificates the agents found on their hosts, and how an operator triaged them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..engine import Tx
from ._common import _required

__all__ = [
    "DiscoveredCertificates",
]


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
