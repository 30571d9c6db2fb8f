"""The network probe against real TLS servers on loopback addresses.

Every server here is a Python ``ssl`` server under trio on 127.0.0.1 (or 127.0.0.2:
Linux routes all of 127/8 to the loopback interface) port 0, serving chains made in the
test with ``cryptography``: a leaf and its intermediate, or leaf, intermediate and root.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import ipaddress
import socket
import ssl
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certfleet.agent.discovery.probe import (
    AllowedRanges,
    Outcome,
    PlanTooLarge,
    ProbePlan,
    ProbePlanError,
    RangeNotAllowed,
    describe_certificate,
    probe,
)

LOOPBACK = AllowedRanges(["127.0.0.0/8"])
NOW = datetime.datetime.now(datetime.timezone.utc)


# --- certificates ----------------------------------------------------------------------


def _certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool, names: tuple[str, ...] = ()):
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - datetime.timedelta(days=1))
               .not_valid_after(NOW + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Chain:
    """The files a server loads and the DER certificates it therefore serves, in order."""

    certificate_file: Path
    key_file: Path
    served: list[bytes]
    leaf: x509.Certificate

    @property
    def fingerprints(self) -> list[str]:
        return [hashlib.sha256(der).hexdigest() for der in self.served]


def make_chain(directory: Path, label: str, *, length: int, names: tuple[str, ...] = (), rsa_leaf: bool = False):
    """A root, an intermediate and a leaf; the server sends the first ``length`` of
    leaf, intermediate, root."""
    root_key, intermediate_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    leaf_key = rsa.generate_private_key(65537, 2048) if rsa_leaf else ec.generate_private_key(ec.SECP256R1())
    root = _certificate(f"{label} Root", root_key, f"{label} Root", root_key, ca=True)
    intermediate = _certificate(f"{label} Intermediate", intermediate_key, f"{label} Root", root_key, ca=True)
    leaf = _certificate(names[0] if names else label, leaf_key, f"{label} Intermediate", intermediate_key, ca=False,
                        names=names)
    served = [leaf, intermediate, root][:length]
    directory.mkdir(parents=True, exist_ok=True)
    certificate_file, key_file = directory / f"{label}.pem", directory / f"{label}.key"
    certificate_file.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in served))
    key_file.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return Chain(certificate_file, key_file, [c.public_bytes(serialization.Encoding.DER) for c in served], leaf)


def server_context(chain: Chain) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain.certificate_file, chain.key_file)
    return context


# --- servers ---------------------------------------------------------------------------


@dataclass
class Listener:
    port: int
    accepted: int = 0
    open_now: int = 0
    names_seen: list[str | None] = field(default_factory=list)


async def serve(handler, host: str = "127.0.0.1", task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``handler(stream, listener)`` on ``host`` port 0; ``started`` gives the Listener."""
    listeners = await trio.open_tcp_listeners(0, host=host)
    state = Listener(listeners[0].socket.getsockname()[1])

    async def counted(stream: trio.SocketStream) -> None:
        state.accepted += 1
        state.open_now += 1
        try:
            await handler(stream, state)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # probes hang up abruptly; that is their business, not the server's
        finally:
            state.open_now -= 1
            await trio.aclose_forcefully(stream)

    task_status.started(state)
    await trio.serve_listeners(counted, listeners)


def tls_handler(context: ssl.SSLContext):
    async def handle(stream: trio.SocketStream, state: Listener) -> None:
        tls = trio.SSLStream(stream, context, server_side=True)
        await tls.do_handshake()
        while await tls.receive_some(4096):
            pass
    return handle


def alerting_tls_handler(context: ssl.SSLContext):
    """A TLS server that, like nginx or OpenSSL's s_server, sends its alert when it
    refuses a handshake (RFC 8446 §6.2); trio.SSLStream drops it, so this one drives
    the SSLObject itself."""
    async def handle(stream: trio.SocketStream, state: Listener) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                await stream.send_all(outgoing.read())
            except ssl.SSLError:
                await stream.send_all(outgoing.read())
                return
            else:
                await stream.send_all(outgoing.read())
                break
            data = await stream.receive_some(4096)
            if not data:
                return
            incoming.write(data)
        while await stream.receive_some(4096):
            pass
    return handle


