"""Discovery: what agents report finding in files and on the network, the inventory
operators triage, and the scan and probe requests that start a search."""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

import msgspec

from ..pki import KeyType
from ..targets import Target
from .agent import ProbeOrder, ScanOrder
from .types import Fingerprint, Message, Reference, Tag, TargetName, _check_printable

MAX_DISCOVERY_RECORDS = 1000
"""Records (added plus removed) one discovery report may carry. A scan that found more
sends several reports; each must also fit the coordinator's 1 MiB request body limit."""

DistinguishedName = Annotated[str, msgspec.Meta(max_length=4096)]
UtcTimestamp = Annotated[str, msgspec.Meta(
    min_length=20, max_length=32, pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|\+00:00)$")]
"""ISO 8601 in UTC: ``2026-01-31T12:00:00Z`` (or ``+00:00``)."""
Location = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Position = Annotated[int, msgspec.Meta(ge=0, le=100_000)]


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
