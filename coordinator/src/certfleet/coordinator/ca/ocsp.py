"""OCSP responder core (RFC 6960), sans-IO: DER request in, DER response out.

Responses are signed by a delegated responder certificate per issuer (§4.2.2.2:
issued by the CA, extendedKeyUsage id-kp-OCSPSigning, and id-pkix-ocsp-nocheck so
clients need not check the responder itself). A request carrying a nonce (§4.4.1)
gets a freshly signed response echoing it; others may be served a pre-signed one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .authority import BACKDATE, CertificateAuthority, signature_hash
from .crl import REASONS

__all__ = ["CertStatus", "OcspRequest", "Responder", "malformed", "parse_request", "issue_responder", "unauthorized"]

MAX_REQUEST_BYTES = 16 * 1024


@dataclass(frozen=True)
class OcspRequest:
    serial_hex: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    algorithm: hashes.HashAlgorithm
    nonce: bytes | None


@dataclass(frozen=True)
class CertStatus:
    """``good``, ``revoked`` (with time and reason) or ``unknown``."""

    status: str
    revoked_at: int | None = None
    reason: str | None = None


def malformed() -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(
        serialization.Encoding.DER)


def unauthorized() -> bytes:
    """§2.3: the responder is not authoritative for this issuer."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(
        serialization.Encoding.DER)


def parse_request(der: bytes) -> OcspRequest | None:
    """The single request inside ``der``, or ``None`` if it is malformed."""
    if not der or len(der) > MAX_REQUEST_BYTES:
        return None
    try:
        request = ocsp.load_der_ocsp_request(der)
        nonce = None
        try:
            nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            pass
        return OcspRequest(format(request.serial_number, "x"), request.issuer_name_hash, request.issuer_key_hash,
                           request.hash_algorithm, nonce)
    except (ValueError, TypeError):
        return None


def issue_responder(issuer: CertificateAuthority, *, now: int, lifetime: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    not_after = min(start + dt.timedelta(seconds=lifetime), issuer.certificate.not_valid_after_utc)
    ski = issuer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    issuer_cn = issuer.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfleet"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, f"OCSP responder for {issuer_cn}"[:64])]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(issuer.key, signature_hash(issuer.key))  # type: ignore[arg-type]
    )
    return certificate, key


@dataclass(frozen=True)
class Responder:
    issuer: x509.Certificate
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def matches_issuer(self, request: OcspRequest) -> bool:
        """Whether the request's CertID names our issuer (§4.1.1)."""
        name_hash = hashes.Hash(request.algorithm)
        name_hash.update(self.issuer.subject.public_bytes())
        spki = self.issuer.public_key().public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
        # issuerKeyHash is over the BIT STRING contents of the key, not the whole SPKI.
        key_hash = hashes.Hash(request.algorithm)
        key_hash.update(_subject_public_key_bits(spki))
        return name_hash.finalize() == request.issuer_name_hash and key_hash.finalize() == request.issuer_key_hash

    def respond(self, request: OcspRequest, status: CertStatus, *, now: int, validity: int) -> bytes:
        this_update = dt.datetime.fromtimestamp(now, tz=dt.UTC)
        cert_status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                       "unknown": ocsp.OCSPCertStatus.UNKNOWN}[status.status]
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial_number=int(request.serial_hex, 16),
            algorithm=request.algorithm,
            cert_status=cert_status,
            this_update=this_update,
            next_update=this_update + dt.timedelta(seconds=validity),
            revocation_time=(dt.datetime.fromtimestamp(status.revoked_at, tz=dt.UTC)
                             if status.status == "revoked" and status.revoked_at is not None else None),
            revocation_reason=(REASONS[status.reason] if status.status == "revoked" and status.reason
                               and status.reason != "unspecified" else None),
        )
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, self.certificate)
        builder = builder.certificates([self.certificate])
        if request.nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(request.nonce), critical=False)
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _subject_public_key_bits(spki_der: bytes) -> bytes:
    """The subjectPublicKey BIT STRING's contents inside a DER SubjectPublicKeyInfo."""

    def read_length(data: bytes, offset: int) -> tuple[int, int]:
        first = data[offset]
        if first < 0x80:
            return first, offset + 1
        count = first & 0x7F
        return int.from_bytes(data[offset + 1:offset + 1 + count], "big"), offset + 1 + count

    _, offset = read_length(spki_der, 1)  # outer SEQUENCE
    algorithm_length, inner = read_length(spki_der, offset + 1)  # AlgorithmIdentifier SEQUENCE
    offset = inner + algorithm_length
    if spki_der[offset] != 0x03:
        raise ValueError("SubjectPublicKeyInfo has no BIT STRING")
    length, offset = read_length(spki_der, offset + 1)
    return spki_der[offset + 1:offset + length]  # skip the unused-bits octet
