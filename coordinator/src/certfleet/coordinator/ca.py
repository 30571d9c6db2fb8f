"""The local certificate authority: a root, an issuing CA under it, and leaf issuance.

Certificates follow the RFC 5280 profile: CA certificates carry basicConstraints
(critical, with a path length), keyUsage keyCertSign/cRLSign (critical) and a
subjectKeyIdentifier; leaves carry authorityKeyIdentifier, subjectKeyIdentifier,
subjectAltName, keyUsage, extendedKeyUsage, and serials of 159 random bits (§4.1.2.2:
positive, at most 20 octets). Leaves never outlive their issuer.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfleet.shared.pki import PrivateKey, PublicKey, normalize_names

__all__ = ["CertificateAuthority", "IssuedCertificate", "create_root"]

# Leaves start slightly in the past so a relying party whose clock lags does not
# reject a certificate that was just issued.
BACKDATE = dt.timedelta(seconds=60)


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfleet"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_extensions(
    builder: x509.CertificateBuilder, public_key: PublicKey, path_length: int | None
) -> x509.CertificateBuilder:
    return (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


@dataclass(frozen=True)
class CertificateAuthority:
    certificate: x509.Certificate
    key: PrivateKey

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def _signature_hash(self) -> hashes.HashAlgorithm | None:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return None
        if isinstance(self.key, ec.EllipticCurvePrivateKey) and self.key.curve.key_size > 256:
            return hashes.SHA384()
        return hashes.SHA256()

    def issue(
        self,
        public_key: PublicKey,
        names: Sequence[str],
        *,
        lifetime_seconds: int,
        now: float,
    ) -> IssuedCertificate:
        """Sign a TLS leaf (serverAuth and clientAuth) for ``names``; the first is the CN."""
        names = normalize_names(names)
        not_before = _utc(now) - BACKDATE
        not_after = min(_utc(now + lifetime_seconds), self.certificate.not_valid_after_utc)
        general_names: list[x509.GeneralName] = []
        for name in names:
            try:
                general_names.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                general_names.append(x509.DNSName(name))
        is_rsa = isinstance(public_key, rsa.RSAPublicKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=is_rsa,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(general_names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        certificate = builder.sign(self.key, self._signature_hash())  # type: ignore[arg-type]
        return IssuedCertificate(certificate)

    def create_subordinate(self, common_name: str, *, now: float, lifetime_days: int = 5 * 365) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        not_after = min(_utc(now) + dt.timedelta(days=lifetime_days), self.certificate.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(now) - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        builder = _ca_extensions(builder, key.public_key(), path_length=0)
        return CertificateAuthority(builder.sign(self.key, self._signature_hash()), key)  # type: ignore[arg-type]


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: x509.Certificate

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def serial_hex(self) -> str:
        return format(self.certificate.serial_number, "x")


def create_root(common_name: str, *, now: float, lifetime_days: int = 10 * 365) -> CertificateAuthority:
    """A self-signed P-256 root CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now) - BACKDATE)
        .not_valid_after(_utc(now) + dt.timedelta(days=lifetime_days))
    )
    builder = _ca_extensions(builder, key.public_key(), path_length=1)
    return CertificateAuthority(builder.sign(key, hashes.SHA256()), key)

