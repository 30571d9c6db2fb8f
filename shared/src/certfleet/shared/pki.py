"""Keys, CSRs, certificate parsing and fingerprints.

Both the agent (which generates keys and CSRs) and the coordinator (which checks CSRs
against an order and signs them) use these helpers, so the rules for what a key type
or a subject name is live in exactly one place.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "CsrError",
    "KeyType",
    "NameError_",
    "ParsedCsr",
    "build_csr",
    "certificate_fingerprint",
    "general_name",
    "generate_private_key",
    "key_type_of",
    "load_certificates",
    "load_private_key",
    "normalize_name",
    "normalize_names",
    "parse_csr",
    "private_key_pem",
    "public_key_matches",
]

MAX_NAMES = 100
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class CsrError(ValueError):
    """A CSR that cannot be parsed, is not self-consistent, or names nothing usable."""


class NameError_(ValueError):
    """A subject name that is neither a valid DNS name nor an IP address."""


class KeyType(enum.StrEnum):
    """Key algorithms certfleet generates and accepts; ECDSA P-256 is the default."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    ED25519 = "ed25519"


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


def generate_private_key(key_type: KeyType) -> PrivateKey:
    match KeyType(key_type):
        case KeyType.EC_P256:
            return ec.generate_private_key(ec.SECP256R1())
        case KeyType.EC_P384:
            return ec.generate_private_key(ec.SECP384R1())
        case KeyType.RSA_2048 | KeyType.RSA_3072 | KeyType.RSA_4096 as rsa_type:
            bits = int(rsa_type.value.split("-")[1])
            return rsa.generate_private_key(public_exponent=65537, key_size=bits)
        case KeyType.ED25519:
            return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported key type {key_type!r}")


def key_type_of(public_key: object) -> KeyType:
    """Classify a public key; raises ``ValueError`` for anything certfleet does not accept."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curves = {"secp256r1": KeyType.EC_P256, "secp384r1": KeyType.EC_P384}
        if public_key.curve.name in curves:
            return curves[public_key.curve.name]
        raise ValueError(f"unsupported elliptic curve {public_key.curve.name}")
    if isinstance(public_key, rsa.RSAPublicKey):
        sizes = {2048: KeyType.RSA_2048, 3072: KeyType.RSA_3072, 4096: KeyType.RSA_4096}
        if public_key.key_size in sizes:
            return sizes[public_key.key_size]
        raise ValueError(f"unsupported RSA key size {public_key.key_size}")
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return KeyType.ED25519
    raise ValueError(f"unsupported key algorithm {type(public_key).__name__}")


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    key_type_of(key.public_key())
    return key  # type: ignore[return-value]


def normalize_name(name: str) -> str:
    """Return the canonical form of a DNS name or IP address.

    DNS names are lower-cased and checked label by label (RFC 1035 §2.3.1 LDH rule,
    a single leading ``*`` label allowed for wildcards, RFC 6125 §6.4.3). IP addresses
    are returned in their compressed form.
    """
    if not isinstance(name, str) or not name or len(name) > 2048:
        raise NameError_(f"invalid name {name!r}")
    if name.startswith("spiffe://"):
        return _normalize_spiffe(name)
    if len(name) > 253 or not name.isascii():
        # Non-ASCII would need IDNA (A-labels); some characters even lower-case to
        # ASCII (KELVIN SIGN → "k") and would pass as another name.
        raise NameError_(f"invalid name {name!r}")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    lowered = name.lower().removesuffix(".")
    labels = lowered.split(".")
    for position, label in enumerate(labels):
        if label == "*" and position == 0 and len(labels) > 2:
            continue
        if not _DNS_LABEL.match(label):
            raise NameError_(f"invalid DNS name {name!r}")
    return lowered


_SPIFFE_PATH = re.compile(r"^(/[A-Za-z0-9._-]+)*$")


def _normalize_spiffe(name: str) -> str:
    """A SPIFFE ID (``spiffe://trust-domain/path``), checked as the SPIFFE ID
    specification §2 asks: lower-case trust domain, no query, fragment or port."""
    rest = name[len("spiffe://"):]
    domain, slash, path = rest.partition("/")
    if not re.fullmatch(r"[a-z0-9._-]{1,255}", domain) or not _SPIFFE_PATH.match(slash + path) or path.endswith("/"):
        raise NameError_(f"invalid SPIFFE ID {name!r}")
    return name


def normalize_names(names: Iterable[str]) -> tuple[str, ...]:
    """Canonicalize and de-duplicate names, keeping the first one's position (the CN)."""
    result: list[str] = []
    for name in names:
        canonical = normalize_name(name)
        if canonical not in result:
            result.append(canonical)
    if not result:
        raise NameError_("at least one name is required")
    if len(result) > MAX_NAMES:
        raise NameError_(f"at most {MAX_NAMES} names are allowed")
    return tuple(result)


def general_name(name: str) -> x509.GeneralName:
    """The subjectAltName entry for a canonical name: DNS, IP address or SPIFFE URI."""
    if name.startswith("spiffe://"):
        return x509.UniformResourceIdentifier(name)
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def build_csr(key: PrivateKey, names: Sequence[str]) -> bytes:
    """A PKCS#10 CSR (RFC 2986) with the first name as CN and every name as a SAN.

    A SPIFFE ID is never a CN (it does not fit the attribute's 64 characters and is
    not a host name), so a CSR for SPIFFE IDs only has an empty subject.
    """
    names = normalize_names(names)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    hosts = [n for n in names if not n.startswith("spiffe://")]
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])] if hosts and len(hosts[0]) <= 64 else []
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(subject))
        .add_extension(
            x509.SubjectAlternativeName([general_name(n) for n in names]), critical=False
        )
    )
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class ParsedCsr:
    csr: x509.CertificateSigningRequest
    key_type: KeyType
    names: frozenset[str]
    common_name: str | None


