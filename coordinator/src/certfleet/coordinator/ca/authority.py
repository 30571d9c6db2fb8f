"""Certificate authorities: roots, intermediates, sub-CAs of an external root, leaves.

Certificates follow the RFC 5280 profile: CA certificates carry basicConstraints
(critical, with a path length), keyUsage keyCertSign/cRLSign (critical), a
subjectKeyIdentifier and, below a root, an authorityKeyIdentifier and optional name
constraints (§4.2.1.10, critical). Leaves carry authorityKeyIdentifier,
subjectKeyIdentifier, subjectAltName, keyUsage, extendedKeyUsage, the CRL
distribution point (§4.2.1.13) and authority information access for OCSP and the
issuer's certificate (§4.2.2.1); a leaf with an empty subject (SPIFFE only) marks
its subjectAltName critical (§4.2.1.6). Every CA below a root carries the same CRL
distribution point and authority information access, pointing at its parent.
Serials are 159 random bits (§4.1.2.2 allows 20 octets; CA/B Forum asks for at
least 64 bits of entropy).

A lifetime is the whole validity period, inclusive of both ends (§4.1.2.5): the
backdated notBefore counts inside it, so notAfter is notBefore + lifetime − 1 s.
Nothing outlives its issuer: a leaf that would is refused, not silently cut short.
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
    "IssuerLinks",
    "LeafOptions",
    "LifetimeBeyondIssuer",
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


class LifetimeBeyondIssuer(ValueError):
    """The requested lifetime would end after the issuer's certificate expires."""


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)


def validity(now: float, seconds: float) -> tuple[dt.datetime, dt.datetime]:
    """notBefore and notAfter for a validity period of exactly ``seconds``, counted
    inclusively as RFC 5280 §4.1.2.5 does, and starting :data:`BACKDATE` early."""
    not_before = _utc(now) - BACKDATE
    return not_before, not_before + dt.timedelta(seconds=seconds - 1)


def ca_name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfleet"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _crl_distribution(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints([x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url)], relative_name=None, reasons=None, crl_issuer=None)])


@dataclass(frozen=True)
class IssuerLinks:
    """Where relying parties find the issuer's CRL (RFC 5280 §4.2.1.13), its OCSP
    responder and its certificate (§4.2.2.1). Plain ``http://`` URLs: an ``https``
    link would need the very revocation check it serves (RFC 5280 §4.2.1.13 and the
    CA/Browser Forum profile ask for http; nginx will not staple from https)."""

    crl_url: str | None = None
    ocsp_url: str | None = None
    ca_issuers_url: str | None = None

    @classmethod
    def under(cls, base: str, issuer_id: str) -> IssuerLinks:
        """The links the coordinator's PKI endpoints serve for ``issuer_id`` at ``base``."""
        return cls(crl_url=f"{base}/.well-known/pki/crl/{issuer_id}",
                   ocsp_url=f"{base}/.well-known/pki/ocsp/{issuer_id}",
                   ca_issuers_url=f"{base}/.well-known/pki/ca/{issuer_id}")

    def add_to(self, builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
        if self.crl_url:
            builder = builder.add_extension(_crl_distribution(self.crl_url), critical=False)
        access = []
        if self.ocsp_url:
            access.append(x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP,
                                                 x509.UniformResourceIdentifier(self.ocsp_url)))
        if self.ca_issuers_url:
            access.append(x509.AccessDescription(x509.AuthorityInformationAccessOID.CA_ISSUERS,
                                                 x509.UniformResourceIdentifier(self.ca_issuers_url)))
        if access:
            builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
        return builder


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
    links: IssuerLinks = IssuerLinks()
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

    def check_lifetime(self, *, now: float, lifetime_seconds: int) -> None:
        """Raise :class:`LifetimeBeyondIssuer` if a leaf of this lifetime issued at
        ``now`` would outlive this CA's certificate."""
        _, not_after = validity(now, lifetime_seconds)
        expires = self.certificate.not_valid_after_utc
        if not_after > expires:
            left = max(0, int((expires - _utc(now)).total_seconds()) // 86400)
            raise LifetimeBeyondIssuer(
                f"the issuer {self.certificate.subject.rfc4514_string()} expires on {expires:%Y-%m-%d}"
                f" ({left} days from now), before a {lifetime_seconds // 86400}-day certificate would:"
                " ask for a shorter lifetime or issue under a newer CA")

    def issue(self, public_key: PublicKey, names: Sequence[str], *, lifetime_seconds: int, now: float,
              options: LeafOptions = LeafOptions()) -> IssuedCertificate:
        """Sign a leaf for ``names``; the first host name is also the CN. Raises
        :class:`LifetimeBeyondIssuer` rather than sign one that outlives this CA."""
        names = normalize_names(names)
        self.check_lifetime(now=now, lifetime_seconds=lifetime_seconds)
        not_before, not_after = validity(now, lifetime_seconds)
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
            # §4.2.1.6: with an empty subject the names live only here, and the
            # extension must then be critical.
            .add_extension(x509.SubjectAlternativeName([general_name(n) for n in names]), critical=len(subject) == 0)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._aki(), critical=False)
        )
        builder = options.links.add_to(builder)
        if options.must_staple:
            builder = builder.add_extension(x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False)
        for extension, critical in options.extra_extensions:
            builder = builder.add_extension(extension, critical=critical)
        return IssuedCertificate(builder.sign(self.key, signature_hash(self.key)))  # type: ignore[arg-type]

    def sign_subordinate(self, subject: x509.Name, public_key: PublicKey, *, now: float, lifetime_days: int,
                         path_length: int | None, constraints: NameConstraintsSpec | None = None,
                         links: IssuerLinks = IssuerLinks()) -> x509.Certificate:
        """An intermediate CA certificate under this one, ending no later than this
        one; ``links`` point at this CA's CRL, OCSP responder and certificate."""
        not_before, not_after = validity(now, lifetime_days * 86400)
        not_after = min(not_after, self.certificate.not_valid_after_utc)
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
        builder = links.add_to(builder)
        return builder.sign(self.key, signature_hash(self.key))  # type: ignore[arg-type]

    def create_subordinate(self, common_name: str, *, now: float, lifetime_days: int = 5 * 365,
                           path_length: int | None = 0, constraints: NameConstraintsSpec | None = None,
                           links: IssuerLinks = IssuerLinks()) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self.sign_subordinate(ca_name(common_name), key.public_key(), now=now,
                                            lifetime_days=lifetime_days, path_length=path_length,
                                            constraints=constraints, links=links)
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
    not_before, not_after = validity(now, lifetime_days * 86400)
    builder = (
        x509.CertificateBuilder()
        .subject_name(ca_name(common_name))
        .issuer_name(ca_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
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
