"""The agent's durable state (SQLite through sqlite-utils).

An order is recorded here before the agent acts on it, and every step it takes is a
state change committed together with what the step produced, so a crash at any point
resumes where it stopped. Results travel through an outbox that is written in the
same transaction as the order's final state, and retried until acknowledged.
"""

from __future__ import annotations

import enum
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

__all__ = ["AgentState", "OrderEvent", "OrderState", "Snapshot", "advance"]


class OrderState(enum.StrEnum):
    RECEIVED = "received"
    KEY_READY = "key-ready"
    ISSUED = "issued"
    DEPLOYED = "deployed"
    CHECKED = "checked"
    """A ``check-target`` order ran (whatever it found)."""
    FAILED = "failed"


class OrderEvent(enum.StrEnum):
    KEY_GENERATED = "key-generated"
    CERTIFICATE_RECEIVED = "certificate-received"
    DEPLOYED = "deployed"
    CHECKED = "checked"
    FAILED = "failed"


TERMINAL = frozenset({OrderState.DEPLOYED, OrderState.CHECKED, OrderState.FAILED})

_TRANSITIONS: dict[tuple[OrderState, OrderEvent], OrderState] = {
    (OrderState.RECEIVED, OrderEvent.KEY_GENERATED): OrderState.KEY_READY,
    (OrderState.KEY_READY, OrderEvent.CERTIFICATE_RECEIVED): OrderState.ISSUED,
    (OrderState.ISSUED, OrderEvent.DEPLOYED): OrderState.DEPLOYED,
    (OrderState.RECEIVED, OrderEvent.CHECKED): OrderState.CHECKED,
    (OrderState.RECEIVED, OrderEvent.FAILED): OrderState.FAILED,
    (OrderState.KEY_READY, OrderEvent.FAILED): OrderState.FAILED,
    (OrderState.ISSUED, OrderEvent.FAILED): OrderState.FAILED,
}


def advance(state: OrderState, event: OrderEvent) -> OrderState:
    """The next state; raises ``ValueError`` for a transition the table does not list."""
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise ValueError(f"no transition from {state} on {event}") from None


@dataclass(frozen=True)
class Snapshot:
    name: str
    existed: bool
    content: bytes
    mode: int
    uid: int
    gid: int


