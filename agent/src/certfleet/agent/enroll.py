"""Enrollment: pin the coordinator's CA by fingerprint, make an identity, register.

Like kubeadm's discovery hash, the operator passes the SHA-256 fingerprint of the
coordinator's root CA out of band. The agent fetches the CA over an unverified TLS
connection, accepts it only if its fingerprint matches (constant-time), and from then
on trusts that CA alone. Nothing is written unless registration succeeds.
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
from certfleet.shared.pki import certificate_fingerprint

from .client import CoordinatorClient
from .config import AgentConfig, AgentPaths, save_identity
from .files import write_atomic

__all__ = ["EnrollmentError", "enroll", "normalize_fingerprint"]


class EnrollmentError(Exception):
    pass


def normalize_fingerprint(text: str) -> str:
    value = text.strip().lower().removeprefix("sha256:").replace(":", "")
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise EnrollmentError("the CA fingerprint must be a SHA-256 in hex (64 digits, colons allowed)")
    return value


async def _fetch_pinned_ca(coordinator: str, fingerprint: str) -> bytes:
    # This one request is unverified on purpose: its answer is checked against the
    # fingerprint, which is the trust anchor the operator handed over.
    unverified = httpx.AsyncClient(verify=False, timeout=30)  # noqa: S501
    try:
        response = await unverified.get(coordinator.rstrip("/") + operation("pki.ca-bundle").path)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise EnrollmentError(f"cannot fetch the coordinator CA from {coordinator}: {exc}") from exc
    finally:
        await unverified.aclose()
    try:
        certificates = x509.load_pem_x509_certificates(response.content)
    except ValueError as exc:
        raise EnrollmentError("the coordinator did not send a PEM CA certificate") from exc
    for certificate in certificates:
        if hmac.compare_digest(certificate_fingerprint(certificate), fingerprint):
            return certificate.public_bytes(serialization.Encoding.PEM)
    raise EnrollmentError("the coordinator's CA does not match the pinned fingerprint; refusing to enroll")


@dataclass(frozen=True)
class Enrolled:
    agent_id: str
    coordinator: str


async def enroll(paths: AgentPaths, *, coordinator: str, token: str, ca_fingerprint: str,
                 name: str | None = None, force: bool = False, labels: dict[str, str] | None = None) -> Enrolled:
    if paths.config.exists() and not force:
        raise EnrollmentError(f"already enrolled ({paths.config}); pass --force to enroll again")
    ca_pem = await _fetch_pinned_ca(coordinator, normalize_fingerprint(ca_fingerprint))
    identity = ed25519.Ed25519PrivateKey.generate()
    client = CoordinatorClient(coordinator, ca_pem=ca_pem)
    try:
        response: wire.EnrollResponse = await client.call("agent.enroll", wire.EnrollRequest(
            token=token, name=name or socket.gethostname(),
            public_key=jws.public_key_raw(identity.public_key()), labels=labels or {}))
    finally:
        await client.aclose()
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(paths.ca_bundle, ca_pem, mode=0o644)
    save_identity(paths, identity)
    AgentConfig(coordinator.rstrip("/"), response.agent_id,
                {k.kid: k.public_key for k in response.work_order_keys}).save(paths)
    return Enrolled(response.agent_id, coordinator)
