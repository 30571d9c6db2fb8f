"""Messages exchanged between agents, operators and the coordinator.

Every message is a msgspec Struct: decoding validates types and, with
``forbid_unknown_fields``, refuses fields it does not know, so a typo in a request is
an error instead of a silently ignored setting. The same classes produce the JSON
Schema published in the OpenAPI document.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from .pki import KeyType, NameError_, normalize_names
from .targets import (
    ApacheTarget,
    CaddyTarget,
    DovecotTarget,
    EnvoyTarget,
    FileTarget,
    HaproxyTarget,
    KeystoreTarget,
    KubernetesSecretTarget,
    NginxTarget,
    PostfixTarget,
    Target,
    TlsCheck,
    TraefikTarget,
)

__all__ = [
    "ChannelCreate",
    "ChannelInfo",
    "NotificationInfo",
    "JobInfo",
    "StatusSummary",
    "RenewalPolicyInfo",
    "RenewalPolicyCreate",
    "RootCreate",
    "RevokeResult",
    "RevokeRequest",
    "ProfileUpdate",
    "ProfilePolicy",
    "NameConstraints",
    "IssuerInfo",
    "IssuerCertificateImport",
    "IntermediateCreate",
    "ExternalSubordinateCreate",
    "BulkRevokeResult",
    "BulkRevokeRequest",
    "ApprovalInfo",
    "ApprovalDecision",
    "RoleInfo",
    "RoleCreate",
    "ProfileInfo",
    "ProfileCreate",
    "PermissionInfo",
    "Me",
    "GrantInfo",
    "GrantCreate",
    "AuditPage",
    "AuditEvent",
    "ApiKeyInfo",
    "ApiKeyCreate",
    "AgentInfo",
    "AgentReport",
    "BootstrapRequest",
    "BootstrapResponse",
    "CertificateBundle",
    "CertificateCreate",
    "CertificateInfo",
    "CheckTargetOrder",
    "TargetCounters",
    "TargetCreate",
    "TargetInfo",
    "CsrSubmission",
    "Delivery",
    "DiscoveredCertificate",
    "DiscoveredCertificateInfo",
    "DiscoveryClaim",
    "DiscoveryDismiss",
    "DiscoveryPage",
    "DiscoveryReceipt",
    "DiscoveryRemoval",
    "DiscoveryReport",
    "MAX_DISCOVERY_RECORDS",
    "DeploymentFacts",
    "EnrollmentTokenCreate",
    "EnrollmentTokenInfo",
    "EnrollRequest",
    "EnrollResponse",
    "ApacheTarget",
    "CaddyTarget",
    "DovecotTarget",
    "EnvoyTarget",
    "FileTarget",
    "HaproxyTarget",
    "KeystoreTarget",
    "KubernetesSecretTarget",
    "NginxTarget",
    "PostfixTarget",
    "Target",
    "TlsCheck",
    "TraefikTarget",
    "Health",
    "IssueOrder",
    "OrderResult",
    "ResultAck",
    "WorkBatch",
    "WorkOrderKey",
    "decode",
    "encode",
    "CommonName",
    "Description",
    "INT64_MAX",
    "KeyName",
    "MAX_TIMESTAMP",
    "Name",
    "Note",
    "Reference",
    "Tag",
    "Timestamp",
]


class Message(msgspec.Struct, forbid_unknown_fields=True):
    pass


T = TypeVar("T")


def decode(data: bytes, type: type[T]) -> T:
    """Decode JSON into ``type``; raises ``msgspec.ValidationError``/``DecodeError``."""
    value = msgspec.json.decode(data, type=type)
    validate = getattr(value, "validate", None)
    if validate is not None:
        validate()
    return value


def encode(value: object) -> bytes:
    return msgspec.json.encode(value)


INT64_MAX = 2**63 - 1
"""Both databases store integers in 64 bits: every integer a caller sends is bounded
well inside them (a test walks the catalogue's input types to keep it so)."""
MAX_TIMESTAMP = 253402300799
"""9999-12-31T23:59:59Z, the last second RFC 5280 §4.1.2.5.2 can write."""

_PLAIN = r"^[^\x00-\x1f\x7f-\x9f]*\Z"
# No control characters (C0, DEL, C1): names and operators' text reach terminals, where
# an escape sequence rewrites the screen, and PostgreSQL cannot store NUL at all.
# (`\Z`, not `$`, which also matches before a final newline.)

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=_PLAIN)]
KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_PLAIN)]
"""What an operator calls an API key."""
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_PLAIN)]
Reference = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_PLAIN)]
"""The id (or name) of another resource."""
CommonName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_PLAIN)]
"""A CA's subject common name (RFC 5280 Appendix A ``ub-common-name``: 64)."""
Description = Annotated[str, msgspec.Meta(max_length=512, pattern=_PLAIN)]
Note = Annotated[str, msgspec.Meta(max_length=1024, pattern=_PLAIN)]
Timestamp = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIMESTAMP)]
"""Unix seconds."""




