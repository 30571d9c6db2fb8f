"""OCSP: pre-signed responses per second, GET and POST, against ``openssl ocsp``.

The certificate set is issued through the API by the local CA. Every certificate is
queried once before the clock starts, so the coordinator answers from its stored,
pre-signed responses (requests carry no nonce, as browsers' do not). Timed: OCSP
requests for random certificates of the set from concurrent clients on keep-alive
connections, over HTTPS (TLS 1.3) on the API port and over plain HTTP on the PKI
listener (``CERTFLEET_PKI_LISTEN``), which is what relying parties normally use.

Baseline: ``openssl ocsp -index … -port`` on this machine for the same certificates,
with the coordinator's own delegated responder certificate and key (so both sign with
the same P-256 key), plain HTTP, one process like the coordinator. It signs every
response afresh; the coordinator serves stored ones.
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import socket
import subprocess
import urllib.parse
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from .context import BenchContext, timed_rate
from .fleet import CoordinatorProcess, SimAgent, create_certificates, enroll_agents, gather
from .lighthttp import Connection, ConnectionLost, Url
from .procstats import CpuMeter
from .profiling import Profiler
from .report import Figure, Section

__all__ = ["issue_certificates", "run"]

CLIENTS = 16


async def issue_certificates(coordinator: CoordinatorProcess, api, count: int) -> tuple[list[x509.Certificate],
                                                                                          x509.Certificate,
                                                                                          list[tuple[SimAgent, str]]]:
    """``count`` certificates issued through the API; returns (leaves, issuer,
    (agent, certificate id) pairs)."""
    per_agent = 50
    agents = await enroll_agents(coordinator, api, -(-count // per_agent), prefix="ocsp")
    ids = await create_certificates(api, agents, per_agent=per_agent)
    ids = ids[:count]
    leaves: list[x509.Certificate] = []
    issuer: list[x509.Certificate] = []
    owned: list[tuple[SimAgent, str]] = []

    async def issue_all(agent: SimAgent) -> None:
        for delivery in await agent.poll(0):
            order_id, certificate_id, csr = agent.prepare(delivery)
            if certificate_id not in ids:
                continue
            bundle = await agent.submit_csr(order_id, csr)
            await agent.report(order_id, bundle)
            leaves.append(x509.load_pem_x509_certificate(bundle.certificate.encode()))
            issuer[:] = [x509.load_pem_x509_certificates(bundle.chain.encode())[0]]
            owned.append((agent, certificate_id))

    await gather(agents, issue_all, concurrency=8)
    for agent in agents:
        await agent.connection.aclose()
    return leaves, issuer[0], owned


def _ocsp_path(leaf: x509.Certificate) -> str:
    access = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    for description in access:
        if description.access_method == x509.AuthorityInformationAccessOID.OCSP:
            return urllib.parse.urlsplit(description.access_location.value).path
    raise RuntimeError("the certificate has no OCSP URL")


def _request(leaf: x509.Certificate, issuer: x509.Certificate) -> bytes:
    return ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build().public_bytes(
        serialization.Encoding.DER)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _responder_files(coordinator: CoordinatorProcess, directory: Path) -> tuple[Path, Path]:
    """The coordinator's delegated OCSP responder certificate and key, unsealed with
    its master key, for the openssl baseline."""
    from certfleet.coordinator.secretbox import MasterKey

    with coordinator.database() as db:
        row = db.all("SELECT r.issuer_id, r.certificate_pem, r.sealed_key FROM ocsp_responders r"
                     " JOIN issuers i ON i.id = r.issuer_id WHERE i.name = 'issuing'")[0]
    master = MasterKey.load(coordinator.data_dir / "master.key")
    key = master.open(row["sealed_key"], context=f"ocsp-responder:{row['issuer_id']}")
    cert_path, key_path = directory / "responder.pem", directory / "responder.key"
    cert_path.write_text(row["certificate_pem"])
    key_path.write_bytes(key)
    key_path.chmod(0o600)
    return cert_path, key_path


def _index(leaves: list[x509.Certificate]) -> str:
    """openssl's CA database: status, expiry, revocation, serial, file, subject."""
    lines = []
    for leaf in leaves:
        expiry = leaf.not_valid_after_utc.astimezone(dt.UTC).strftime("%y%m%d%H%M%SZ")
        subject = "/" + "/".join(f"{a.oid._name}={a.value}" for a in leaf.subject)
        lines.append(f"V\t{expiry}\t\t{format(leaf.serial_number, 'X')}\tunknown\t{subject}")
    return "\n".join(lines) + "\n"


