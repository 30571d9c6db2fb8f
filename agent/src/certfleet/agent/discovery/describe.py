"""Describing a certificate for the inventory: the RFC 5280 fields a record reports.

The spellings are the ones operators know from OpenSSL: subject and issuer as RFC 4514
strings, subjectAltName entries as ``DNS:…``/``IP:…``, the serial number in hex, times
in ISO 8601 UTC.
"""

from __future__ import annotations

import hashlib
import warnings

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.utils import CryptographyDeprecationWarning

from certfleet.shared.pki import certificate_fingerprint

from .records import CertificateFacts

__all__ = ["certificate_facts", "spki_sha256"]

# Trust stores still carry old roots with a serial number that is not positive (RFC 5280
# §4.1.2.2 forbids it). Discovery reports them as they are; the warning on every scan
# would say nothing an operator can act on.
warnings.filterwarnings("ignore", message="Parsed a serial number which wasn't positive",
                        category=CryptographyDeprecationWarning, module=r"certfleet\.agent\.discovery\.")

_SAN_PREFIXES: dict[type, str] = {
    x509.DNSName: "DNS", x509.IPAddress: "IP", x509.UniformResourceIdentifier: "URI",
    x509.RFC822Name: "email", x509.RegisteredID: "RID", x509.DirectoryName: "DirName",
    x509.OtherName: "othername",
}


def _san_string(name: x509.GeneralName) -> str:
    """A subjectAltName entry (RFC 5280 §4.2.1.6) spelt as OpenSSL prints it."""
    prefix = _SAN_PREFIXES.get(type(name), type(name).__name__)
    if isinstance(name, x509.DirectoryName):
        return f"{prefix}:{name.value.rfc4514_string()}"
    if isinstance(name, x509.RegisteredID):
        return f"{prefix}:{name.value.dotted_string}"
    if isinstance(name, x509.OtherName):
        return f"{prefix}:{name.type_id.dotted_string}"
    return f"{prefix}:{name.value}"


def _name_string(name_of) -> str:
    try:
        return _clip(name_of().rfc4514_string(), MAX_NAME_CHARACTERS)
    except ValueError:  # an attribute cryptography cannot decode; keep the record anyway
        return ""


def _key_description(certificate: x509.Certificate) -> tuple[str, int | None, str | None]:
    """(algorithm, size, SPKI SHA-256). A key cryptography cannot load (GOST, say) is
    named by its OID and cannot be matched to a private key."""
    try:
        public_key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return certificate.public_key_algorithm_oid.dotted_string, None, None
    match public_key:
        case rsa.RSAPublicKey():
            algorithm, size = "RSA", public_key.key_size
        case ec.EllipticCurvePublicKey():
            algorithm, size = "EC", public_key.curve.key_size
        case ed25519.Ed25519PublicKey():
            algorithm, size = "Ed25519", None
        case ed448.Ed448PublicKey():
            algorithm, size = "Ed448", None
        case dsa.DSAPublicKey():
            algorithm, size = "DSA", public_key.key_size
        case x25519.X25519PublicKey():
            algorithm, size = "X25519", None
        case x448.X448PublicKey():
            algorithm, size = "X448", None
        case _:
            algorithm, size = type(public_key).__name__, None
    return algorithm, size, spki_sha256(public_key)


def spki_sha256(public_key) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _utc(moment) -> str:
    # isoformat pads the year to four digits on every platform; strftime's %Y does not.
    return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


# What a certificate says goes into a record unchanged, within the bounds the agent
# protocol's message accepts: one hostile certificate must not make a report invalid.
MAX_NAME_CHARACTERS = 4096
MAX_SANS = 1000
MAX_SAN_CHARACTERS = 1024
MAX_SERIAL_DIGITS = 130


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def certificate_facts(certificate: x509.Certificate, *, position: int, format: str,
                      key_in_file: bool = False) -> CertificateFacts:
    """The reported fields of ``certificate`` (RFC 5280 §4.1). Extensions that do not
    decode leave ``sans`` empty and ``is_ca`` false rather than losing the record; text
    beyond the protocol's bounds is cut (a name ends in "…")."""
    sans: tuple[str, ...] = ()
    is_ca = False
    try:
        extensions = certificate.extensions
        try:
            names = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = tuple(_clip(_san_string(name), MAX_SAN_CHARACTERS) for name in list(names)[:MAX_SANS])
        except x509.ExtensionNotFound:
            pass
        try:
            is_ca = extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            pass
    except ValueError:
        pass
    algorithm, size, spki = _key_description(certificate)
    return CertificateFacts(
        fingerprint_sha256=certificate_fingerprint(certificate),
        subject=_name_string(lambda: certificate.subject), sans=sans,
        issuer=_name_string(lambda: certificate.issuer),
        serial=_hex(certificate.serial_number), not_before=_utc(certificate.not_valid_before_utc),
        not_after=_utc(certificate.not_valid_after_utc), key_algorithm=algorithm, key_size=size, is_ca=is_ca,
        position=position, format=format, spki_sha256=spki, key_in_file=key_in_file)


def _hex(number: int) -> str:
    digits = f"{abs(number):x}"[:MAX_SERIAL_DIGITS]
    return f"-{digits}" if number < 0 else digits
