"""The certificate authorities: issuers, their CRLs, and their OCSP responders and
pre-signed responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engine import Tx
from ._common import ALL_ROWS, _keyset, _required

__all__ = [
    "Crls",
    "Issuers",
    "Ocsp",
]


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

    def list(self, *, after: str | None = None, limit: int = ALL_ROWS) -> list[dict[str, Any]]:
        page, params = _keyset("issuers", "i", ('created_at', 'id'), after)
        return self.tx.all(f"SELECT * FROM issuers i WHERE {page} ORDER BY created_at, id LIMIT ?", (*params, limit))

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
