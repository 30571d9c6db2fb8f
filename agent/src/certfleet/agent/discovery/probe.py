"""Network discovery: which TLS endpoints answer in the ranges an agent was given, and
which certificate chains they serve.

For every address of a plan's ranges and every port, the agent opens a TCP connection
and runs a TLS handshake (RFC 8446 §4; TLS 1.2 servers too, RFC 5246 §7.3) once
without the server_name extension and once per configured name (RFC 6066 §3), then
closes. No application data is ever sent. Trust is not the question here — discovery
reports what is served, including expired, self-signed or mis-issued chains — so the
peer is not validated, exactly as in :mod:`certfleet.agent.verify`.

Two limits protect the networks around the agent: a plan may only name ranges the
operator configured on the agent (:class:`AllowedRanges`), and a plan may span only so
many addresses. Both are checked before the first connection, and a refused plan
contacts nothing.

Reading the whole served chain: Python's ``ssl`` module exposes only the leaf
(``getpeercert``) before 3.13. OpenSSL keeps the full chain the server sent
(``SSL_get_peer_cert_chain``), and CPython's C object has returned it since 3.10 as the
private ``_sslobj.get_unverified_chain()``; 3.13 made it public as
``SSLObject.get_unverified_chain()``. The agent runs on 3.11+, so it uses the public
method when present and the private one before, rather than adding pyOpenSSL to a
dependency set that every host of a fleet installs.
"""

from __future__ import annotations

import datetime
import enum
import errno
import hashlib
import ipaddress
import math
import os
import ssl
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import trio
from cryptography import x509

from certfleet.shared.pki import NameError_, normalize_name

from .describe import certificate_facts
from .records import CertificateFacts

