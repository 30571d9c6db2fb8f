"""Enrollment: pin the coordinator's CA by fingerprint, make an identity, register.

Like kubeadm's discovery hash, the operator passes the SHA-256 fingerprint of the
coordinator's root CA out of band. Enrollment runs over ``https://`` only (the token
is a secret), in three steps:

1. Fetch the CA the coordinator offers, over a connection not yet verified, and keep
   the certificate whose fingerprint is the pin (constant-time). The CA is public:
   anyone in the path can serve it, so having it proves nothing yet.
2. Send the token on a connection whose TLS context trusts that CA alone: the
   handshake completes only if the coordinator's chain ends at the pinned
   certificate. A machine in the path that serves the real CA file but terminates TLS
   with its own certificate fails the handshake, before a byte of the request goes.

Nothing is written unless registration succeeds.
"""

from __future__ import annotations

import hmac
import re
import socket
from dataclasses import dataclass

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from certfleet.shared import jws, wire
from certfleet.shared.api import operation
from certfleet.shared.connection import InsecureUrl, describe_failure, display_url, require_https
from certfleet.shared.pki import certificate_fingerprint

from .client import CoordinatorClient, CoordinatorError
from .config import AgentConfig, AgentPaths, save_identity
from .files import write_atomic

__all__ = ["EnrollmentError", "enroll", "normalize_fingerprint"]

PIN_HINT = ("the coordinator's TLS certificate does not chain to the CA with the pinned fingerprint:"
            " check --ca-fingerprint (certfleet prints it at start-up), or something in the path is"
            " intercepting the connection")


class EnrollmentError(Exception):
    pass


def normalize_fingerprint(text: str) -> str:
    value = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise EnrollmentError("the CA fingerprint must be a SHA-256 in hex (64 digits, colons allowed)")
    return value


async def _fetch_offered_ca(coordinator: str, fingerprint: str) -> bytes:
    """The certificate among those the coordinator offers whose fingerprint is the pin."""
    # Unverified on purpose: nothing secret is sent, and the answer is only a
    # candidate until a verified handshake chains to it.
    unverified = httpx.AsyncClient(verify=False, timeout=30)  # noqa: S501
    url = coordinator.rstrip("/") + operation("pki.ca-bundle").path
    try:
        response = await unverified.get(url)
    except httpx.TimeoutException:
        raise EnrollmentError(f"no answer from {display_url(url)} within 30 s: check the address") from None
    except httpx.TransportError as exc:
        raise EnrollmentError(describe_failure(coordinator, exc, trust_hint=PIN_HINT)) from None
    finally:
        await unverified.aclose()
    if response.status_code != 200:
        raise EnrollmentError(f"cannot fetch the coordinator's CA: {display_url(url)} answered HTTP"
                              f" {response.status_code}: is the URL the coordinator's?")
    try:
        certificates = x509.load_pem_x509_certificates(response.content)
    except ValueError:
        raise EnrollmentError(f"{display_url(url)} did not answer with a PEM CA certificate:"
                              " is the URL the coordinator's?") from None
    for certificate in certificates:
        if hmac.compare_digest(certificate_fingerprint(certificate), fingerprint):
            return certificate.public_bytes(serialization.Encoding.PEM)
    raise EnrollmentError("the coordinator's CA does not match the pinned fingerprint; refusing to enroll"
                          " (check --ca-fingerprint)")


def _refusal(coordinator: str, exc: CoordinatorError) -> EnrollmentError:
    if exc.status >= 500:
        return EnrollmentError(f"the coordinator at {display_url(coordinator)} failed to enroll this agent"
                               f" (HTTP {exc}); retry once it is fixed")
    advice = {"invalid-enrollment-token": "mint a new token with `certfleet agents enroll-token`"}.get(
        exc.slug, "fix the request and enroll again")
    return EnrollmentError(f"the coordinator refused the enrollment ({exc}): {advice}")


@dataclass(frozen=True)
class Enrolled:
    agent_id: str
    coordinator: str


async def enroll(paths: AgentPaths, *, coordinator: str, token: str, ca_fingerprint: str,
                 name: str | None = None, force: bool = False, labels: dict[str, str] | None = None) -> Enrolled:
    """Register with ``coordinator``; raises :class:`EnrollmentError` (one line) for
    a URL that is not ``https://`` (before connecting), a CA that does not match the
    pin, a handshake that does not chain to it (before the token is sent), an
    unreachable coordinator, or a refusal."""
    if paths.config.exists() and not force:
        raise EnrollmentError(f"already enrolled ({paths.config}); pass --force to enroll again")
    try:
        coordinator = require_https(coordinator, setting="--coordinator")
    except InsecureUrl as exc:
        raise EnrollmentError(str(exc)) from None
    fingerprint = normalize_fingerprint(ca_fingerprint)
    ca_pem = await _fetch_offered_ca(coordinator, fingerprint)
    identity = ed25519.Ed25519PrivateKey.generate()
    client = CoordinatorClient(coordinator, ca_pem=ca_pem)
    # The client trusts the pinned CA alone: the token goes out only inside a handshake
    # that chained to it, so a failed handshake has sent nothing.
    try:
        response: wire.EnrollResponse = await client.call("agent.enroll", wire.EnrollRequest(
            token=token, name=name or socket.gethostname(),
            public_key=jws.public_key_raw(identity.public_key()), labels=labels or {}))
    except httpx.TimeoutException:
        raise EnrollmentError(f"no answer from {display_url(coordinator)}: check the address") from None
    except httpx.TransportError as exc:
        raise EnrollmentError("refusing to send the token: "
                              + describe_failure(coordinator, exc, trust_hint=PIN_HINT)) from None
    except CoordinatorError as exc:
        raise _refusal(coordinator, exc) from None
    finally:
        await client.aclose()
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(paths.ca_bundle, ca_pem, mode=0o644)
    save_identity(paths, identity)
    AgentConfig(coordinator.rstrip("/"), response.agent_id,
                {k.kid: k.public_key for k in response.work_order_keys}).save(paths)
    return Enrolled(response.agent_id, coordinator)