def sni_context(default: Chain, by_name: dict[str, Chain], *, require_name: bool = False) -> ssl.SSLContext:
    """A server context that switches to a per-name context in the SNI callback
    (RFC 6066 §3), as virtual hosting servers do."""
    contexts = {name: server_context(chain) for name, chain in by_name.items()}
    context = server_context(default)

    def choose(tls_object: ssl.SSLObject, name: str | None, _context: ssl.SSLContext):
        if name is None and require_name:
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        if name in contexts:
            tls_object.context = contexts[name]
        return None

    context.sni_callback = choose
    return context


async def http_handler(stream: trio.SocketStream, state: Listener) -> None:
    """A plain-TCP service: reads what the client says, answers in HTTP, hangs up."""
    await stream.receive_some(4096)
    await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nServer: internal-host-7\r\n\r\n")


async def silent_handler(stream: trio.SocketStream, state: Listener) -> None:
    """Accepts and never speaks, until the client goes away."""
    while await stream.receive_some(4096):
        pass


@pytest.fixture
def closed_port():
    """A port bound on every address but not listening: connections are refused, and
    nothing else can take the port while the test runs."""
    with socket.socket() as reserved:
        reserved.bind(("0.0.0.0", 0))
        yield reserved.getsockname()[1]


async def start(nursery, handler, host: str = "127.0.0.1") -> Listener:
    return await nursery.start(functools.partial(serve, handler, host))


def by_endpoint(result):
    return {(e.host, e.port, e.sni): e for e in result.endpoints}


# --- served chains ---------------------------------------------------------------------


async def test_every_served_chain_is_recorded_per_server_name(nursery, tmp_path, closed_port):
    two = make_chain(tmp_path, "two", length=2, names=("two.example.test",))
    three = make_chain(tmp_path, "three", length=3, names=("three.example.test",))
    default = make_chain(tmp_path, "default", length=2, names=("default.example.test",))
    alpha = make_chain(tmp_path, "alpha", length=3, names=("alpha.example.test",))
    beta = make_chain(tmp_path, "beta", length=2, names=("beta.example.test", "www.beta.example.test"))

    two_server = await start(nursery, tls_handler(server_context(two)))
    three_server = await start(nursery, tls_handler(server_context(three)))
    sni_server = await start(nursery, tls_handler(
        sni_context(default, {"alpha.example.test": alpha, "beta.example.test": beta})))
    plain_server = await start(nursery, http_handler)
    ports = (two_server.port, three_server.port, sni_server.port, closed_port, plain_server.port)

    plan = ProbePlan(ranges=["127.0.0.1/32"], ports=ports, server_names=["alpha.example.test", "BETA.example.test"],
                     timeout=30)
    with trio.fail_after(120):
        result = await probe(plan, allowed=LOOPBACK)
    found = by_endpoint(result)

    names = (None, "alpha.example.test", "beta.example.test")
    for port, chain in ((two_server.port, two), (three_server.port, three)):
        for name in names:
            endpoint = found["127.0.0.1", port, name]
            assert endpoint.status is Outcome.TLS
            assert [c.fingerprint_sha256 for c in endpoint.chain] == chain.fingerprints
            assert endpoint.protocol == "TLSv1.3" and endpoint.cipher
    for name, chain in zip(names, (default, alpha, beta), strict=True):
        endpoint = found["127.0.0.1", sni_server.port, name]
        assert [c.fingerprint_sha256 for c in endpoint.chain] == chain.fingerprints
    assert len({found["127.0.0.1", sni_server.port, n].chain[0].fingerprint_sha256 for n in names}) == 3

    refused = found["127.0.0.1", closed_port, None]
    assert refused.status is Outcome.REFUSED and not refused.chain
    assert ("127.0.0.1", closed_port, "alpha.example.test") not in found  # a closed port is not tried per name
    for name in names:
        not_tls = found["127.0.0.1", plain_server.port, name]
        assert not_tls.status is Outcome.NOT_TLS
        assert "internal-host-7" not in not_tls.detail and "HTTP" not in not_tls.detail

    totals = result.totals
    assert (totals.attempted, totals.tls, totals.not_tls, totals.refused, totals.timeout) == (13, 9, 3, 1, 0)
    assert result.unlisted == 0 and len(result.endpoints) == 13
    # Results come in address, port, then name order whatever order the workers finished in.
    assert [(e.port, e.sni) for e in result.endpoints] == sorted(
        [(e.port, e.sni) for e in result.endpoints], key=lambda item: (item[0], names.index(item[1])))