class IssueOrder(Message):
    """What an ``issue`` work order asks: a new key, a CSR for these names, a deploy."""

    certificate_id: str
    names: list[str]
    key_type: KeyType
    target: Target
    reuse_key_of: str | None = None
    """Renew with the key of this earlier order instead of a new one (opt-in)."""
    target_id: str | None = None
    """The coordinator's id of ``target``, so the host can name it (``rollback``)."""


class CheckTargetOrder(Message):
    """What a ``check-target`` work order asks: run the target's config test and, if it
    has a listening address, read the certificate served there. Nothing is written."""

    target_id: str
    target: Target
    server_name: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    expected_fingerprint: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    """The leaf certfleet last deployed there, if any: a different served leaf is reported."""


class ScanOrder(Message):
    """What a ``scan`` work order asks: look for certificates in files. ``roots``
    narrows the scan to these directories, each inside a root the agent's operator
    configured; empty, the agent scans its configured (or default) roots."""

    roots: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=r"^/")]],
                     msgspec.Meta(max_length=64)] = []


class ProbeOrder(Message):
    """What a ``probe`` work order asks: TLS handshakes with ``ranges`` × ``ports``, each
    without SNI and once per name in ``server_names``. The agent probes only inside the
    ranges its operator allowed it and refuses the whole order otherwise."""

    ranges: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]],
                      msgspec.Meta(min_length=1, max_length=64)]
    ports: Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=65535)]], msgspec.Meta(min_length=1, max_length=64)]
    server_names: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=253)]],
                            msgspec.Meta(max_length=32)] = []
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 3.0
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=512)] = 64

    def validate(self) -> None:
        for text in self.ranges:
            try:
                ipaddress.ip_network(text, strict=True)
            except ValueError as exc:
                raise msgspec.ValidationError(f"ranges: {exc}") from None


# --- enrollment and authentication -------------------------------------------------


class BootstrapRequest(Message):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class BootstrapResponse(Message):
    api_key: str
    key_id: str
    role: str


class EnrollmentTokenCreate(Message):
    uses: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1
    ttl_seconds: Annotated[int, msgspec.Meta(ge=60, le=30 * 86400)] = 3600
    labels: Annotated[dict[AgentLabelKey, AgentLabelValue], msgspec.Meta(max_length=32)] = {}
    """Given to every agent enrolled with the token: the same keys and values an agent
    may give itself (``EnrollRequest.labels``)."""


class EnrollmentTokenInfo(Message):
    id: str
    uses_left: int
    expires_at: int
    token: str | None = None
    labels: dict[str, str] = {}


AgentLabelKey = Annotated[str, msgspec.Meta(max_length=63, pattern=r"^[a-z0-9][a-z0-9._/-]{0,62}\Z")]
AgentLabelValue = Annotated[str, msgspec.Meta(max_length=128, pattern=r"^[A-Za-z0-9._:/@-]*\Z")]


class EnrollRequest(Message):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    name: Name
    public_key: Annotated[str, msgspec.Meta(min_length=43, max_length=44)]
    labels: Annotated[dict[AgentLabelKey, AgentLabelValue], msgspec.Meta(max_length=32)] = {}
    """Labels the host gives itself (``--label`` at install); the enrollment token's
    labels, set by an operator, win where both name the same key."""


class WorkOrderKey(Message):
    kid: str
    public_key: str


class EnrollResponse(Message):
    agent_id: str
    work_order_keys: list[WorkOrderKey]


class AgentInfo(Message):
    id: str
    name: str
    created_at: int
    last_seen_at: int | None
    labels: dict[str, str] = {}
    liveness: Literal["online", "late", "offline", "never-seen", "retired"] = "never-seen"
    """From polls alone: online within a minute, late within five, offline after."""
    retired_at: int | None = None


