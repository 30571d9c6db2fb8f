"""The audit trail: append-only and hash-chained.

Each event carries the hash of the event before it, and its own hash covers every
column including its id and that previous hash, so changing, removing or reordering
any row breaks the chain at that row. The hashes are HMACs under a key derived from
the master key, so someone who can write to the database but does not hold that key
cannot recompute the chain after an edit. The database refuses UPDATE and DELETE on
the table (triggers on both engines); the chain is what proves nothing was done
behind the triggers' back. :func:`verify_chain` walks it straight from the database.

Events are appended in the same transaction as the change they record. Appends are
serialized (SQLite has one writer; PostgreSQL takes a transaction-scoped advisory
lock), because each needs the hash of the one before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .storage import Database, Tx

__all__ = ["GENESIS", "AuditRecord", "ChainReport", "append", "append_all", "event_hash", "query", "verify_chain"]

GENESIS = "0" * 64
_APPEND_LOCK = 7_400_112_002
_HASHED = ("id", "at_ms", "actor_type", "actor_id", "action", "resource_type", "resource_id", "outcome",
           "request_id", "source_address", "body_sha256", "latency_ms", "details", "prev_hash")


@dataclass(frozen=True)
class AuditRecord:
    """One event. ``details`` must never carry secrets: name keys by id, not value."""

    at_ms: int
    actor_type: str
    actor_id: str
    action: str
    resource_type: str
    resource_id: str
    outcome: str = "success"
    request_id: str = "-"
    source_address: str = "-"
    body_sha256: str = "-"
    latency_ms: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def event_hash(row: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA256 (RFC 2104) of the event's columns, its id and the previous hash,
    under the chain key: recomputing the chain after an edit needs that key."""
    canonical = json.dumps([row[name] for name in _HASHED], separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


def append(tx: Tx, record: AuditRecord, *, key: bytes) -> int:
    """Append ``record`` inside the caller's transaction; returns its id."""
    return append_all(tx, [record], key=key)[-1]


_INSERT_ROWS = 500
"""Rows per INSERT: 15 parameters each stays far below SQLite's variable limit."""


def append_all(tx: Tx, records: list[AuditRecord], *, key: bytes) -> list[int]:
    """Append ``records`` in order inside the caller's transaction; returns their ids.

    The chain's lock is taken and its last hash read once, however many events: a
    transaction that records hundreds (a renewal round) makes a few round trips to
    the database, not three per event."""
    if not records:
        return []
    if tx.dialect == "postgresql":
        tx.one("SELECT pg_advisory_xact_lock(?)", (_APPEND_LOCK,))
    last = tx.one("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1")
    last_id, last_hash = (last["id"], last["hash"]) if last else (0, GENESIS)
    columns = (*_HASHED, "hash")
    rows = []
    for record in records:
        row = asdict(record)
        row["details"] = json.dumps(record.details, sort_keys=True, separators=(",", ":"), default=str)
        row["id"] = last_id = last_id + 1
        row["prev_hash"] = last_hash
        row["hash"] = last_hash = event_hash(row, key)
        rows.append(row)
    placeholders = f"({', '.join('?' for _ in columns)})"
    for start in range(0, len(rows), _INSERT_ROWS):
        chunk = rows[start:start + _INSERT_ROWS]
        tx.execute(f"INSERT INTO audit_events ({', '.join(columns)}) VALUES {', '.join(placeholders for _ in chunk)}",
                   tuple(row[c] for row in chunk for c in columns))
    return [row["id"] for row in rows]


@dataclass(frozen=True)
class ChainReport:
    events: int
    first_bad_id: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.first_bad_id is None


async def verify_chain(database: Database, *, key: bytes, page: int = 5000) -> ChainReport:
    """Walk the chain from the first event; stop at the first that does not fit."""
    expected_prev, expected_id, count = GENESIS, 1, 0
    while True:
        rows = await database.transact(lambda tx, first=expected_id: tx.all(
            "SELECT * FROM audit_events WHERE id >= ? ORDER BY id LIMIT ?", (first, page)))
        for row in rows:
            if row["id"] != expected_id:
                return ChainReport(count, row["id"], f"event {row['id']} follows a missing event {expected_id}")
            if row["prev_hash"] != expected_prev:
                return ChainReport(count, row["id"], f"event {row['id']} does not point at event {row['id'] - 1}")
            if not hmac.compare_digest(event_hash(row, key), row["hash"]):
                return ChainReport(count, row["id"], f"event {row['id']} was changed after it was written")
            expected_prev, expected_id, count = row["hash"], row["id"] + 1, count + 1
        if len(rows) < page:
            return ChainReport(count)


def query(tx: Tx, *, after: int = 0, limit: int = 100, since_ms: int | None = None, until_ms: int | None = None,
          actor_id: str | None = None, action: str | None = None, resource_type: str | None = None,
          resource_id: str | None = None) -> list[dict[str, Any]]:
    """Events with ``id > after`` matching every given filter, oldest first."""
    clauses, params = ["id > ?"], [after]
    for column, operator, value in (("at_ms", ">=", since_ms), ("at_ms", "<", until_ms),
                                    ("actor_id", "=", actor_id), ("action", "=", action),
                                    ("resource_type", "=", resource_type), ("resource_id", "=", resource_id)):
        if value is not None:
            clauses.append(f"{column} {operator} ?")
            params.append(value)
    return tx.all(f"SELECT * FROM audit_events WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
                  (*params, limit))


def as_wire(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "details": json.loads(row["details"])}

