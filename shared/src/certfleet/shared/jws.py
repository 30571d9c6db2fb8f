"""Compact JWS (RFC 7515) with EdDSA over Ed25519 (RFC 8037), as typed JWTs (RFC 7519).

Two token types travel between agent and coordinator and must never be confused:
work orders (signed by the coordinator) and agent request tokens (signed by an agent).
Each has its own ``typ`` header (RFC 8725 §3.11 explicit typing), and verification
refuses the other type even before it looks at the key.

Time checks take ``now`` from the caller instead of reading the clock, so expiry is
testable without sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

__all__ = [
    "TokenError",
    "key_id",
    "public_key_from_raw",
    "public_key_raw",
    "sign",
    "verify",
]

ALGORITHM = "EdDSA"


class TokenError(Exception):
    """A token that must not be acted on. ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def public_key_raw(key: ed25519.Ed25519PublicKey) -> str:
    """The 32 raw public-key bytes, base64url without padding (as in a JWK ``x``)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_key_from_raw(value: str) -> ed25519.Ed25519PublicKey:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        if len(raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise TokenError("malformed", f"invalid Ed25519 public key: {exc}") from exc


def key_id(key: ed25519.Ed25519PublicKey) -> str:
    """A stable key id: the first 16 bytes of SHA-256 over the raw key, base64url."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:16]).rstrip(b"=").decode()


def sign(
    claims: Mapping[str, Any], key: ed25519.Ed25519PrivateKey, *, typ: str, kid: str
) -> str:
    return jwt.encode(dict(claims), key, algorithm=ALGORITHM, headers={"typ": typ, "kid": kid})


def verify(
    token: str,
    *,
    typ: str,
    key_for: Callable[[str], ed25519.Ed25519PublicKey | None],
    now: float,
    audience: str | None = None,
    issuer: str | None = None,
    leeway: float = 30.0,
    max_lifetime: float | None = None,
) -> dict[str, Any]:
    """Verify a typed EdDSA JWT and return its claims.

    ``key_for(kid)`` returns the public key for a key id or ``None`` when it is unknown.
    Requires ``exp``, ``iat`` and ``jti``; checks them against ``now`` with ``leeway``.
    Raises :class:`TokenError` with reason ``malformed``, ``type``, ``unknown-key``,
    ``signature``, ``audience``, ``issuer``, ``expired``, ``not-yet-valid`` or
    ``lifetime``.
    """
    if not isinstance(token, str) or len(token) > 16384:
        raise TokenError("malformed", "token is not a string of reasonable size")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError("malformed", f"token is not a compact JWS: {exc}") from exc
    if header.get("alg") != ALGORITHM:
        raise TokenError("malformed", f"algorithm {header.get('alg')!r} is not accepted")
    if header.get("typ") != typ:
        raise TokenError("type", f"token type {header.get('typ')!r} is not {typ!r}")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise TokenError("malformed", "token header has no key id")
    key = key_for(kid)
    if key is None:
        raise TokenError("unknown-key", f"key id {kid!r} is not trusted")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidSignatureError as exc:
        raise TokenError("signature", "signature does not verify") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("malformed", f"token cannot be decoded: {exc}") from exc
    for name, kind in (("exp", (int, float)), ("iat", (int, float)), ("jti", str)):
        if not isinstance(claims.get(name), kind) or isinstance(claims.get(name), bool):
            raise TokenError("malformed", f"claim {name!r} is missing or mistyped")
    nbf = claims.get("nbf", claims["iat"])
    for name, value in (("exp", claims["exp"]), ("iat", claims["iat"]), ("nbf", nbf)):
        # NaN compares false with everything and would pass every time check.
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise TokenError("malformed", f"claim {name!r} is not a finite number")
    if audience is not None and claims.get("aud") != audience:
        raise TokenError("audience", f"token is addressed to {claims.get('aud')!r}")
    if issuer is not None and claims.get("iss") != issuer:
        raise TokenError("issuer", f"token was issued by {claims.get('iss')!r}")
    if now > claims["exp"] + leeway:
        raise TokenError("expired", "token has expired")
    if now + leeway < nbf or now + leeway < claims["iat"]:
        raise TokenError("not-yet-valid", "token is not valid yet")
    # Measured from the earliest moment the token claims to be usable, so a late
    # ``iat`` cannot stretch a token past the limit.
    if max_lifetime is not None and claims["exp"] - min(nbf, claims["iat"]) > max_lifetime:
        raise TokenError("lifetime", f"token lifetime exceeds {max_lifetime:.0f}s")
    return claims