# --- certificates and work ---------------------------------------------------------


TargetName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


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


class Delivery(Message):
    """One work order as delivered: the coordinator's delivery id (for bookkeeping,
    e.g. to report a refusal) and the signed token, the only part the agent trusts."""

    id: str
    token: str


class WorkBatch(Message):
    orders: list[Delivery]


class CsrSubmission(Message):
    csr: Annotated[str, msgspec.Meta(min_length=1, max_length=65536)]


class CertificateBundle(Message):
    certificate: str
    chain: str
    serial: str
    not_after: int


Fingerprint = Annotated[str, msgspec.Meta(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")]


class DeploymentFacts(Message):
    """How one deployment attempt went, for per-target metrics on the coordinator."""

    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$")]
    skipped: bool = False
    """Identical content was already in place: nothing written, no reload."""
    failed_step: Literal["prepare", "write", "config-test", "reload", "verify", "apply"] | None = None
    rolled_back: bool = False
    served_fingerprint: Fingerprint | None = None
    """The leaf the post-deploy check saw being served."""


class OrderResult(Message):
    status: Literal["succeeded", "failed"]
    detail: Annotated[str, msgspec.Meta(max_length=8192)] = ""
    fingerprint_sha256: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    retryable: bool = True
    """False when trying again cannot help (the coordinator refused the CSR)."""
    deployment: DeploymentFacts | None = None


class AgentReport(Message):
    """Something the agent noticed that is not the result of a valid order, such as a
    work order it refused."""

    event: Literal["work-order-refused", "certificate-drift"]
    """``certificate-drift``: a file certfleet deployed was changed by something else
    (``detail`` names the file, the expected and the seen SHA-256)."""
    reason: Annotated[str, msgspec.Meta(max_length=64)]
    order_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    detail: Annotated[str, msgspec.Meta(max_length=2048)] = ""


class ResultAck(Message):
    accepted: bool


class Health(Message):
    status: str


# --- discovery -----------------------------------------------------------------------

MAX_DISCOVERY_RECORDS = 1000
"""Records (added plus removed) one discovery report may carry. A scan that found more
sends several reports; each must also fit the coordinator's 1 MiB request body limit."""

DistinguishedName = Annotated[str, msgspec.Meta(max_length=4096)]
UtcTimestamp = Annotated[str, msgspec.Meta(
    min_length=20, max_length=32, pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|\+00:00)$")]
"""ISO 8601 in UTC: ``2026-01-31T12:00:00Z`` (or ``+00:00``)."""
Location = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Position = Annotated[int, msgspec.Meta(ge=0, le=100_000)]


def _check_printable(what: str, value: str) -> None:
    # Text an agent or operator writes itself must be plain: it ends up in terminals.
    # (A pattern cannot say this: its `$` also matches before a final newline.)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise msgspec.ValidationError(f"{what} contains control characters: {value[:80]!r}")


def _check_location(source: str, path: str) -> None:
    if source == "filesystem" and not path.startswith("/"):
        raise msgspec.ValidationError(f"a filesystem find's path must be absolute: {path[:80]!r}")


class DiscoveredCertificate(Message):
    """A certificate an agent found: in a file on its host, or served by a TLS endpoint
    it probed. Its identity is the fingerprint; its location is (path, position).

    The text fields come from whoever made the certificate or named the file, so they
    may hold anything, control characters included: the coordinator stores them with
    those escaped, rather than let one hostile certificate refuse a whole report."""

    fingerprint_sha256: Fingerprint
    """SHA-256 over the DER encoding, lower-case hex."""
    subject: DistinguishedName
    """RFC 4514 string, e.g. ``CN=www.example.com,O=Example``."""
    sans: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]],
                    msgspec.Meta(max_length=1000)]
    """Subject alternative names, typed: ``DNS:a.example``, ``IP:10.0.0.1``,
    ``URI:spiffe://example.org/web``, ``email:ops@example.com``."""
    issuer: DistinguishedName
    serial: Annotated[str, msgspec.Meta(min_length=1, max_length=130, pattern=r"^-?[0-9A-Fa-f]+$")]
    """Hexadecimal (RFC 5280 §4.1.2.2 allows 20 octets; some certificates have more, or
    a negative one)."""
    not_before: UtcTimestamp
    not_after: UtcTimestamp
    key_algorithm: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    """``rsa``, ``ec``, ``ed25519``… as the scanner names it."""
    key_size: Annotated[int, msgspec.Meta(ge=1, le=65536)] | None
    """Bits (RSA modulus, EC curve order); ``None`` where it does not apply."""
    is_ca: bool
    path: Location
    """For a filesystem find, the file's absolute path; for a network find, the
    ``host:port`` probed (with the SNI name sent, as the scanner writes it)."""
    position: Position
    """Where in the file (or the served chain) the certificate is: 0 is the first."""
    format: Literal["pem", "der", "pkcs12", "jks", "tls"]
    """How it was stored; ``tls`` for a network find."""
    has_private_key: bool
    """A private key for this certificate was found with it (in the same file or
    keystore, or in a key file beside it)."""

    def validate_for(self, source: str) -> None:
        _check_location(source, self.path)
        if (self.format == "tls") != (source == "network"):
            raise msgspec.ValidationError(
                f"format {self.format!r} does not fit a {source} find: network finds are 'tls', files are not")
        self.validity()

    def validity(self) -> tuple[int, int]:
        """(not_before, not_after) as Unix seconds."""
        try:
            return (int(datetime.datetime.fromisoformat(self.not_before).timestamp()),
                    int(datetime.datetime.fromisoformat(self.not_after).timestamp()))
        except ValueError as exc:
            raise msgspec.ValidationError(f"invalid timestamp: {exc}") from exc