async def test_a_served_certificate_is_described_field_by_field(nursery, tmp_path):
    chain = make_chain(tmp_path, "fields", length=2, names=("fields.example.test", "api.fields.example.test"))
    server = await start(nursery, tls_handler(server_context(chain)))
    with trio.fail_after(60):
        result = await probe(ProbePlan(ranges=["127.0.0.1/32"], ports=[server.port], timeout=30), allowed=LOOPBACK)
    [endpoint] = result.endpoints
    leaf, intermediate = endpoint.chain
    assert (endpoint.host, endpoint.port, endpoint.sni) == ("127.0.0.1", server.port, None)
    assert leaf.subject == "CN=fields.example.test" and leaf.issuer == "CN=fields Intermediate"
    assert intermediate.subject == "CN=fields Intermediate" and intermediate.issuer == "CN=fields Root"
    assert leaf.serial == format(chain.leaf.serial_number, "x")
    assert leaf.not_before == chain.leaf.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert leaf.not_after == chain.leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert leaf.sans == ("DNS:fields.example.test", "DNS:api.fields.example.test")
    assert intermediate.sans == () and leaf.problem is None


async def test_an_ipv6_endpoint_is_probed_like_an_ipv4_one(nursery, tmp_path):
    try:
        with socket.socket(socket.AF_INET6) as check:
            check.bind(("::1", 0))
    except OSError:
        pytest.skip("this host has no IPv6 loopback")
    chain = make_chain(tmp_path, "six", length=3)
    server = await start(nursery, tls_handler(server_context(chain)), "::1")
    with trio.fail_after(60):
        result = await probe(ProbePlan(ranges=["::1/128"], ports=[server.port], timeout=30),
                             allowed=AllowedRanges(["::1/128"]))
    [endpoint] = result.endpoints
    assert endpoint.host == "::1" and endpoint.status is Outcome.TLS
    assert [c.fingerprint_sha256 for c in endpoint.chain] == chain.fingerprints


async def test_an_old_tls12_server_with_rsa_key_exchange_is_still_discovered(nursery, tmp_path):
    chain = make_chain(tmp_path, "legacy", length=2, rsa_leaf=True)
    context = server_context(chain)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("AES128-GCM-SHA256")  # static RSA key exchange only, as old appliances offer
    server = await start(nursery, tls_handler(context))
    with trio.fail_after(60):
        result = await probe(ProbePlan(ranges=["127.0.0.1/32"], ports=[server.port], timeout=30), allowed=LOOPBACK)
    [endpoint] = result.endpoints
    assert endpoint.status is Outcome.TLS
    assert (endpoint.protocol, endpoint.cipher) == ("TLSv1.2", "AES128-GCM-SHA256")
    assert [c.fingerprint_sha256 for c in endpoint.chain] == chain.fingerprints


async def test_a_server_older_than_tls12_is_reported_as_a_failed_handshake(nursery, tmp_path):
    chain = make_chain(tmp_path, "ancient", length=2, rsa_leaf=True)
    context = server_context(chain)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point is to serve a deprecated version
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    server = await start(nursery, alerting_tls_handler(context))
    with trio.fail_after(60):
        result = await probe(ProbePlan(ranges=["127.0.0.1/32"], ports=[server.port], timeout=30), allowed=LOOPBACK)
    [endpoint] = result.endpoints
    assert endpoint.status is Outcome.HANDSHAKE_FAILED and "protocol_version" in endpoint.detail


async def test_a_server_that_insists_on_a_name_fails_only_the_nameless_handshake(nursery, tmp_path):
    default = make_chain(tmp_path, "default", length=2)
    named = make_chain(tmp_path, "named", length=2, names=("named.example.test",))
    server = await start(nursery, alerting_tls_handler(
        sni_context(default, {"named.example.test": named}, require_name=True)))
    plan = ProbePlan(ranges=["127.0.0.1/32"], ports=[server.port], server_names=["named.example.test"], timeout=30)
    with trio.fail_after(60):
        result = await probe(plan, allowed=LOOPBACK)
    nameless, with_name = result.endpoints
    assert nameless.sni is None and nameless.status is Outcome.HANDSHAKE_FAILED and not nameless.chain
    assert "handshake" in nameless.detail
    assert with_name.status is Outcome.TLS and [c.fingerprint_sha256 for c in with_name.chain] == named.fingerprints
    assert (result.totals.handshake_failed, result.totals.tls) == (1, 1)


