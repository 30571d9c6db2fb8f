"""Bearer secrets: API keys, enrollment tokens and the bootstrap token.

A secret looks like ``cfk_<id>_<secret>``: the prefix says what it is, the id is a
non-secret lookup key, the secret is 256 random bits. Only the SHA-256 of the whole
string is stored (the secret is high-entropy, so a slow password hash adds nothing),
and it is compared in constant time. Audit rows name the id, never the value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

__all__ = [
    "API_KEY",
    "BOOTSTRAP",
    "ENROLLMENT",
    "Minted",
    "hash_secret",
    "matches",
    "mint",
    "parse",
]

API_KEY = "cfk"
ENROLLMENT = "cfe"
BOOTSTRAP = "cfb"

_TOKEN = re.compile(r"^(cf[a-z])_([A-Za-z0-9]{16})_([A-Za-z0-9_-]{43})$")

@dataclass(frozen=True)
class Minted:
    id: str
    token: str
    secret_hash: str


def hash_secret(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mint(prefix: str, id: str | None = None) -> Minted:
    """A new secret; pass ``id`` to give an existing key a new secret (rotation)."""
    id = id or "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(16))
    token = f"{prefix}_{id}_{secrets.token_urlsafe(32)}"
    return Minted(id, token, hash_secret(token))


def parse(token: str, prefix: str) -> str | None:
    """The id of a well-formed secret of this kind, else ``None``."""
    match = _TOKEN.match(token)
    if match is None or match.group(1) != prefix:
        return None
    return match.group(2)


def matches(token: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(token), secret_hash)