class DiscoveryRemoval(Message):
    """A certificate no longer at a location an earlier report gave."""

    fingerprint_sha256: Fingerprint
    path: Location
    position: Position


class DiscoveryReport(Message):
    """What one scan (or one part of a big scan) found. Reports are idempotent: sending
    the same report again changes nothing but the time a find was last seen."""

    source: Literal["filesystem", "network"]
    scan_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
    added: Annotated[list[DiscoveredCertificate], msgspec.Meta(max_length=MAX_DISCOVERY_RECORDS)] = []
    """Found in this scan (new, or seen again)."""
    removed: Annotated[list[DiscoveryRemoval], msgspec.Meta(max_length=MAX_DISCOVERY_RECORDS)] = []
    """Reported before and gone now. Removal is always explicit: a record missing from
    ``added`` is not taken to be gone."""
    complete: bool = False
    """This is the last report of a full scan: every find of this agent and source that
    is not reported removed was seen, so all of them count as seen now. (An agent that
    reports only what changed sends unchanged finds in no report at all.)"""

    def validate(self) -> None:
        if len(self.added) + len(self.removed) > MAX_DISCOVERY_RECORDS:
            raise msgspec.ValidationError(
                f"a report carries at most {MAX_DISCOVERY_RECORDS} records (added plus removed); send several")
        _check_printable("scan_id", self.scan_id)
        for found in self.added:
            found.validate_for(self.source)
        for gone in self.removed:
            _check_location(self.source, gone.path)
        both = ({(f.fingerprint_sha256, f.path, f.position) for f in self.added}
                & {(g.fingerprint_sha256, g.path, g.position) for g in self.removed})
        if both:
            fingerprint, path, position = sorted(both)[0]
            raise msgspec.ValidationError(f"{fingerprint} at {path}#{position} is both added and removed")


class DiscoveryReceipt(Message):
    recorded: int
    """Finds stored, or refreshed when seen before."""
    removed: int
    """Present finds of the calling agent now marked removed."""


DiscoveryStatus = Literal["unmanaged", "managed", "dismissed"]


class DiscoveredCertificateInfo(Message):
    """One find in the inventory. ``managed``: certfleet issued it (its fingerprint is a
    version of ``managed_certificate_id``) or an operator claimed it
    (``claimed_certificate_id``); ``dismissed``: an operator said it needs nothing."""

    id: int
    agent_id: str
    source: str
    status: DiscoveryStatus
    fingerprint_sha256: str
    subject: str
    sans: list[str]
    issuer: str
    serial: str
    not_before: int
    not_after: int
    key_algorithm: str
    key_size: int | None
    is_ca: bool
    path: str
    position: int
    format: str
    has_private_key: bool
    scan_id: str
    first_seen: int
    last_seen: int
    present: bool
    """False once the agent reported it gone (``removed_at``); the record is kept."""
    removed_at: int | None = None
    managed_certificate_id: str | None = None
    claimed_certificate_id: str | None = None
    dismiss_reason: str | None = None
    triaged_by: str | None = None
    """Who dismissed or claimed it."""
    triaged_at: int | None = None