class AgentState:
    def __init__(self, path: Path, *, clock=time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        connection = sqlite3.connect(str(path), isolation_level=None)
        self.db = sqlite_utils.Database(connection, execute_plugins=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        path.chmod(0o600)
        self._clock = clock
        self._create()

    def now(self) -> int:
        return int(self._clock())

    def _create(self) -> None:
        with self.db.atomic():
            self.db["orders"].create(
                {"id": str, "token": str, "kind": str, "status": str, "payload": str,
                 "certificate_pem": str, "chain_pem": str, "detail": str,
                 "received_at": int, "updated_at": int},
                pk="id", if_not_exists=True)
            self.db["refusals"].create(
                {"token_sha256": str, "delivery_id": str, "reason": str, "detail": str, "at": int},
                pk="token_sha256", if_not_exists=True)
            self.db["outbox"].create(
                {"id": int, "path": str, "body": str, "created_at": int, "attempts": int,
                 "next_attempt_at": int, "acknowledged_at": int, "last_error": str},
                pk="id", if_not_exists=True)
            self.db["snapshots"].create(
                {"order_id": str, "name": str, "existed": int, "content": bytes, "mode": int,
                 "uid": int, "gid": int},
                pk=("order_id", "name"), if_not_exists=True)
            # Discovery: the inventory as the coordinator last acknowledged it, and the
            # per-file parse cache that lets a rescan skip files that did not change.
            self.db["discovered"].create(
                {"fingerprint": str, "path": str, "position": int, "record": str, "first_seen": int,
                 "last_seen": int},
                pk=("fingerprint", "path", "position"), if_not_exists=True)
            self.db["discovery_files"].create(
                {"path": str, "device": int, "inode": int, "size": int, "mtime_ns": int, "ctime_ns": int,
                 "parsed": str},
                pk="path", if_not_exists=True)
            # What certfleet last put in each file it manages: the change watcher's
            # reference, so a file replaced behind its back is reported as drift.
            self.db["deployed_files"].create(
                {"path": str, "sha256": str, "order_id": str, "at": int}, pk="path", if_not_exists=True)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        with self.db.atomic():
            yield

    # --- orders -------------------------------------------------------------------------

    def order(self, order_id: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM orders WHERE id = ?", [order_id]))
        return rows[0] if rows else None

    def record_order(self, *, order_id: str, token: str, kind: str, payload: dict[str, Any]) -> None:
        now = self.now()
        self.db["orders"].insert(
            {"id": order_id, "token": token, "kind": kind, "status": OrderState.RECEIVED,
             "payload": json.dumps(payload), "received_at": now, "updated_at": now})

    def unfinished_orders(self) -> list[dict[str, Any]]:
        placeholders = ", ".join("?" for _ in TERMINAL)
        return list(self.db.query(
            f"SELECT * FROM orders WHERE status NOT IN ({placeholders}) ORDER BY rowid",
            list(TERMINAL)))

    def transition(self, order_id: str, event: OrderEvent, **fields: Any) -> OrderState:
        row = self.order(order_id)
        if row is None:
            raise KeyError(order_id)
        state = advance(OrderState(row["status"]), event)
        self.db["orders"].update(order_id, {"status": state, "updated_at": self.now(), **fields})
        return state

    # --- refusals -----------------------------------------------------------------------

    def record_refusal(self, *, token: str, delivery_id: str, reason: str, detail: str) -> bool:
        """Remember a refused token; ``False`` if it was refused before."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        if list(self.db.query("SELECT 1 FROM refusals WHERE token_sha256 = ?", [digest])):
            return False
        self.db["refusals"].insert({"token_sha256": digest, "delivery_id": delivery_id,
                                    "reason": reason, "detail": detail, "at": self.now()})
        return True

    def refusals(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM refusals ORDER BY at"))

    # --- snapshots ----------------------------------------------------------------------

    def snapshots(self, order_id: str) -> list[Snapshot] | None:
        rows = list(self.db.query("SELECT * FROM snapshots WHERE order_id = ? ORDER BY name", [order_id]))
        if not rows:
            return None
        return [Snapshot(r["name"], bool(r["existed"]), r["content"] or b"", r["mode"], r["uid"], r["gid"])
                for r in rows]

    def save_snapshots(self, order_id: str, snapshots: list[Snapshot]) -> None:
        with self.db.atomic():
            for s in snapshots:
                self.db["snapshots"].insert(
                    {"order_id": order_id, "name": s.name, "existed": int(s.existed),
                     "content": s.content, "mode": s.mode, "uid": s.uid, "gid": s.gid})

    def forget_snapshots(self, order_id: str) -> None:
        self.db.execute("DELETE FROM snapshots WHERE order_id = ?", [order_id])

    def record_deployed_files(self, order_id: str, digests: dict[str, str]) -> None:
        """``digests``: path → SHA-256 of what the deployment left there."""
        now = self.now()
        self.db["deployed_files"].upsert_all(
            [{"path": path, "sha256": digest, "order_id": order_id, "at": now} for path, digest in digests.items()],
            pk="path")

    def deployed_files(self) -> dict[str, str]:
        return {row["path"]: row["sha256"] for row in self.db.query("SELECT path, sha256 FROM deployed_files")}

    def superseded_orders(self, order_id: str, certificate_id: str) -> list[str]:
        """Finished issue orders for ``certificate_id`` received before ``order_id``."""
        return [row["id"] for row in self.db.query(
            "SELECT o.id FROM orders o, orders current WHERE current.id = ? AND o.id != current.id"
            " AND o.kind = 'issue' AND json_extract(o.payload, '$.certificate_id') = ?"
            " AND o.status IN ('deployed', 'failed') AND o.rowid < current.rowid",  # arrived earlier
            [order_id, certificate_id])]

    # --- outbox -------------------------------------------------------------------------

    def enqueue(self, path: str, body: bytes) -> None:
        now = self.now()
        self.db["outbox"].insert({"path": path, "body": body.decode(), "created_at": now,
                                  "attempts": 0, "next_attempt_at": now})

    def outbox_due(self) -> list[dict[str, Any]]:
        return list(self.db.query(
            "SELECT * FROM outbox WHERE acknowledged_at IS NULL AND next_attempt_at <= ? ORDER BY id",
            [self.now()]))

    def outbox_pending(self, path: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM outbox WHERE acknowledged_at IS NULL"
        return list(self.db.query(sql + (" AND path = ?" if path else "") + " ORDER BY id",
                                  [path] if path else []))

    def last_acknowledged_at(self, path: str) -> int | None:
        rows = list(self.db.query(  # a clean acknowledgement, not a refusal recorded as final
            "SELECT MAX(acknowledged_at) AS at FROM outbox WHERE path = ? AND last_error IS NULL", [path]))
        return rows[0]["at"]

    def outbox_next_due(self) -> int | None:
        rows = list(self.db.query("SELECT MIN(next_attempt_at) AS due FROM outbox WHERE acknowledged_at IS NULL"))
        return rows[0]["due"]

    def acknowledge(self, outbox_id: int, error: str | None = None) -> None:
        self.db["outbox"].update(outbox_id, {"acknowledged_at": self.now(), "last_error": error})

    def retry_later(self, outbox_id: int, attempts: int, delay: int, error: str) -> None:
        self.db["outbox"].update(outbox_id, {"attempts": attempts, "next_attempt_at": self.now() + delay,
                                             "last_error": error[:2000]})

    # --- discovery ----------------------------------------------------------------------

    def discovered(self) -> list[dict[str, Any]]:
        """The acknowledged inventory: one row per (fingerprint, path, position)."""
        return list(self.db.query("SELECT fingerprint, path, position, record, first_seen, last_seen"
                                  " FROM discovered ORDER BY path, position"))

    def discovery_files(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM discovery_files"))

    def save_discovery_files(self, files: list[dict[str, Any]], forget: list[str]) -> None:
        with self.db.atomic():
            self._save_discovery_files(files, forget)

    def _save_discovery_files(self, files: list[dict[str, Any]], forget: list[str]) -> None:
        if files:
            self.db["discovery_files"].upsert_all(files, pk="path")
        self.db.conn.executemany("DELETE FROM discovery_files WHERE path = ?", [(path,) for path in forget])

    def apply_discovery(self, *, upserts: list[tuple[str, str, int, str]], removals: list[tuple[str, str, int]],
                        seen: list[tuple[str, str, int]], files: list[dict[str, Any]], forget: list[str]) -> None:
        """Apply an acknowledged inventory change in one transaction: ``upserts`` are
        (fingerprint, path, position, record JSON), ``seen`` rows get ``last_seen`` now,
        and the file cache is updated with it."""
        now = self.now()
        with self.db.atomic():
            self.db.conn.executemany(
                "INSERT INTO discovered (fingerprint, path, position, record, first_seen, last_seen)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (fingerprint, path, position)"
                " DO UPDATE SET record = excluded.record, last_seen = excluded.last_seen",
                [(*row, now, now) for row in upserts])
            self.db.conn.executemany(
                "DELETE FROM discovered WHERE fingerprint = ? AND path = ? AND position = ?", removals)
            self.db.conn.executemany(
                "UPDATE discovered SET last_seen = ? WHERE fingerprint = ? AND path = ? AND position = ?",
                [(now, *key) for key in seen])
            self._save_discovery_files(files, forget)