async def _rate(url: str, context, requests: list[bytes], path: str, method: str, seconds: float) -> float:
    connections = [Connection(Url.parse(url), context) for _ in range(CLIENTS)]

    async def one(index: int) -> None:
        der = random.choice(requests)
        with trio.fail_after(30):
            if method == "POST":
                response = await connections[index].request("POST", path or "/", body=der,
                                                            content_type="application/ocsp-request")
            else:
                encoded = urllib.parse.quote(base64.b64encode(der).decode(), safe="")
                response = await connections[index].request("GET", f"{path}/{encoded}")
        if response.status != 200 or ocsp.load_der_ocsp_response(response.body).response_status != \
                ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise RuntimeError(f"OCSP {method} to {url}{path} answered {response.status}: {response.body[:100]!r}")

    try:
        rate, _ = await timed_rate(one, clients=CLIENTS, seconds=seconds)
    finally:
        for connection in connections:
            await connection.aclose()
    return rate


async def run(ctx: BenchContext, backend: str) -> Section:
    sizes = ctx.sizes
    section = Section(f"ocsp-{backend}", f"OCSP ({backend})")
    async with ctx.coordinator(backend, "ocsp") as (coordinator, api):
        ctx.log(f"ocsp/{backend}: issuing {sizes.ocsp_certificates} certificates")
        leaves, issuer, _ = await issue_certificates(coordinator, api, sizes.ocsp_certificates)
        path = _ocsp_path(leaves[0])
        requests = [_request(leaf, issuer) for leaf in leaves]
        assert coordinator.pki_url is not None
        # Warm-up: the first answer for each certificate is signed and stored.
        warm = Connection(Url.parse(coordinator.pki_url), None)
        for der in requests:
            await warm.request("POST", path, body=der, content_type="application/ocsp-request")
        await warm.aclose()

        results: dict[tuple[str, str], float] = {}
        meter = CpuMeter(coordinator.pid).start()
        with Profiler(coordinator.pid, ctx.results_dir / "profiles" / f"ocsp-{backend}.raw") as profiler:
            for transport, url, context in (("HTTPS", coordinator.url, coordinator.context),
                                            ("HTTP", coordinator.pki_url, None)):
                for method in ("GET", "POST"):
                    ctx.log(f"ocsp/{backend}: {method} over {transport}")
                    results[(transport, method)] = await _rate(url, context, requests, path, method,
                                                               sizes.ocsp_seconds)
        meter.stop()

        directory = ctx.workdir / f"ocsp-openssl-{backend}"
        directory.mkdir(parents=True, exist_ok=True)
        responder_cert, responder_key = await trio.to_thread.run_sync(_responder_files, coordinator, directory)
        (directory / "index.txt").write_text(_index(leaves))
        (directory / "ca.pem").write_bytes(issuer.public_bytes(serialization.Encoding.PEM))

    port = _free_port()
    # It logs every request: to a file, never to a pipe nobody reads.
    openssl_log = (directory / "openssl.log").open("w")
    openssl = subprocess.Popen(
        ["openssl", "ocsp", "-index", str(directory / "index.txt"), "-port", str(port), "-rsigner",
         str(responder_cert), "-rkey", str(responder_key), "-CA", str(directory / "ca.pem"), "-ndays", "1",
         "-ignore_err"],
        stdin=subprocess.DEVNULL, stdout=openssl_log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        # Ready when it answers a real request.
        for _ in range(200):
            probe = Connection(Url.parse(base), None)
            try:
                with trio.fail_after(5):
                    await probe.request("POST", "/", body=requests[0], content_type="application/ocsp-request")
                break
            except (OSError, ConnectionLost):
                await trio.sleep(0.05)
            finally:
                await probe.aclose()
        openssl_meter = CpuMeter(openssl.pid).start()
        baseline = {method: await _rate(base, None, requests, "", method, sizes.ocsp_seconds)
                    for method in ("GET", "POST")}
        openssl_meter.stop()
    finally:
        openssl.terminate()
        openssl.wait(timeout=10)
        openssl_log.close()

    for (transport, method), rate in results.items():
        section.add(Figure("ocsp", backend, f"{method} over {transport}{' (TLS 1.3)' if transport == 'HTTPS' else ''}",
                           rate, "resp/s", f"openssl ocsp {method}, plain HTTP", baseline[method], True))
    section.notes += [
        f"{len(leaves)} certificates issued through the API; requests without a nonce for random certificates of "
        f"the set, {CLIENTS} clients on keep-alive connections, {sizes.ocsp_seconds:.0f} s per figure.",
        f"The coordinator ran at {meter.cores:.2f} cores on average over its four runs (one process; Python code "
        f"holds one core at a time); openssl used {openssl_meter.cores:.2f} cores (one process, "
        "`openssl ocsp` without `-multi`, a new signature per response).",
        "Each coordinator answer reads the stored response in a database transaction and loads the responder "
        "(its sealed key is opened on every request); see the profile.",
    ]
    section.profile = profiler.summary()
    return section
