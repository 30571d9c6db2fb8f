"""The CA hierarchy: roots, intermediates, external subordinates and their
revocation."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .types import CommonName, Identifier, Message, Name


class NameConstraints(Message):
    """RFC 5280 §4.2.1.10 subtrees; IP ranges in CIDR form."""

    permitted_dns: Annotated[list[Name], msgspec.Meta(max_length=256)] = []
    excluded_dns: Annotated[list[Name], msgspec.Meta(max_length=256)] = []
    permitted_ip: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=256)] = []
    excluded_ip: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=256)] = []
    permitted_email: Annotated[list[Name], msgspec.Meta(max_length=256)] = []
    excluded_email: Annotated[list[Name], msgspec.Meta(max_length=256)] = []


class RootCreate(Message):
    name: Identifier
    common_name: CommonName | None = None
    lifetime_days: Annotated[int, msgspec.Meta(ge=1, le=30 * 365)] = 10 * 365
    path_length: Annotated[int, msgspec.Meta(ge=0, le=8)] | None = None


class IntermediateCreate(Message):
    name: Identifier
    parent: Identifier
    common_name: CommonName | None = None
    lifetime_days: Annotated[int, msgspec.Meta(ge=1, le=20 * 365)] = 5 * 365
    path_length: Annotated[int, msgspec.Meta(ge=0, le=8)] | None = 0
    name_constraints: NameConstraints | None = None


class ExternalSubordinateCreate(Message):
    """Sub-CA mode: certfleet makes the key and a CSR for an external root to sign."""

    name: Identifier
    common_name: CommonName | None = None


class IssuerCertificateImport(Message):
    certificate: Annotated[str, msgspec.Meta(min_length=1, max_length=65536)]
    chain: Annotated[str, msgspec.Meta(min_length=1, max_length=262144)]
    """The external hierarchy above the certificate: intermediates and the root, PEM."""


class IssuerInfo(Message):
    id: str
    name: str
    kind: str
    status: str
    created_at: int
    parent_id: str | None = None
    subject: str | None = None
    not_after: int | None = None
    certificate_pem: str | None = None
    csr_pem: str | None = None
    revoked_at: int | None = None
    revocation_reason: str | None = None


IssuerRevocationReason = Literal["unspecified", "key-compromise", "ca-compromise", "affiliation-changed",
                                 "superseded", "cessation-of-operation", "privilege-withdrawn"]


class IssuerRevokeRequest(Message):
    """Revoking an intermediate CA: final, so no hold (RFC 5280 §5.3.1 reason codes)."""

    reason: IssuerRevocationReason
