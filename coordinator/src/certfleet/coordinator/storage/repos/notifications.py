"""Notification channels and the outbox of deliveries to them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engine import Tx
from ._common import ALL_ROWS, _keyset, _required

__all__ = [
    "Notifications",
]


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

    def channels(self, *, after: str | None = None, limit: int = ALL_ROWS) -> list[dict[str, Any]]:
        page, params = _keyset("notification_channels", "c", ("created_at", "id"), after)
        return self.tx.all(f"SELECT * FROM notification_channels c WHERE {page} ORDER BY created_at, id LIMIT ?",
                           (*params, limit))

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
