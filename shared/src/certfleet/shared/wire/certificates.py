"""Managed certificates and what shapes them: deployment targets, profiles, renewal
policies, jobs, approvals and revocation."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ..pki import KeyType, NameError_, normalize_names
from ..targets import Target
from .types import INT64_MAX, Identifier, Message, Name, Note, Reference, Tag, TargetName

# --- targets --------------------------------------------------------------------------


class TargetCreate(Message):
    """A named deployment target on one agent; certificates refer to it by name or id."""

    name: TargetName
    agent_id: Reference
    settings: Target

    def validate(self) -> None:
        self.settings.validate()


class TargetCounters(Message):
    """Deployment attempts at a target, as its agent reported them."""

    attempts: int = 0
    skipped: int = 0
    """Identical content already in place: nothing written, no reload."""
    config_test_failures: int = 0
    reload_failures: int = 0
    verification_failures: int = 0
    rollbacks: int = 0


class TargetInfo(Message):
    id: str
    name: str
    agent_id: str
    kind: str
    settings: Target
    created_at: int
    updated_at: int
    counters: TargetCounters
    certificates: list[str] = []
    last_outcome: str | None = None
    last_detail: str | None = None
    last_served_fingerprint: str | None = None
    last_deployed_at: int | None = None
    last_check_status: str | None = None
    """``queued``, ``passed`` or ``failed``: the latest ``targets test``."""
    last_check_detail: str | None = None
    last_check_at: int | None = None


# --- certificates ---------------------------------------------------------------------


MIN_LIFETIME_SECONDS = 300
MAX_LIFETIME_SECONDS = 398 * 86400
"""The CA/Browser Forum's ceiling for a TLS server certificate (Baseline Requirements §6.3.2)."""


def check_lifetime(seconds: int) -> None:
    """Raise ``msgspec.ValidationError`` naming the bound a certificate lifetime breaks,
    in days rather than as a raw integer constraint."""
    if seconds < MIN_LIFETIME_SECONDS:
        raise msgspec.ValidationError(f"lifetime_seconds must be at least 5 minutes ({MIN_LIFETIME_SECONDS} s),"
                                      f" not {seconds} s")
    if seconds > MAX_LIFETIME_SECONDS:
        raise msgspec.ValidationError(f"lifetime_seconds must be at most 398 days ({MAX_LIFETIME_SECONDS} s),"
                                      f" not {seconds} s ({seconds / 86400:g} days)")


class CertificateCreate(Message):
    """A managed certificate. Deploy it to a named target (``target_id``, a target's
    id or name) or describe the target inline (``target``), which creates a target
    named after the certificate."""

    common_name: Name
    agent_id: Reference
    target: Target | None = None
    target_id: Reference | None = None
    profile: Reference = "default"
    renewal_policy: Reference | None = None
    """Default: renew at two thirds of the lifetime, with a new key."""
    tags: Annotated[list[Tag], msgspec.Meta(max_length=32)] = []
    sans: Annotated[list[Name], msgspec.Meta(max_length=99)] = []
    key_type: KeyType = KeyType.EC_P256
    lifetime_seconds: int | None = None
    """The whole validity period (RFC 5280 §4.1.2.5), from 5 minutes to 398 days.
    Default: the profile's ``default_lifetime_seconds``."""

    def validate(self) -> None:
        try:
            normalize_names([self.common_name, *self.sans])
        except NameError_ as exc:
            raise msgspec.ValidationError(str(exc)) from exc
        if self.lifetime_seconds is not None:
            check_lifetime(self.lifetime_seconds)
        if (self.target is None) == (self.target_id is None):
            raise msgspec.ValidationError("give either target (inline settings) or target_id (a named target)")
        if self.target is not None:
            self.target.validate()

    def names(self) -> tuple[str, ...]:
        return normalize_names([self.common_name, *self.sans])


BULK_CREATE_LIMIT = 500


class CertificateCreateBulk(Message):
    """Several managed certificates created together (importing an inventory): all of
    them, or none if any one is refused; the problem names the refused item's index."""

    certificates: Annotated[list[CertificateCreate], msgspec.Meta(min_length=1, max_length=BULK_CREATE_LIMIT)]

    def validate(self) -> None:
        for index, certificate in enumerate(self.certificates):
            try:
                certificate.validate()
            except msgspec.ValidationError as exc:
                raise msgspec.ValidationError(f"certificates[{index}]: {exc}") from exc


class CertificateInfo(Message):
    id: str
    names: list[str]
    key_type: KeyType
    lifetime_seconds: int
    agent_id: str
    profile_id: str
    target: Target
    status: str
    created_at: int
    target_id: str = ""
    serial: str | None = None
    not_before: int | None = None
    not_after: int | None = None
    fingerprint_sha256: str | None = None
    last_error: str | None = None
    tags: list[str] = []
    revoked_at: int | None = None
    renew_at: int | None = None
    renewal_policy_id: str | None = None


# --- profiles -------------------------------------------------------------------------


