"""Secrets at rest: AES-256-GCM under the coordinator's master key.

The master key is 32 random bytes, from ``CERTFLEET_MASTER_KEY`` (base64) or a 0600
file in the data dir made on first start. Every ciphertext is bound to what it
protects through the associated data (``issuer:<id>``, ``signing-key:<kid>``…), so a
ciphertext copied into another row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["MasterKey", "MasterKeyError", "audit_chain_key"]

_VERSION = b"\x01"
_NONCE_BYTES = 12


class MasterKeyError(Exception):
    """The master key is missing, malformed, or not the one the data was sealed with."""


class MasterKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise MasterKeyError("the master key must be 32 bytes")
        self._aead = AESGCM(key)
        self._key = key

    @classmethod
    def load(cls, path: Path, env_value: str | None = None) -> MasterKey:
        """Use ``env_value`` (base64) if given, else read ``path``; never creates one."""
        if env_value:
            return cls(_decode(env_value, "CERTFLEET_MASTER_KEY"))
        if not path.exists():
            raise MasterKeyError(f"no master key at {path} (and CERTFLEET_MASTER_KEY is not set)")
        if path.stat().st_mode & 0o077:
            raise MasterKeyError(f"{path} must not be readable by group or others (chmod 600)")
        return cls(_decode(path.read_text().strip(), str(path)))

    @classmethod
    def load_or_create(cls, path: Path, env_value: str | None = None) -> MasterKey:
        """Use ``env_value`` (base64) if given, else read ``path``, else create it 0600."""
        if env_value or path.exists():
            return cls.load(path, env_value)
        key = secrets.token_bytes(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(key).decode() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return cls(key)

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose, derived with HKDF-SHA256 (RFC 5869)."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=f"certfleet {purpose}".encode()).derive(self._key)

    def seal(self, plaintext: bytes, *, context: str) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, context.encode())
        return base64.b64encode(_VERSION + nonce + sealed).decode()

    def open(self, token: str, *, context: str) -> bytes:
        try:
            raw = base64.b64decode(token, validate=True)
        except binascii.Error as exc:
            raise MasterKeyError("sealed secret is not base64") from exc
        if raw[:1] != _VERSION or len(raw) < 1 + _NONCE_BYTES + 16:
            raise MasterKeyError("sealed secret has an unknown format")
        nonce, sealed = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, context.encode())
        except InvalidTag as exc:
            raise MasterKeyError(
                f"cannot decrypt {context}: wrong master key or tampered data"
            ) from exc


def _decode(value: str, source: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise MasterKeyError(f"{source} is not valid base64") from exc


def audit_chain_key(master: MasterKey) -> bytes:
    """The key of the audit trail's HMAC chain."""
    return master.derive("audit chain")