# --- what the agent may probe ----------------------------------------------------------


async def test_a_range_outside_the_allowed_ones_is_refused_before_any_connection(nursery):
    inside = await start(nursery, silent_handler, "127.0.0.1")
    outside = await start(nursery, silent_handler, "127.0.0.2")
    allowed = AllowedRanges(["127.0.0.1/32"])
    ports = (inside.port, outside.port)

    with pytest.raises(RangeNotAllowed, match=r"127\.0\.0\.2/32") as refused:
        await probe(ProbePlan(ranges=["127.0.0.1/32", "127.0.0.2/32"], ports=ports), allowed=allowed)
    assert refused.value.network == ipaddress.ip_network("127.0.0.2/32")
    with pytest.raises(RangeNotAllowed, match=r"127\.0\.0\.0/30"):
        await probe(ProbePlan(ranges=["127.0.0.0/30"], ports=ports), allowed=allowed)
    with pytest.raises(RangeNotAllowed, match="none configured"):
        await probe(ProbePlan(ranges=["127.0.0.1/32"], ports=ports), allowed=AllowedRanges([]))

    await trio.testing.wait_all_tasks_blocked()
    assert (inside.accepted, outside.accepted) == (0, 0)


def test_allowed_ranges_cover_a_range_only_when_every_address_is_inside():
    halves = AllowedRanges(["10.0.0.0/25", "10.0.0.128/25", "2001:db8::/64"])
    assert halves.covers(ipaddress.ip_network("10.0.0.0/24"))
    assert not halves.covers(ipaddress.ip_network("10.0.0.0/23"))
    assert halves.covers(ipaddress.ip_network("2001:db8::/120"))
    assert not halves.covers(ipaddress.ip_network("::ffff:10.0.0.1/128"))
    assert not AllowedRanges(["10.0.0.0/8"]).covers(ipaddress.ip_network("2001:db8::/120"))


def test_network_and_broadcast_addresses_of_larger_ipv4_ranges_are_skipped():
    def addresses(*ranges):
        return [str(a) for a in ProbePlan(ranges=ranges, ports=[443]).addresses()]

    assert addresses("10.0.0.0/30") == ["10.0.0.1", "10.0.0.2"]
    assert addresses("10.0.0.0/31") == ["10.0.0.0", "10.0.0.1"]
    assert addresses("10.0.0.9/32") == ["10.0.0.9"]
    assert addresses("2001:db8::/126") == ["2001:db8::", "2001:db8::1", "2001:db8::2", "2001:db8::3"]
    assert addresses("10.0.0.0/30", "10.0.0.2/31") == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


# --- plan limits and validation --------------------------------------------------------


def test_a_plan_spanning_more_addresses_than_its_limit_is_refused():
    ProbePlan(ranges=["10.0.0.0/20"], ports=[443])  # exactly 4096
    with pytest.raises(PlanTooLarge, match="span 8192 addresses, more than its limit of 4096"):
        ProbePlan(ranges=["10.0.0.0/19"], ports=[443])
    with pytest.raises(PlanTooLarge, match="4097"):
        ProbePlan(ranges=["10.0.0.0/20", "10.1.0.0/32"], ports=[443])
    with pytest.raises(PlanTooLarge):
        ProbePlan(ranges=["2001:db8::/64"], ports=[443])
    with pytest.raises(PlanTooLarge, match="limit of 16"):
        ProbePlan(ranges=["10.0.0.0/27"], ports=[443], max_addresses=16)
    with pytest.raises(ProbePlanError, match="max_addresses"):
        ProbePlan(ranges=["10.0.0.0/8"], ports=[443], max_addresses=2**24)


