"""Row integrity for the tables that decide who may do what.

An API key, a grant, a custom role, an agent's public key or a deployment target's
settings are only honoured if the row carries a valid HMAC-SHA256 under a key derived
from the master key. Someone who
can write to the database but does not hold the master key cannot mint an admin key,
grant themselves a role, swap an agent's identity key for their own, or slip a
command into a target that the coordinator would sign into a work order: the forged
or altered row fails the check and is ignored (and logged). Columns that change
without a security meaning (``last_used_at``, ``last_seen_at``) are not covered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from .secretbox import MasterKey
from .storage import Tx

__all__ = ["RowIntegrity"]

log = logging.getLogger("certfleet.integrity")

COVERED: dict[str, tuple[str, tuple[str, ...]]] = {
    # table: (key column, columns covered)
    "api_keys": ("id", ("id", "secret_hash", "user_id", "expires_at", "revoked_at")),
    "grants": ("id", ("id", "principal_type", "principal_id", "role", "scope_type", "scope_id", "expires_at")),
    "roles": ("name", ("name", "permissions")),
    # Retirement is covered: clearing retired_at in the database breaks the seal, so a
    # retired identity cannot be brought back that way.
    "agents": ("id", ("id", "public_key", "retired_at")),
    # Target settings become commands an agent runs (as root, often): a forged row must
    # not reach a signed work order.
    "targets": ("id", ("id", "name", "agent_id", "kind", "settings")),
}


class RowIntegrity:
    def __init__(self, master: MasterKey) -> None:
        self._key = master.derive("row integrity")

    def mac(self, table: str, row: dict[str, Any]) -> str:
        _, columns = COVERED[table]
        message = json.dumps([table, *[row[c] for c in columns]], separators=(",", ":"), default=str)
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def seal(self, tx: Tx, table: str, key: str) -> None:
        """(Re)compute the MAC of one row after it was written."""
        key_column, _ = COVERED[table]
        row = tx.one(f"SELECT * FROM {table} WHERE {key_column} = ?", (key,))
        if row is not None:
            tx.execute(f"UPDATE {table} SET mac = ? WHERE {key_column} = ?", (self.mac(table, row), key))

    def valid(self, table: str, row: dict[str, Any]) -> bool:
        ok = bool(row.get("mac")) and hmac.compare_digest(row["mac"], self.mac(table, row))
        if not ok:
            key_column, _ = COVERED[table]
            log.warning("ignoring %s row %s: its integrity check failed (written outside certfleet?)",
                        table, row.get(key_column))
        return ok
