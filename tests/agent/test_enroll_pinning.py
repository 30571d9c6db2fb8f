"""Enrollment sends its token only on a TLS connection that chained to the pinned CA.

A machine in the path can serve the coordinator's real CA file (it is public) while
terminating TLS with a certificate of its own: enrollment must refuse before the
token leaves. Each fake server here is a real TLS server on 127.0.0.1 that records
every byte it decrypts.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfleet.agent.config import AgentPaths
from certfleet.agent.enroll import EnrollmentError, enroll
from certfleet.shared import wire
from tests.support import admin_client, ca_fingerprint

CA_PATH = "/.well-known/certfleet/ca.pem"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _tls_server_context(tmp_path: Path, label: str) -> tuple[ssl.SSLContext, bytes]:
    """A server context whose certificate (for 127.0.0.1) a new CA signed; returns
    it and that CA's PEM."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name(f"{label} CA")).issuer_name(_name(f"{label} CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    chain, key = tmp_path / f"{label}-chain.pem", tmp_path / f"{label}-key.pem"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    return context, ca.public_bytes(serialization.Encoding.PEM)


class RecordingTlsServer:
    """Answers ``GET /.well-known/certfleet/ca.pem`` with ``ca_pem`` and anything
    else with an empty 500; keeps every decrypted byte it received."""

    def __init__(self, context: ssl.SSLContext, ca_pem: bytes) -> None:
        self.context = context
        self.ca_pem = ca_pem
        self.received = bytearray()
        self.url = ""

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"https://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, self.context, server_side=True)
        try:
            while True:
                request = bytearray()
                while b"\r\n\r\n" not in request:
                    data = await tls.receive_some(65536)
                    if not data:
                        return
                    request += data
                self.received += request
                head, _, body = bytes(request).partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    more = await tls.receive_some(65536)
                    if not more:
                        return
                    body += more
                    self.received += more
                if head.startswith(b"GET " + CA_PATH.encode() + b" "):
                    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/pem-certificate-chain\r\n"
                              b"Content-Length: %d\r\n\r\n" % len(self.ca_pem) + self.ca_pem)
                else:
                    answer = b"HTTP/1.1 500 Internal Server Error\r\nX-Request-Id: req-42\r\nContent-Length: 0\r\n\r\n"
                await tls.send_all(answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def _enrollment_token(coordinator) -> str:
    api, _ = await admin_client(coordinator)
    async with api:
        return (await api.call("agents.enrollment-token.create", wire.EnrollmentTokenCreate(uses=1))).token


async def test_a_man_in_the_middle_serving_the_real_ca_file_gets_no_token(coordinator, nursery, tmp_path):
    token = await _enrollment_token(coordinator)
    interceptor_context, _ = _tls_server_context(tmp_path, "interceptor")
    interceptor = RecordingTlsServer(interceptor_context, coordinator.ca_path.read_bytes())
    await nursery.start(interceptor.serve)
    paths = AgentPaths(tmp_path / "agent")

    with pytest.raises(EnrollmentError) as refused:
        await enroll(paths, coordinator=interceptor.url, token=token, ca_fingerprint=ca_fingerprint(coordinator))

    message = str(refused.value)
    assert message.startswith("refusing to send the token") and interceptor.url in message
    assert "TLS certificate verification failed" in message
    assert "does not chain to the CA with the pinned fingerprint" in message

    assert token.encode() not in interceptor.received and b"cfe_" not in interceptor.received
    assert not paths.root.exists()


async def test_a_coordinator_that_fails_with_an_empty_500_is_reported_with_the_cause(nursery, tmp_path):
    context, ca_pem = _tls_server_context(tmp_path, "failing")
    failing = RecordingTlsServer(context, ca_pem)
    await nursery.start(failing.serve)
    pin = hashlib.sha256(x509.load_pem_x509_certificate(ca_pem).public_bytes(serialization.Encoding.DER)).hexdigest()

    with pytest.raises(EnrollmentError) as refused:
        await enroll(AgentPaths(tmp_path / "agent"), coordinator=failing.url, token="cfe_" + "t" * 40,
                     ca_fingerprint=pin)

    message = str(refused.value)
    assert "500 Internal Server Error" in message and "req-42" in message and "coordinator's log" in message
    assert failing.url in message
    # The pinned handshake checked out, so the token was sent: this server is the coordinator.
    assert b"cfe_" in failing.received


async def test_enrollment_still_works_against_the_real_coordinator(coordinator, tmp_path):
    token = await _enrollment_token(coordinator)
    paths = AgentPaths(tmp_path / "agent")

    enrolled = await enroll(paths, coordinator=coordinator.url, token=token, ca_fingerprint=ca_fingerprint(coordinator))

    assert enrolled.agent_id and paths.config.exists()
    pinned = x509.load_pem_x509_certificate(paths.ca_bundle.read_bytes())
    assert hashlib.sha256(pinned.public_bytes(serialization.Encoding.DER)).hexdigest() == ca_fingerprint(coordinator)
