"""Issuance: CSRs issued through the REST API by the local CA.

What is timed: ``POST /api/v1/agent/orders/{id}/csr`` from N concurrent simulated
agents, each with its own TLS 1.3 connection and a signed request token per request.
The coordinator verifies the token (and records its jti), parses and checks the CSR,
signs the leaf with the issuing CA and commits the certificate, the order and job
changes and the audit row in one transaction before it answers. Certificates, orders,
keys and CSRs are made before the clock starts.

Baselines from the same run: the raw ``cryptography`` build-and-sign rate for the
same key types in this process, and the request rate of GET /health (the most
trivial JSON endpoint: no authentication, one ``SELECT 1`` round trip) and of GET
/.well-known/certfleet/ca.pem (the most trivial endpoint of all: no authentication,
no database, a constant PEM body) from the same number of clients.
"""

from __future__ import annotations

import datetime as dt
import time

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .context import BenchContext, timed_rate
from .fleet import SimAgent, create_certificates, enroll_agents, gather
from .procstats import CpuMeter, percentile
from .profiling import Profiler
from .report import Figure, Section

__all__ = ["GOAL", "raw_issuance_rate", "run"]

GOAL = 1000.0
"""Certificates per second on two cores."""


def _ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench issuing CA")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256()))
    return certificate, key


def raw_issuance_rate(seconds: float) -> float:
    """Leaves per second built and signed with plain ``cryptography``: a P-256 leaf key
    (generated beforehand) signed by a P-256 CA, with the extensions the local CA
    adds (SAN, key usage, EKU, basic constraints, SKI, AKI, CRL DP, AIA)."""
    ca, ca_key = _ca()
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    leaf_keys = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(64)]
    now = dt.datetime.now(dt.UTC)
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        public_key = leaf_keys[count % len(leaf_keys)]
        name = f"host-{count}.bench.test"
        (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(aki, critical=False)
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier("http://127.0.0.1/.well-known/pki/crl/issuing")], None, None, None)]),
                critical=False)
            .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                x509.AuthorityInformationAccessOID.OCSP,
                x509.UniformResourceIdentifier("http://127.0.0.1/.well-known/pki/ocsp/issuing"))]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        count += 1
    return count / (time.perf_counter() - started)


async def run(ctx: BenchContext, backend: str) -> Section:
    sizes = ctx.sizes
    section = Section(f"issuance-{backend}", f"Issuance ({backend})")
    clients, per_client = sizes.issuance_clients, sizes.issuance_per_client
    async with ctx.coordinator(backend, "issuance") as (coordinator, api):
        ctx.log(f"issuance/{backend}: enrolling {clients} agents, creating {clients * per_client} certificates")
        agents = await enroll_agents(coordinator, api, clients)
        await create_certificates(api, agents, per_agent=per_client)

        async def collect(agent: SimAgent) -> list[tuple[SimAgent, str, str]]:
            deliveries = await agent.poll(0)
            return [(agent, order_id, csr) for order_id, _, csr in map(agent.prepare, deliveries)]

        work = await gather(agents, collect, concurrency=8)
        total = sum(len(w) for w in work)
        latencies: list[float] = []

        async def submit_all(items: list[tuple[SimAgent, str, str]]) -> None:
            for agent, order_id, csr in items:
                begin = trio.current_time()
                await agent.submit_csr(order_id, csr)
                latencies.append(trio.current_time() - begin)

        ctx.log(f"issuance/{backend}: timing {total} CSR submissions from {clients} clients")
        meter = CpuMeter(coordinator.pid).start()
        client_cpu = ctx.self_cpu()
        with Profiler(coordinator.pid, ctx.results_dir / "profiles" / f"issuance-{backend}.raw") as profiler:
            started = trio.current_time()
            await gather(work, submit_all, concurrency=clients)
            elapsed = trio.current_time() - started
        meter.stop()
        client_cores = (ctx.self_cpu() - client_cpu) / elapsed
        rate = total / elapsed

        # Trivial endpoints, same clients, same kind of connections.
        async def health(index: int) -> None:
            response = await agents[index].connection.request("GET", "/health")
            assert response.status == 200, response

        async def ca_pem(index: int) -> None:
            response = await agents[index].connection.request("GET", "/.well-known/certfleet/ca.pem")
            assert response.status == 200, response

        health_meter = CpuMeter(coordinator.pid).start()
        health_rate, health_latencies = await timed_rate(health, clients=clients, seconds=sizes.baseline_seconds)
        health_meter.stop()
        ca_rate, _ = await timed_rate(ca_pem, clients=clients, seconds=sizes.baseline_seconds)
        for agent in agents:
            await agent.connection.aclose()

    raw_rate = await trio.to_thread.run_sync(raw_issuance_rate, sizes.baseline_seconds)
    ctx.issuance_rates[backend] = rate
    name = f"certificates/s, {clients} clients"
    section.add(
        Figure("issuance", backend, name, rate, "cert/s", "raw cryptography build+sign (P-256, 1 thread)", raw_rate,
               True),
        Figure("issuance", backend, name, rate, "cert/s", "GET /health (JSON, 1 DB round trip)", health_rate, True),
        Figure("issuance", backend, name, rate, "cert/s", "GET ca.pem (no auth, no DB)", ca_rate, True),
        Figure("issuance", backend, name, rate, "cert/s", "goal", GOAL, True),
        Figure("issuance", backend, "CSR request latency p50", percentile(latencies, 0.5) * 1000, "ms",
               "GET /health latency p50, same clients", percentile(health_latencies, 0.5) * 1000, False),
        Figure("issuance", backend, "CSR request latency p99", percentile(latencies, 0.99) * 1000, "ms",
               "GET /health latency p99, same clients", percentile(health_latencies, 0.99) * 1000, False),
    )
    verdict = "met" if rate >= GOAL else f"missed by {GOAL / rate:.1f}× ({GOAL - rate:.0f} cert/s short)"
    section.notes += [
        f"Timed: {total} CSR submissions (POST /api/v1/agent/orders/{{id}}/csr), {clients} simulated agents with "
        f"one TLS 1.3 connection each, {per_client} CSRs each, EC P-256 keys; each answer means the certificate, "
        "the order and job changes and the audit row are committed.",
        f"Goal of {GOAL:,.0f} certificates/s on 2 cores: {verdict}.",
        f"Coordinator CPU while timed: {meter.cores:.2f} cores of {_cores()} "
        f"(GET /health run: {health_meter.cores:.2f} cores); the benchmark client used {client_cores:.2f} cores on "
        "the same machine.",
        f"Per certificate the coordinator spent {meter.cpu_seconds / total * 1000:.2f} ms of CPU; raw signing costs "
        f"{1000 / raw_rate:.3f} ms, so signing is {100 * (1000 / raw_rate) / (meter.cpu_seconds / total * 1000):.0f} % "
        "of the coordinator's CPU per certificate.",
    ]
    section.profile = profiler.summary()
    return section


def _cores() -> int:
    import os

    return os.cpu_count() or 1