@pytest.mark.parametrize(("settings", "message"), [
    ({"ranges": ["10.0.0.7/24"]}, "not a CIDR range"),
    ({"ranges": "10.0.0.0/24"}, "single string"),
    ({"ranges": []}, "at least one range"),
    ({"ports": [0]}, "not a TCP port"),
    ({"ports": [70000]}, "not a TCP port"),
    ({"ports": ["443"]}, "not a TCP port"),
    ({"ports": []}, "at least one port"),
    ({"server_names": ["10.0.0.1"]}, "IP address"),
    ({"server_names": ["*.example.test"]}, "not a host name"),
    ({"server_names": ["bad name"]}, "not a DNS name"),
    ({"server_names": "example.test"}, "single string"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": float("nan")}, "timeout"),
    ({"concurrency": 0}, "concurrency"),
    ({"concurrency": 513}, "concurrency"),
])
def test_a_bad_plan_is_refused_with_a_clear_error(settings, message):
    with pytest.raises(ProbePlanError, match=message):
        ProbePlan(**{"ranges": ["10.0.0.0/24"], "ports": [443], **settings})


def test_a_plan_normalizes_what_it_was_given():
    plan = ProbePlan(ranges=["10.0.0.0/24", ipaddress.ip_network("10.0.0.0/24")], ports=[443, 443, 8443],
                     server_names=["WWW.Example.Test.", "www.example.test"])
    assert plan.ranges == (ipaddress.ip_network("10.0.0.0/24"),)
    assert plan.ports == (443, 8443) and plan.server_names == ("www.example.test",)
    assert (plan.timeout, plan.concurrency, plan.max_addresses) == (3.0, 64, 4096)


# --- concurrency, timeouts, unanswered attempts ----------------------------------------


async def _wait_for_accepts(listeners: list[Listener], expected: int) -> None:
    """Let the loopback connections in flight arrive (real time passes, the mock clock
    does not), then return once nothing is runnable."""
    give_up = time.monotonic() + 30
    while sum(s.accepted for s in listeners) < expected and time.monotonic() < give_up:
        await trio.testing.wait_all_tasks_blocked()
        await trio.lowlevel.checkpoint()
    await trio.testing.wait_all_tasks_blocked()


async def test_no_more_connections_are_open_at_once_than_the_concurrency_cap(nursery, mock_clock):
    # Silent servers hold every connection until the probe gives up on it, which
    # happens only when the test moves the clock: between moves the set of open
    # connections cannot change, so counting them is exact.
    listeners = [await start(nursery, silent_handler) for _ in range(10)]
    plan = ProbePlan(ranges=["127.0.0.1/32"], ports=[s.port for s in listeners], concurrency=3, timeout=5)
    outcome: list = []

    async def run_probe() -> None:
        outcome.append(await probe(plan, allowed=LOOPBACK))

    nursery.start_soon(run_probe)
    for expected_total, expected_open in ((3, 3), (6, 3), (9, 3), (10, 1)):
        await _wait_for_accepts(listeners, expected_total)
        assert sum(s.accepted for s in listeners) == expected_total
        assert sum(s.open_now for s in listeners) == expected_open
        mock_clock.jump(5)
    await trio.testing.wait_all_tasks_blocked()
    [result] = outcome
    assert (result.totals.attempted, result.totals.timeout) == (10, 10)
    assert all("did not complete a TLS handshake" in e.detail for e in result.endpoints)


async def test_a_port_that_accepts_and_never_speaks_times_out(nursery, autojump_clock):
    server = await start(nursery, silent_handler)
    plan = ProbePlan(ranges=["127.0.0.1/32"], ports=[server.port], server_names=["quiet.example.test"], timeout=3)
    result = await probe(plan, allowed=LOOPBACK)
    [endpoint] = result.endpoints  # the name is not tried: it would only wait out the same deadline
    assert endpoint.status is Outcome.TIMEOUT and endpoint.sni is None
    assert "accepted TCP" in endpoint.detail
    assert (result.totals.attempted, result.totals.timeout) == (1, 1)


async def test_unanswered_attempts_are_counted_but_listed_only_up_to_the_limit(closed_port):
    plan = ProbePlan(ranges=["127.0.0.0/29"], ports=[closed_port], listed_unanswered=2, timeout=30)
    with trio.fail_after(60):
        result = await probe(plan, allowed=LOOPBACK)
    assert [e.host for e in result.endpoints] == ["127.0.0.1", "127.0.0.2"]
    assert all(e.status is Outcome.REFUSED for e in result.endpoints)
    assert (result.totals.attempted, result.totals.refused, result.unlisted) == (6, 6, 4)


# --- certificates that do not parse ----------------------------------------------------


def test_a_certificate_that_does_not_parse_keeps_its_fingerprint():
    served = describe_certificate(b"\x30\x03\x02\x01\x00")
    assert served.fingerprint_sha256 == hashlib.sha256(b"\x30\x03\x02\x01\x00").hexdigest()
    assert served.subject is None and "not a parseable X.509 certificate" in served.problem