__all__ = [
    "AllowedRanges",
    "Endpoint",
    "Outcome",
    "PlanTooLarge",
    "ProbePlan",
    "ProbePlanError",
    "ProbeResult",
    "ProbeTotals",
    "RangeNotAllowed",
    "ServedCertificate",
    "describe_certificate",
    "probe",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_TIMEOUT = 3.0
MAX_TIMEOUT = 60.0
DEFAULT_CONCURRENCY = 64
MAX_CONCURRENCY = 512
DEFAULT_MAX_ADDRESSES = 4096
# A plan may raise its own address limit, but not past a /16: beyond that a single work
# order would sweep a whole site, which is a change for the operator's allowed ranges
# and a scanner, not for the agent.
MAX_ADDRESSES_LIMIT = 65536
DEFAULT_LISTED_UNANSWERED = 256
MAX_SERVER_NAMES = 100
RECEIVE_SIZE = 16384


class ProbePlanError(ValueError):
    """A probe plan that cannot run as given. Raised before any connection."""


class RangeNotAllowed(ProbePlanError):
    """A plan range reaches outside the ranges the operator allowed this agent."""

    def __init__(self, network: IPNetwork, allowed: AllowedRanges) -> None:
        self.network = network
        configured = ", ".join(str(n) for n in allowed.networks) or "none configured"
        super().__init__(f"the range {network} is not inside the ranges this agent may probe ({configured});"
                         f" nothing was probed")


class PlanTooLarge(ProbePlanError):
    """A plan spans more addresses than its limit."""


class Outcome(enum.StrEnum):
    """How one connection attempt ended; also the names of :class:`ProbeTotals` fields."""

    TLS = "tls"
    NOT_TLS = "not_tls"
    """The port accepted TCP but what came back was not TLS (or nothing at all)."""
    HANDSHAKE_FAILED = "handshake_failed"
    """The port answered in TLS records but the handshake did not complete: an alert
    (a server that insists on a name, say) or a version older than TLS 1.2."""
    REFUSED = "refused"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    """The connection failed for another reason: no route, network unreachable."""


def _parse_networks(values: Iterable[IPNetwork | str], *, what: str) -> tuple[IPNetwork, ...]:
    if isinstance(values, str | bytes):
        raise ProbePlanError(f"{what}s must be a list of CIDR ranges, not the single string {values!r}")
    networks: list[IPNetwork] = []
    for value in values:
        if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
            network = value
        elif isinstance(value, str):
            try:
                # strict: "10.0.0.7/24" is more likely a typo than a request for 10.0.0.0/24.
                network = ipaddress.ip_network(value, strict=True)
            except ValueError as exc:
                raise ProbePlanError(f"{what} {value!r} is not a CIDR range: {exc}") from exc
        else:
            raise ProbePlanError(f"{what} {value!r} is not a CIDR range")
        if network not in networks:
            networks.append(network)
    return tuple(networks)


@dataclass(frozen=True)
class AllowedRanges:
    """The ranges the operator configured on this agent. Every address a plan would
    contact must lie inside their union; an empty set allows nothing."""

    networks: tuple[IPNetwork, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "networks", _parse_networks(self.networks, what="allowed range"))

    def covers(self, network: IPNetwork) -> bool:
        """True when every address of ``network`` is inside an allowed range.

        Collapsing first lets adjacent allowed ranges (two /25s) cover the /24 they
        make up together.
        """
        same_family = [n for n in self.networks if n.version == network.version]
        return any(network.subnet_of(merged) for merged in ipaddress.collapse_addresses(same_family))


def _server_name(name: object) -> str:
    """A name for the server_name extension: RFC 6066 §3 carries a DNS host name only,
    never an IP literal, and a wildcard names no host."""
    if not isinstance(name, str):
        raise ProbePlanError(f"SNI name {name!r} is not a string")
    try:
        canonical = normalize_name(name)
    except NameError_ as exc:
        raise ProbePlanError(f"SNI name {name!r} is not a DNS name") from exc
    try:
        ipaddress.ip_address(canonical)
    except ValueError:
        pass
    else:
        raise ProbePlanError(f"SNI name {name!r} is an IP address; RFC 6066 §3 does not allow literal addresses")
    if canonical.startswith(("*.", "spiffe://")):
        raise ProbePlanError(f"SNI name {name!r} is not a host name")
    return canonical


def _probed_addresses(network: IPNetwork) -> Iterator[IPAddress]:
    """Every address of the range, minus the network and broadcast addresses of IPv4
    ranges larger than /31 (RFC 3021 gives /31 links no such addresses)."""
    if network.version == 4 and network.prefixlen < 31:
        return network.hosts()
    return iter(network)


@dataclass(frozen=True)
class ProbePlan:
    """What to probe: ``ranges`` × ``ports``, each endpoint without SNI and once per
    name in ``server_names``.

    ``timeout`` bounds one connection attempt (TCP connect and TLS handshake together);
    ``concurrency`` bounds simultaneous connections; ``max_addresses`` bounds the
    addresses the ranges span (counted per range, network and broadcast included);
    ``listed_unanswered`` bounds how many refused, timed-out and unreachable attempts are
    listed individually (all are counted). Raises :class:`ProbePlanError` on bad input
    and :class:`PlanTooLarge` for a plan over its address limit.
    """

    ranges: tuple[IPNetwork, ...]
    ports: tuple[int, ...]
    server_names: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    concurrency: int = DEFAULT_CONCURRENCY
    max_addresses: int = DEFAULT_MAX_ADDRESSES
    listed_unanswered: int = DEFAULT_LISTED_UNANSWERED

    def __post_init__(self) -> None:
        ranges = _parse_networks(self.ranges, what="range")
        if not ranges:
            raise ProbePlanError("a probe plan needs at least one range")
        object.__setattr__(self, "ranges", ranges)

        if isinstance(self.ports, int | str):
            raise ProbePlanError("ports must be a list of port numbers")
        ports: list[int] = []
        for port in self.ports:
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ProbePlanError(f"port {port!r} is not a TCP port number (1-65535)")
            if port not in ports:
                ports.append(port)
        if not ports:
            raise ProbePlanError("a probe plan needs at least one port")
        object.__setattr__(self, "ports", tuple(ports))

        if isinstance(self.server_names, str):
            raise ProbePlanError("server_names must be a list of names, not a single string")
        names: list[str] = []
        for name in self.server_names:
            canonical = _server_name(name)
            if canonical not in names:
                names.append(canonical)
        if len(names) > MAX_SERVER_NAMES:
            raise ProbePlanError(f"a probe plan may name at most {MAX_SERVER_NAMES} SNI names")
        object.__setattr__(self, "server_names", tuple(names))

        if (isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float)
                or not math.isfinite(self.timeout) or not 0 < self.timeout <= MAX_TIMEOUT):
            raise ProbePlanError(f"timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
        for setting, value, highest in (("concurrency", self.concurrency, MAX_CONCURRENCY),
                                        ("max_addresses", self.max_addresses, MAX_ADDRESSES_LIMIT),
                                        ("listed_unanswered", self.listed_unanswered, MAX_ADDRESSES_LIMIT)):
            lowest = 0 if setting == "listed_unanswered" else 1
            if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
                raise ProbePlanError(f"{setting} must be a whole number from {lowest} to {highest}")

        spanned = sum(network.num_addresses for network in ranges)
        if spanned > self.max_addresses:
            raise PlanTooLarge(f"the plan's ranges span {spanned} addresses, more than its limit of"
                               f" {self.max_addresses}; probe smaller ranges")

    def addresses(self) -> Iterator[IPAddress]:
        """The addresses to contact, in plan order, each once even where ranges overlap."""
        seen: set[IPAddress] = set()
        for network in self.ranges:
            for address in _probed_addresses(network):
                if address not in seen:
                    seen.add(address)
                    yield address


@dataclass(frozen=True)
class ServedCertificate:
    """One certificate of a served chain (RFC 5280 §4.1 fields). Only the fingerprint is
    certain: a certificate that cannot be parsed keeps it and says why in ``problem``."""

    fingerprint_sha256: str
    subject: str | None = None
    """RFC 4514 string."""
    issuer: str | None = None
    serial: str | None = None
    """Lower-case hex."""
    not_before: str | None = None
    """ISO 8601 UTC, ``2025-01-31T12:00:00Z``."""
    not_after: str | None = None
    sans: tuple[str, ...] = ()
    """``DNS:name``, ``IP:address``, ``URI:…``, ``email:…`` (OpenSSL's spelling)."""
    problem: str | None = None
    facts: CertificateFacts | None = None
    """Every field a discovery record carries (as a file scan reports them), for the
    report to the coordinator; ``None`` if the certificate does not parse."""


@dataclass(frozen=True)
class Endpoint:
    """One connection attempt: ``host``:``port`` with ``sni`` (``None``: none sent)."""

    host: str
    port: int
    sni: str | None
    status: Outcome
    detail: str = ""
    protocol: str | None = None
    """``TLSv1.3`` or ``TLSv1.2``."""
    cipher: str | None = None
    """OpenSSL name of the negotiated cipher suite."""
    chain: tuple[ServedCertificate, ...] = ()
    """As served, leaf first, in the server's order (RFC 8446 §4.4.2)."""


@dataclass(frozen=True)
class ProbeTotals:
    """Connection attempts by outcome; ``attempted`` is their sum."""

    attempted: int = 0
    tls: int = 0
    not_tls: int = 0
    handshake_failed: int = 0
    refused: int = 0
    timeout: int = 0
    unreachable: int = 0


@dataclass(frozen=True)
class ProbeResult:
    """Every attempt that reached an open port, plus the first ``listed_unanswered``
    attempts that did not (in address, port order); ``unlisted`` counts the rest."""

    endpoints: tuple[Endpoint, ...]
    totals: ProbeTotals
    unlisted: int = 0


def _utc(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _san_text(name: x509.GeneralName) -> str:
    match name:
        case x509.DNSName():
            return f"DNS:{name.value}"
        case x509.IPAddress():
            return f"IP:{name.value}"
        case x509.UniformResourceIdentifier():
            return f"URI:{name.value}"
        case x509.RFC822Name():
            return f"email:{name.value}"
        case x509.DirectoryName():
            return f"DirName:{name.value.rfc4514_string()}"
        case x509.RegisteredID():
            return f"RID:{name.value.dotted_string}"
        case x509.OtherName():
            return f"othername:{name.type_id.dotted_string}"
    return f"{type(name).__name__}:?"


def describe_certificate(der: bytes) -> ServedCertificate:
    """The discovery record of one DER certificate. Never raises: a server may serve
    anything, and what it serves is the finding."""
    fingerprint = hashlib.sha256(der).hexdigest()
    try:
        certificate = x509.load_der_x509_certificate(der)
        subject = certificate.subject.rfc4514_string()
        issuer = certificate.issuer.rfc4514_string()
        number = certificate.serial_number
        serial = f"-{-number:x}" if number < 0 else f"{number:x}"  # negative serials exist in the wild
        not_before = _utc(certificate.not_valid_before_utc)
        not_after = _utc(certificate.not_valid_after_utc)
    except ValueError as exc:
        return ServedCertificate(fingerprint, problem=f"not a parseable X.509 certificate: {exc}")
    sans: tuple[str, ...] = ()
    problem = None
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        sans = tuple(_san_text(name) for name in extension.value)
    except x509.ExtensionNotFound:
        pass
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        problem = f"the extensions cannot be parsed: {exc}"
    try:
        facts = certificate_facts(certificate, position=0, format="tls")
    except ValueError:
        facts = None
    return ServedCertificate(fingerprint, subject, issuer, serial, not_before, not_after, sans, problem, facts)


def _discovery_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # discovery reports what is served; trust is not the question
    # TLS 1.2 stays allowed although the coordinator itself speaks only 1.3: the point
    # is to find the servers of a fleet, and many (appliances, older stacks) still
    # speak only 1.2. Older versions are not offered; such a server shows up as a
    # failed handshake, which is itself worth reporting.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Python's default client cipher list drops RSA key exchange and small keys, so an
    # old TLS 1.2 server that offers nothing else would fail the handshake and go
    # unreported. No application data is ever sent, so the strength of what is
    # negotiated protects nothing here; OpenSSL's whole default list at security
    # level 0 lets every such server show its chain.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def _served_chain(tls: ssl.SSLObject) -> list[bytes]:
    """The chain as the server sent it, leaf first, DER (see the module docstring)."""
    if sys.version_info >= (3, 13):
        chain = list(tls.get_unverified_chain() or ())
    else:
        certificates = tls._sslobj.get_unverified_chain() or ()
        # Certificate.public_bytes defaults to PEM; converting through the public helper
        # avoids a second private name (_ssl.ENCODING_DER).
        chain = [ssl.PEM_cert_to_DER_cert(certificate.public_bytes()) for certificate in certificates]
    if not chain:
        leaf = tls.getpeercert(binary_form=True)
        chain = [leaf] if leaf else []
    return chain


def _looks_like_tls(first_bytes: bytes) -> bool:
    """A TLS record header (RFC 8446 §5.1): a handshake (22) or alert (21) content type
    followed by a legacy version whose major byte is 3."""
    return len(first_bytes) >= 2 and first_bytes[0] in (21, 22) and first_bytes[1] == 3


class _PeerClosed(Exception):
    """The server closed the connection before the handshake completed."""


class _Handshake:
    """A client handshake over a trio stream, driving an ``ssl.SSLObject`` through
    memory buffers so the agent owns the object whose chain it reads."""

    def __init__(self, stream: trio.SocketStream, context: ssl.SSLContext, server_name: str | None) -> None:
        self.stream = stream
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=False, server_hostname=server_name)
        self.first_bytes = b""

    async def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            await self.stream.send_all(data)

    async def run(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
            else:
                await self._flush()
                return
            data = await self.stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise _PeerClosed
            self.first_bytes = (self.first_bytes + data)[:2]
            self.incoming.write(data)

    async def close(self) -> None:
        """Send close_notify (RFC 8446 §6.1) without waiting for the server's."""
        try:
            self.tls.unwrap()
        except ssl.SSLError:
            pass  # SSLWantReadError: the server's close_notify is not awaited
        try:
            await self._flush()
        except (trio.BrokenResourceError, OSError):
            pass  # the server left first; there is nothing left to tell it


def _failed_handshake(handshake: _Handshake, problem: BaseException) -> tuple[Outcome, str]:
    if _looks_like_tls(handshake.first_bytes):
        if isinstance(problem, ssl.SSLError):
            reason = (problem.reason or type(problem).__name__).lower()
            return Outcome.HANDSHAKE_FAILED, f"the TLS handshake failed ({reason})"
        return Outcome.HANDSHAKE_FAILED, "the server closed the connection during the TLS handshake"
    # What the server did say is not repeated: a banner can name internal hosts and
    # versions, and discovery results travel to the coordinator.
    if handshake.first_bytes:
        return Outcome.NOT_TLS, "the port accepted TCP but did not answer in TLS"
    if isinstance(problem, _PeerClosed):
        return Outcome.NOT_TLS, "the port accepted TCP and closed without answering the TLS handshake"
    return Outcome.NOT_TLS, "the port accepted TCP and reset the connection during the TLS handshake"


def _connect_failure(exc: OSError) -> tuple[Outcome, str]:
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return Outcome.REFUSED, "connection refused"
    if exc.errno == errno.ETIMEDOUT:
        return Outcome.TIMEOUT, "the TCP connection timed out"
    reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    return Outcome.UNREACHABLE, reason[:1].lower() + reason[1:]


async def _attempt(address: IPAddress, port: int, server_name: str | None, timeout: float,
                   context: ssl.SSLContext) -> tuple[Endpoint, bool]:
    """One connection and handshake; returns the record and whether TCP was accepted.
    Per-endpoint failures become outcomes; only cancellation and local faults (an
    ``OSError`` when no file descriptor is left) propagate."""

    def record(status: Outcome, detail: str, **observed) -> Endpoint:
        return Endpoint(str(address), port, server_name, status, detail, **observed)

    family = trio.socket.AF_INET6 if address.version == 6 else trio.socket.AF_INET
    try:
        sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    except OSError as exc:
        if exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            return record(Outcome.UNREACHABLE, f"this host cannot open IPv{address.version} connections"), False
        raise
    accepted = False
    found: Endpoint | None = None
    with sock:
        with trio.move_on_after(timeout):
            try:
                await sock.connect((str(address), port))
            except OSError as exc:
                return record(*_connect_failure(exc)), False
            accepted = True
            handshake = _Handshake(trio.SocketStream(sock), context, server_name)
            try:
                await handshake.run()
            except (ssl.SSLError, _PeerClosed, trio.BrokenResourceError, OSError) as exc:
                return record(*_failed_handshake(handshake, exc)), True
            cipher = handshake.tls.cipher()
            found = record(Outcome.TLS, "", protocol=handshake.tls.version(), cipher=cipher[0] if cipher else None,
                           chain=tuple(describe_certificate(der) for der in _served_chain(handshake.tls)))
            await handshake.close()
    if found is not None:
        return found, True  # even if the deadline passed while saying goodbye
    if accepted:
        return record(Outcome.TIMEOUT, f"the port accepted TCP but did not complete a TLS handshake within"
                                       f" {timeout:g} s"), True
    return record(Outcome.TIMEOUT, f"no TCP answer within {timeout:g} s"), False


class _Findings:
    """Collects attempts; keeps every open-port attempt and a bounded, deterministic
    selection (lowest address, port, name first) of the others."""

    def __init__(self, plan: ProbePlan) -> None:
        self.listed_unanswered = plan.listed_unanswered
        self.name_rank = {name: rank for rank, name in enumerate(plan.server_names, start=1)}
        self.answered: list[tuple[tuple, Endpoint]] = []
        self.unanswered: list[tuple[tuple, Endpoint]] = []
        self.unanswered_count = 0
        self.counts: Counter[Outcome] = Counter()

    def add(self, address: IPAddress, endpoint: Endpoint, accepted: bool) -> None:
        self.counts[endpoint.status] += 1
        key = (address.version, int(address), endpoint.port, self.name_rank.get(endpoint.sni, 0))
        if accepted:
            self.answered.append((key, endpoint))
            return
        self.unanswered_count += 1
        self.unanswered.append((key, endpoint))
        # Trim now and then rather than hold one record per closed port of a large sweep.
        if len(self.unanswered) > 2 * self.listed_unanswered + 64:
            self._trim()

    def _trim(self) -> None:
        self.unanswered.sort(key=lambda item: item[0])
        del self.unanswered[self.listed_unanswered:]

    def result(self) -> ProbeResult:
        self._trim()
        listed = sorted(self.answered + self.unanswered, key=lambda item: item[0])
        totals = ProbeTotals(attempted=sum(self.counts.values()),
                             **{outcome.value: self.counts[outcome] for outcome in Outcome})
        return ProbeResult(tuple(endpoint for _, endpoint in listed), totals,
                           self.unanswered_count - len(self.unanswered))


async def _probe_endpoint(address: IPAddress, port: int, plan: ProbePlan, context: ssl.SSLContext,
                          findings: _Findings) -> None:
    first, accepted = await _attempt(address, port, None, plan.timeout, context)
    findings.add(address, first, accepted)
    # A port that did not accept TCP will not for a name either, and one that let a
    # ClientHello go unanswered until the deadline would only make every name wait out
    # the same deadline. Every other port is tried with each name: a server that
    # insists on SNI fails the first handshake and answers the named ones.
    if not accepted or first.status is Outcome.TIMEOUT:
        return
    for name in plan.server_names:
        endpoint, accepted = await _attempt(address, port, name, plan.timeout, context)
        findings.add(address, endpoint, accepted)


async def probe(plan: ProbePlan, *, allowed: AllowedRanges) -> ProbeResult:
    """Probe every address and port of ``plan`` and report what each serves.

    Raises :class:`RangeNotAllowed`, naming the first offending range, when any plan
    range reaches outside ``allowed``; nothing is contacted then. Per-endpoint failures
    (refused, timed out, not TLS) never raise: they are outcomes in the result; an
    ``OSError`` escapes only for a fault of the agent's own host (no file descriptor
    left). At most
    ``plan.concurrency`` connections are open at once: that many workers share one
    iterator of endpoints, so memory stays flat however large the plan.
    """
    for network in plan.ranges:
        if not allowed.covers(network):
            raise RangeNotAllowed(network, allowed)
    context = _discovery_context()
    findings = _Findings(plan)
    endpoints = ((address, port) for address in plan.addresses() for port in plan.ports)

    async def worker() -> None:
        # Several workers iterate one generator; trio switches tasks only at awaits,
        # so each next() completes before another worker calls it.
        for address, port in endpoints:
            await _probe_endpoint(address, port, plan, context, findings)

    async with trio.open_nursery() as nursery:
        for _ in range(plan.concurrency):
            nursery.start_soon(worker)
    return findings.result()
