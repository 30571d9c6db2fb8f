"""What initialization writes once for the whole installation: settings (``meta``) and
the keys that sign on its behalf."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engine import Tx

__all__ = [
    "Meta",
    "SigningKeys",
]


@dataclass
class Meta:
    tx: Tx

    def get(self, key: str) -> str | None:
        row = self.tx.one("SELECT value FROM meta WHERE key = ?", (key,))
        return row["value"] if row else None

    def insert(self, key: str, value: str) -> None:
        self.tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))


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
