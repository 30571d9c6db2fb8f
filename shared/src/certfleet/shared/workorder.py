"""Signed work orders: what the coordinator asks an agent to do.

A work order is a JWT (RFC 7519) signed with the coordinator's Ed25519 work-order key
(JWS, RFC 7515; EdDSA, RFC 8037), header ``typ: certfleet-order+jwt``. Claims:

* ``iss`` ``certfleet``; ``aud`` the agent id; ``jti`` the order id;
* ``iat``/``nbf``/``exp``: when it may be executed;
* ``kind``: what to do (``issue``, ``check-target``, ``scan``, ``probe``); ``order``: the
  kind's parameters.

The agent pins the work-order public key(s) at enrollment and refuses anything it
cannot verify, anything addressed to another agent, anything expired, and anything it
has already executed, so a compromised database or proxy alone cannot make it act.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric import ed25519

from . import jws
from .wire import CheckTargetOrder, IssueOrder, ProbeOrder, ScanOrder

__all__ = [
    "ISSUER",
    "TOKEN_TYPE",
    "OrderKind",
    "VerifiedOrder",
    "WorkOrderRefused",
    "sign_work_order",
    "unverified_order_id",
    "verify_work_order",
]

ISSUER = "certfleet"
TOKEN_TYPE = "certfleet-order+jwt"


class OrderKind(enum.StrEnum):
    ISSUE = "issue"
    CHECK_TARGET = "check-target"
    SCAN = "scan"
    PROBE = "probe"


_PAYLOAD_TYPES: dict[OrderKind, type[msgspec.Struct]] = {
    OrderKind.ISSUE: IssueOrder,
    OrderKind.CHECK_TARGET: CheckTargetOrder,
    OrderKind.SCAN: ScanOrder,
    OrderKind.PROBE: ProbeOrder,
}


class WorkOrderRefused(Exception):
    """The order must not be executed. ``reason`` is one of the :mod:`jws` reason
    codes, or ``kind``/``payload`` for an order this agent does not understand, or
    ``replay`` (raised by the agent for an order it already executed)."""

    def __init__(self, reason: str, detail: str, order_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.order_id = order_id


@dataclass(frozen=True)
class VerifiedOrder:
    id: str
    agent_id: str
    kind: OrderKind
    issued_at: int
    expires_at: int
    payload: IssueOrder | CheckTargetOrder
    token: str


def sign_work_order(
    *,
    key: ed25519.Ed25519PrivateKey,
    order_id: str,
    agent_id: str,
    kind: OrderKind,
    payload: msgspec.Struct,
    now: int,
    ttl: int,
) -> str:
    claims = {
        "iss": ISSUER,
        "aud": agent_id,
        "jti": order_id,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "kind": str(kind),
        "order": msgspec.to_builtins(payload),
    }
    return jws.sign(claims, key, typ=TOKEN_TYPE, kid=jws.key_id(key.public_key()))


def unverified_order_id(token: str) -> str | None:
    """The ``jti`` an untrusted token claims, for reporting a refusal only."""
    try:
        import jwt

        claims = jwt.decode(token, options={"verify_signature": False})
    except Exception:
        return None
    jti = claims.get("jti")
    return jti[:128] if isinstance(jti, str) else None


def verify_work_order(
    token: str,
    *,
    keys: dict[str, ed25519.Ed25519PublicKey],
    agent_id: str,
    now: float,
) -> VerifiedOrder:
    """Verify signature (against the pinned ``keys`` by kid), audience, issuer and
    validity window, then decode the kind's payload. Raises :class:`WorkOrderRefused`.
    """
    try:
        claims: dict[str, Any] = jws.verify(
            token,
            typ=TOKEN_TYPE,
            key_for=keys.get,
            now=now,
            audience=agent_id,
            issuer=ISSUER,
            leeway=60,
        )
    except jws.TokenError as exc:
        raise WorkOrderRefused(exc.reason, exc.detail, unverified_order_id(token)) from exc
    order_id = claims["jti"]
    try:
        kind = OrderKind(claims.get("kind"))
    except ValueError as exc:
        raise WorkOrderRefused("kind", f"unknown order kind {claims.get('kind')!r}", order_id) from exc
    try:
        payload = msgspec.convert(claims.get("order"), _PAYLOAD_TYPES[kind])
        target = getattr(payload, "target", None)
        if target is not None:
            target.validate()
    except msgspec.ValidationError as exc:
        raise WorkOrderRefused("payload", f"order payload is invalid: {exc}", order_id) from exc
    return VerifiedOrder(
        id=order_id,
        agent_id=agent_id,
        kind=kind,
        issued_at=int(claims["iat"]),
        expires_at=int(claims["exp"]),
        payload=payload,
        token=token,
    )
