"""Certificate authorities: roots, intermediates, sub-CAs of an external root, leaves.

Certificates follow the RFC 5280 profile: CA certificates carry basicConstraints
(critical, with a path length), keyUsage keyCertSign/cRLSign (critical), a
subjectKeyIdentifier and, below a root, an authorityKeyIdentifier and optional name
constraints (§4.2.1.10, critical). Leaves carry authorityKeyIdentifier,
subjectKeyIdentifier, subjectAltName, keyUsage, extendedKeyUsage, the CRL
distribution point (§4.2.1.13) and authority information access for OCSP and the
issuer's certificate (§4.2.2.1). Serials are 159 random bits (§4.1.2.2 allows 20
octets; CA/B Forum asks for at least 64 bits of entropy). Nothing outlives its issuer.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certfleet.shared.pki import PrivateKey, PublicKey, general_name, normalize_names

__all__ = [
    "CertificateAuthority",
    "IssuedCertificate",
    "LeafOptions",
    "NameConstraintsSpec",
    "build_ca_csr",
    "create_root",
]

# Certificates start slightly in the past so a relying party whose clock lags does
# not reject one that was just issued.
BACKDATE = dt.timedelta(seconds=60)

EKU_OIDS = {
    "server-auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client-auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code-signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email-protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
}


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)


def ca_name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfleet"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _crl_distribution(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints([x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)], relative_name=None, reasons=None, crl_issuer=None)])


def signature_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                         encipher_only=False, decipher_only=False)


@dataclass(frozen=True)
class NameConstraintsSpec:
    """RFC 5280 §4.2.1.10 name constraints for a subordinate CA."""

    permitted_dns: tuple[str, ...] = ()
    excluded_dns: tuple[str, ...] = ()
    permitted_ip: tuple[str, ...] = ()
    excluded_ip: tuple[str, ...] = ()
    permitted_email: tuple[str, ...] = ()
    excluded_email: tuple[str, ...] = ()

    def extension(self) -> x509.NameConstraints | None:
        def subtrees(dns: Sequence[str], ips: Sequence[str], emails: Sequence[str]) -> list[x509.GeneralName] | None:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            names += [x509.IPAddress(ipaddress.ip_network(i, strict=True)) for i in ips]
            names += [x509.RFC822Name(e) for e in emails]
            return names or None

        permitted = subtrees(self.permitted_dns, self.permitted_ip, self.permitted_email)
        excluded = subtrees(self.excluded_dns, self.excluded_ip, self.excluded_email)
        if permitted is None and excluded is None:
            return None
        return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded)


@dataclass(frozen=True)
class LeafOptions:
    """What a profile adds to a leaf beyond its names and key."""

    ekus: tuple[str, ...] = ("server-auth", "client-auth")
    must_staple: bool = False
    crl_url: str | None = None
    ocsp_url: str | None = None
    ca_issuers_url: str | None = None
    extra_extensions: tuple[tuple[x509.ExtensionType, bool], ...] = field(default=())


@dataclass(frozen=True)
class CertificateAuthority:
    certificate: x509.Certificate
    key: PrivateKey

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def _aki(self) -> x509.AuthorityKeyIdentifier:
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def _validity(self, now: float, seconds: float) -> tuple[dt.datetime, dt.datetime]:
        return _utc(now) - BACKDATE, min(_utc(now + seconds), self.certificate.not_valid_after_utc)

    def issue(self, public_key: PublicKey, names: Sequence[str], *, lifetime_seconds: int, now: float,
              options: LeafOptions = LeafOptions()) -> IssuedCertificate:
        """Sign a leaf for ``names``; the first host name is also the CN."""
        names = normalize_names(names)
        not_before, not_after = self._validity(now, lifetime_seconds)
        is_rsa = isinstance(public_key, rsa.RSAPublicKey)
        hosts = [n for n in names if not n.startswith("spiffe://") and len(n) <= 64]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])] if hosts else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=is_rsa, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=False, crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([EKU_OIDS[e] for e in options.ekus]), critical=False)
            .add_extension(x509.SubjectAlternativeName([general_name(n) for n in names]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._aki(), critical=False)
        )
        if options.crl_url:
            builder = builder.add_extension(_crl_distribution(options.crl_url), critical=False)
        access = []
        if options.ocsp_url:
            access.append(x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP,
                                                 x509.UniformResourceIdentifier(options.ocsp_url)))
        if options.ca_issuers_url:
            access.append(x509.AccessDescription(x509.AuthorityInformationAccessOID.CA_ISSUERS,
                                                 x509.UniformResourceIdentifier(options.ca_issuers_url)))
        if access:
            builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
        if options.must_staple:
            builder = builder.add_extension(x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False)
        for extension, critical in options.extra_extensions:
            builder = builder.add_extension(extension, critical=critical)
        return IssuedCertificate(builder.sign(self.key, signature_hash(self.key)))  # type: ignore[arg-type]

    def sign_subordinate(self, subject: x509.Name, public_key: PublicKey, *, now: float, lifetime_days: int,
                         path_length: int | None, constraints: NameConstraintsSpec | None = None,
                         crl_url: str | None = None) -> x509.Certificate:
        """An intermediate CA certificate under this one."""
        not_before, not_after = self._validity(now, lifetime_days * 86400)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._aki(), critical=False)
        )
        if constraints is not None and (extension := constraints.extension()) is not None:
            builder = builder.add_extension(extension, critical=True)
        if crl_url:
            builder = builder.add_extension(_crl_distribution(crl_url), critical=False)
        return builder.sign(self.key, signature_hash(self.key))  # type: ignore[arg-type]

    def create_subordinate(self, common_name: str, *, now: float, lifetime_days: int = 5 * 365,
                           path_length: int | None = 0, constraints: NameConstraintsSpec | None = None,
                           crl_url: str | None = None) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self.sign_subordinate(ca_name(common_name), key.public_key(), now=now,
                                            lifetime_days=lifetime_days, path_length=path_length,
                                            constraints=constraints, crl_url=crl_url)
        return CertificateAuthority(certificate, key)


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: x509.Certificate

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def serial_hex(self) -> str:
        return format(self.certificate.serial_number, "x")


def create_root(common_name: str, *, now: float, lifetime_days: int = 10 * 365,
                path_length: int | None = None) -> CertificateAuthority:
    """A self-signed P-256 root CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(ca_name(common_name))
        .issuer_name(ca_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now) - BACKDATE)
        .not_valid_after(_utc(now) + dt.timedelta(days=lifetime_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return CertificateAuthority(builder.sign(key, hashes.SHA256()), key)


def build_ca_csr(common_name: str) -> tuple[PrivateKey, bytes]:
    """Sub-CA mode: a key and a CSR asking an external root for a CA certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(ca_name(common_name))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM)
