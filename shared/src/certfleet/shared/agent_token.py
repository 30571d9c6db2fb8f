"""Agent request tokens: how an agent proves who it is on every request.

Each request carries ``Authorization: CertfleetAgent <token>``, a JWT signed with the
agent's own Ed25519 identity key, header ``typ: certfleet-agent+jwt`` and ``kid`` the
agent id. The token is bound to the request (``htm`` method and ``htu`` path, in the
spirit of DPoP, RFC 9449 §4.2), lives at most two minutes, and carries a ``jti`` the
coordinator accepts only once. The coordinator stores only agent public keys, so its
database yields no agent credential.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519

from . import jws

__all__ = ["AUTH_SCHEME", "MAX_LIFETIME", "TOKEN_TYPE", "sign_request_token", "verify_request_token"]

AUTH_SCHEME = "CertfleetAgent"
TOKEN_TYPE = "certfleet-agent+jwt"
AUDIENCE = "certfleet-coordinator"
MAX_LIFETIME = 120
DEFAULT_LIFETIME = 60


def sign_request_token(
    key: ed25519.Ed25519PrivateKey, *, agent_id: str, method: str, path: str, now: int
) -> str:
    claims = {
        "iss": agent_id,
        "sub": agent_id,
        "aud": AUDIENCE,
        "htm": method.upper(),
        "htu": path,
        "iat": now,
        "exp": now + DEFAULT_LIFETIME,
        "jti": secrets.token_urlsafe(18),
    }
    return jws.sign(claims, key, typ=TOKEN_TYPE, kid=agent_id)


def verify_request_token(
    token: str,
    *,
    key_for: Callable[[str], ed25519.Ed25519PublicKey | None],
    method: str,
    path: str,
    now: float,
) -> dict[str, Any]:
    """Verify an agent request token for this method and path; return its claims.

    Checking that the ``jti`` is new is the caller's job (it needs storage). Raises
    :class:`jws.TokenError`.
    """
    claims = jws.verify(
        token,
        typ=TOKEN_TYPE,
        key_for=key_for,
        now=now,
        audience=AUDIENCE,
        leeway=30,
        max_lifetime=MAX_LIFETIME,
    )
    kid = jwt.get_unverified_header(token).get("kid")
    if claims.get("sub") != kid or claims.get("iss") != kid:
        raise jws.TokenError("malformed", "token subject must be the signing agent")
    if claims.get("htm") != method.upper() or claims.get("htu") != path:
        raise jws.TokenError("binding", "token is bound to another request")
    if len(claims["jti"]) > 128:
        raise jws.TokenError("malformed", "jti is too long")
    return claims