def parse_csr(pem: str | bytes, *, max_bytes: int = 64 * 1024) -> ParsedCsr:
    """Parse and check a PEM CSR: signature valid, key acceptable, names well formed.

    The names are the SAN dNSName/iPAddress entries plus the CN (which must itself be
    a valid name). Raises :class:`CsrError` explaining the first problem found.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    if len(data) > max_bytes:
        raise CsrError(f"CSR larger than {max_bytes} bytes")
    try:
        csr = x509.load_pem_x509_csr(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise CsrError("CSR is not a valid PEM-encoded PKCS#10 request") from exc
    try:
        key_type = key_type_of(csr.public_key())
        signature_valid = csr.is_signature_valid
    except (ValueError, InvalidSignature, TypeError, UnsupportedAlgorithm) as exc:
        raise CsrError(f"CSR key is not usable: {exc}" if str(exc) else "CSR key is not usable") from exc
    if not signature_valid:
        raise CsrError("CSR signature does not verify")
    names: set[str] = set()
    try:
        common_names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = None
        if len(common_names) > 1:
            raise CsrError("CSR subject has more than one CN")
        if common_names:
            common_name = normalize_name(str(common_names[0].value))
            names.add(common_name)
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = None
        if san is not None:
            for general_name in san:
                if isinstance(general_name, x509.DNSName | x509.IPAddress):
                    names.add(normalize_name(str(general_name.value)))
                elif isinstance(general_name, x509.UniformResourceIdentifier) and general_name.value.startswith(
                        "spiffe://"):
                    names.add(normalize_name(general_name.value))
                else:
                    raise CsrError(
                        f"CSR requests an unsupported name type {type(general_name).__name__}"
                    )
    except CsrError:
        raise
    except NameError_ as exc:
        raise CsrError(str(exc)) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CsrError(f"CSR extensions are malformed: {exc}") from exc
    if not names:
        raise CsrError("CSR names no subject (no CN and no subjectAltName)")
    if len(names) > MAX_NAMES:
        raise CsrError(f"CSR names more than {MAX_NAMES} subjects")
    return ParsedCsr(csr, key_type, frozenset(names), common_name)


def load_certificates(pem: str | bytes) -> list[x509.Certificate]:
    data = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificates(data)


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """Lower-case hex SHA-256 over the DER encoding."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def _spki(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_matches(certificate: x509.Certificate, key: PrivateKey) -> bool:
    return _spki(certificate.public_key()) == _spki(key.public_key())  # type: ignore[arg-type]