class DiscoveryPage(Message):
    certificates: list[DiscoveredCertificateInfo]
    next_after: int | None = None
    """Pass as ``after`` for the next page; absent on the last one."""


class DiscoveryDismiss(Message):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    """Why the find needs no management (kept with the record and in the audit trail)."""

    def validate(self) -> None:
        if not self.reason.strip():
            raise msgspec.ValidationError("a reason is required")
        _check_printable("reason", self.reason)


class DiscoveryScanRequest(ScanOrder, kw_only=True):
    """Ask an agent to scan its files now: a :class:`ScanOrder` for ``agent_id``."""

    agent_id: Reference


class DiscoveryProbeRequest(ProbeOrder, kw_only=True):
    """Ask an agent to probe its network zone: a :class:`ProbeOrder` for ``agent_id``."""

    agent_id: Reference


class DiscoveryScanInfo(Message):
    """A scan or probe order and how it went (``detail``: the agent's summary)."""

    order_id: str
    agent_id: str
    kind: str
    status: str
    created_at: int
    completed_at: int | None = None
    detail: str | None = None


class DiscoveryClaim(Message):
    """Bring a discovered certificate under management, as a managed certificate bound
    to the agent that found it, with its names. Nothing is issued now: the certificate
    and its key stay where they are until the first renewal, planned from the found
    certificate's validity, which deploys to the target.

    The target is ``target_id`` (an existing target of that agent), ``target`` (settings
    for a new one), or, for a PEM file, left out: a ``file`` target writing the
    certificate back to the path it was found at and the key to ``key_path``."""

    profile: Reference = "default"
    renewal_policy: Reference | None = None
    """Default: renew at two thirds of the lifetime, with a new key."""
    lifetime_seconds: Annotated[int, msgspec.Meta(ge=300, le=398 * 86400)] | None = None
    """Default: the found certificate's lifetime, capped at the profile's maximum."""
    key_type: KeyType | None = None
    """Default: the found key's algorithm and size where certfleet makes such keys,
    else EC P-256."""
    tags: Annotated[list[Tag], msgspec.Meta(max_length=32)] = []
    target_id: Reference | None = None
    target: Target | None = None
    target_name: TargetName | None = None
    """Name of the target the claim creates; default ``discovered-<id>``."""
    key_path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    """For the ``file`` target made from a found file: where the key goes. Default: the
    usual key file beside it (``privkey.pem`` beside ``cert.pem`` or ``fullchain.pem``,
    ``NAME.key`` beside ``NAME.crt`` or ``NAME.pem``)."""

    def validate(self) -> None:
        if self.target is not None and self.target_id is not None:
            raise msgspec.ValidationError("give target (settings for a new target) or target_id, not both")
        if self.target_id is not None and self.target_name is not None:
            raise msgspec.ValidationError("target_name names a target the claim creates; target_id uses one")
        if self.key_path is not None and (self.target is not None or self.target_id is not None):
            raise msgspec.ValidationError("key_path is for the file target made from the found file;"
                                          " a given target says where its key goes")
        if self.target is not None:
            self.target.validate()


# --- access control ----------------------------------------------------------------

Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")]
PrincipalType = Literal["api-key", "user", "agent"]
ScopeType = Literal["global", "profile", "issuer"]


class ApiKeyCreate(Message):
    """A new API key. ``roles`` are granted globally at creation; narrower grants
    are made with the grants API. Every role must be within the caller's own
    permissions."""

    name: KeyName
    roles: Annotated[list[Identifier], msgspec.Meta(max_length=16)] = []
    user: Identifier | None = None
    expires_at: Timestamp | None = None


class ApiKeyInfo(Message):
    id: str
    name: str
    user: str | None
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None
    last_used_at: int | None = None
    token: str | None = None
    """Present only in the answer to create and rotate: shown once."""


class RoleCreate(Message):
    name: Identifier
    permissions: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(min_length=1, max_length=256)]
    description: Description = ""


class RoleInfo(Message):
    name: str
    permissions: list[str]
    description: str = ""
    builtin: bool = False