EKU = Literal["server-auth", "client-auth", "code-signing", "email-protection"]


class ProfilePolicy(Message):
    """What a profile allows. ``name_patterns`` ``None`` allows any name; otherwise
    each name must match one: a DNS glob (``*.example.com``: ``*`` is one label,
    ``**`` any number), ``ip:CIDR``, or a SPIFFE glob (``spiffe://example.org/ns/*``)."""

    key_types: Annotated[list[KeyType], msgspec.Meta(min_length=1, max_length=16)] = msgspec.field(
        default_factory=lambda: list(KeyType))
    max_lifetime_seconds: Annotated[int, msgspec.Meta(ge=300, le=398 * 86400)] = 398 * 86400
    ekus: Annotated[list[EKU], msgspec.Meta(min_length=1, max_length=16)] = msgspec.field(
        default_factory=lambda: ["server-auth", "client-auth"])
    name_patterns: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=512)]],
                             msgspec.Meta(max_length=256)] | None = None
    must_staple: bool = False
    short_lived: bool = False
    """At most seven days, and no CRL or OCSP pointers in the certificate."""
    default_lifetime_seconds: Annotated[int, msgspec.Meta(ge=300, le=398 * 86400)] | None = None
    """For a certificate created without a lifetime. Default: 90 days, or the
    profile's maximum (seven days at most when short-lived) if that is shorter."""
    requires_approval: bool = False
    approval_ttl_seconds: Annotated[int, msgspec.Meta(ge=60, le=30 * 86400)] = 3 * 86400


class ProfileCreate(Message):
    name: Identifier
    issuer: Identifier = "issuing"
    policy: ProfilePolicy = msgspec.field(default_factory=lambda: ProfilePolicy())


class ProfileUpdate(Message):
    policy: ProfilePolicy
    expected_version: Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)] | None = None


class ProfileInfo(Message):
    id: str
    name: str
    issuer_id: str
    created_at: int
    policy: ProfilePolicy
    version: int
    pending_approval: str | None = None
    """Set when the answer is an edit waiting for a second person's approval."""


# --- renewal and jobs -----------------------------------------------------------------


class RenewalPolicyCreate(Message):
    """Renew at ``fraction`` of the lifetime, or ``lead_seconds`` before expiry."""

    name: Identifier
    fraction: Annotated[float, msgspec.Meta(ge=1 / 3, le=0.9)] | None = 2 / 3
    lead_seconds: Annotated[int, msgspec.Meta(gt=0, le=398 * 86400)] | None = None
    """At most the longest lifetime a certificate may have."""
    jitter: Annotated[float, msgspec.Meta(ge=0, le=0.1)] = 0.05
    reuse_key: bool = False

    def validate(self) -> None:
        if (self.fraction is None) == (self.lead_seconds is None):
            raise msgspec.ValidationError("set either fraction or lead_seconds (fraction to null)")


class RenewalPolicyInfo(Message):
    id: str
    name: str
    jitter: float
    reuse_key: bool
    created_at: int
    fraction: float | None = None
    lead_seconds: int | None = None


class JobInfo(Message):
    id: str
    certificate_id: str
    kind: str
    state: str
    attempts: int
    max_attempts: int
    created_at: int
    updated_at: int
    order_id: str | None = None
    next_attempt_at: int | None = None
    last_error: str | None = None


# --- approvals ------------------------------------------------------------------------


class ApprovalInfo(Message):
    id: str
    kind: str
    subject_id: str
    profile_id: str
    status: str
    requested_by: str
    created_at: int
    expires_at: int
    decided_by: str | None = None
    decision_note: str | None = None


class ApprovalDecision(Message):
    note: Note = ""


# --- revocation -----------------------------------------------------------------------


Reason = Literal["unspecified", "key-compromise", "ca-compromise", "affiliation-changed", "superseded",
                 "cessation-of-operation", "certificate-hold", "privilege-withdrawn", "aa-compromise",
                 "remove-from-crl"]


class RevokeRequest(Message):
    """RFC 5280 §5.3.1 reason codes. ``certificate-hold`` suspends a certificate;
    a later revocation with a final reason makes it permanent, and
    ``remove-from-crl`` releases the hold (the entry leaves the CRL and OCSP
    answers ``good`` again)."""

    reason: Reason = "unspecified"


class BulkRevokeRequest(Message):
    reason: Reason = "unspecified"
    issuer: Identifier | None = None
    profile: Identifier | None = None
    agent: Identifier | None = None
    tag: Tag | None = None

    def validate(self) -> None:
        if not (self.issuer or self.profile or self.agent or self.tag):
            raise msgspec.ValidationError("name at least one filter: issuer, profile, agent or tag")


class RevokeResult(Message):
    certificate_id: str
    status: Literal["revoked", "already-revoked", "nothing-to-revoke", "refused", "released", "not-on-hold"]
    serials: list[str] = []
    detail: str = ""


class BulkRevokeResult(Message):
    results: list[RevokeResult]
