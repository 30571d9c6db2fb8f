"""Private keys generated on this host, stored 0600, never sent anywhere."""

from __future__ import annotations

import re
from pathlib import Path

from certfleet.shared.pki import KeyType, PrivateKey, generate_private_key, load_private_key, private_key_pem

from .files import write_atomic

__all__ = ["KeyStore"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class KeyStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, order_id: str) -> Path:
        if not _SAFE_ID.match(order_id):
            raise ValueError(f"unsafe order id {order_id!r}")
        return self.root / f"{order_id}.key"

    def key_for_order(self, order_id: str, key_type: KeyType, *, reuse_from: str | None = None) -> PrivateKey:
        """The order's key: generated once (or taken over from ``reuse_from``, an
        earlier order, when the renewal policy opts into key reuse), then loaded
        again on every retry."""
        path = self.path_for(order_id)
        if path.exists():
            return load_private_key(path.read_bytes())
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        previous = self.path_for(reuse_from) if reuse_from else None
        if previous is not None and previous.exists():
            key = load_private_key(previous.read_bytes())
        else:
            key = generate_private_key(key_type)
        write_atomic(path, private_key_pem(key), mode=0o600)
        return key

    def load(self, order_id: str) -> PrivateKey:
        return load_private_key(self.path_for(order_id).read_bytes())

    def forget(self, order_id: str) -> None:
        """Delete an order's key once nothing can need it any more."""
        self.path_for(order_id).unlink(missing_ok=True)