class GrantCreate(Message):
    principal_type: PrincipalType
    principal_id: Identifier
    role: Identifier
    scope_type: ScopeType = "global"
    scope_id: Identifier | None = None
    expires_at: Timestamp | None = None

    def validate(self) -> None:
        if (self.scope_type == "global") != (self.scope_id is None):
            raise msgspec.ValidationError("scope_id is required for a profile or issuer scope, and only then")


class GrantInfo(Message):
    id: str
    principal_type: str
    principal_id: str
    role: str
    scope_type: str
    scope_id: str | None
    created_by: str
    created_at: int
    expires_at: int | None = None


class Me(Message):
    principal_type: str
    principal_id: str
    user: str | None
    grants: list[GrantInfo]
    permissions: dict[str, list[str]]
    """Each permission with the scopes it holds at: ``global`` or ``profile:ID`` /
    ``issuer:ID``."""


class PermissionInfo(Message):
    permission: str
    operations: list[str]
    roles: list[str]


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


# --- issuers -------------------------------------------------------------------------


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


# --- revocation and approvals --------------------------------------------------------

Reason = Literal["unspecified", "key-compromise", "ca-compromise", "affiliation-changed", "superseded",
                 "cessation-of-operation", "certificate-hold", "privilege-withdrawn", "aa-compromise",
                 "remove-from-crl"]


class RevokeRequest(Message):
    """RFC 5280 §5.3.1 reason codes. ``certificate-hold`` suspends a certificate;
    a later revocation with a final reason makes it permanent, and
    ``remove-from-crl`` releases the hold (the entry leaves the CRL and OCSP
    answers ``good`` again)."""

    reason: Reason = "unspecified"


IssuerRevocationReason = Literal["unspecified", "key-compromise", "ca-compromise", "affiliation-changed",
                                 "superseded", "cessation-of-operation", "privilege-withdrawn"]


class IssuerRevokeRequest(Message):
    """Revoking an intermediate CA: final, so no hold (RFC 5280 §5.3.1 reason codes)."""

    reason: IssuerRevocationReason


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


Severity = Literal["info", "warning", "critical"]
ChannelField = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*\Z")]
_ChannelText = Annotated[str, msgspec.Meta(max_length=2048, pattern=_PLAIN)]
ChannelSetting = (_ChannelText | Annotated[int, msgspec.Meta(ge=-INT64_MAX, le=INT64_MAX)] | bool
                  | Annotated[list[_ChannelText], msgspec.Meta(max_length=100)])
"""A URL, host, address, port, flag or list of addresses."""


class ChannelCreate(Message):
    """A notification channel. ``settings`` may be shown; ``secrets`` (HMAC secret,
    Slack/Teams webhook URL, PagerDuty routing key, OpsGenie key, SMTP password)
    are sealed at rest and never returned."""

    name: Identifier
    kind: Literal["webhook", "slack", "teams", "pagerduty", "opsgenie", "email"]
    settings: Annotated[dict[ChannelField, ChannelSetting], msgspec.Meta(max_length=16)] = {}
    """Only the fields the kind takes: an unknown one is refused, since a secret typed
    into the wrong field would be shown."""
    secrets: Annotated[dict[ChannelField, Annotated[str, msgspec.Meta(max_length=4096)]],
                       msgspec.Meta(max_length=16)] = {}
    min_severity: Severity = "warning"
    """Events at this severity or above are routed to the channel."""


class ChannelInfo(Message):
    id: str
    name: str
    kind: str
    settings: dict[str, Any]
    secret_names: list[str]
    min_severity: str
    created_at: int


class NotificationInfo(Message):
    id: str
    channel_id: str
    kind: str
    severity: str
    summary: str
    subject: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    created_at: int
    last_error: str | None = None
    delivered_at: int | None = None


class StatusSummary(Message):
    """What needs attention, for ``certfleet status``."""

    certificates: dict[str, int]
    expiring_soon: list[CertificateInfo]
    """Unrenewed certificates with less than a third of their lifetime left."""
    failing: list[CertificateInfo]
    agents: dict[str, int]
    offline_agents: list[AgentInfo]
    pending_approvals: int


class ApprovalDecision(Message):
    note: Note = ""


class AuditEvent(Message):
    id: int
    at_ms: int
    actor_type: str
    actor_id: str
    action: str
    resource_type: str
    resource_id: str
    outcome: str
    request_id: str
    source_address: str
    body_sha256: str
    latency_ms: int
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(Message):
    events: list[AuditEvent]
    next_after: int | None = None
