"""Recognising and parsing certificate files: PEM, DER, PKCS#7 and PKCS#12, bytes in,
:class:`ParsedFile` out. Java keystores are listed by keytool (see ``jks.py``).

A scan meets mostly files that hold no certificate, so :func:`sniff` decides from the
first bytes whether a file is worth reading at all, and nothing here can be made to run
for long: the PEM block finder is a single forward pass (no backtracking regular
expression), and every parser gets bytes already bounded by the scan's size limit.
"""

from __future__ import annotations

import binascii
import enum
from collections.abc import Iterator, Sequence

import msgspec
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from .describe import certificate_facts, spki_sha256
from .records import CertificateFacts, ParsedFile, ProblemKind, digest_passwords

__all__ = ["Content", "parse_content", "pem_blocks", "sniff"]

HEAD_BYTES = 8192
"""How much of a file :func:`sniff` looks at before deciding to read the rest."""

MAX_PROBLEMS_PER_FILE = 10
"""A file of thousands of damaged blocks is one problem worth a few lines, not thousands."""

_JAVA_KEYSTORE_MAGICS = (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce")  # JKS, JCEKS
_PEM_BEGIN = b"-----BEGIN "
_PEM_END = b"-----END "
_DASHES = b"-----"
_MAX_LABEL = 64

_CERTIFICATE_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}
_PKCS7_LABELS = {b"PKCS7", b"CMS"}
_KEY_LABELS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"DSA PRIVATE KEY",
               b"ENCRYPTED PRIVATE KEY"}
_SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")  # 1.2.840.113549.1.7.2, RFC 5652 §5.1


class Content(enum.Enum):
    """What the first bytes of a file say it may be."""

    TEXT = "text"
    DER = "der"
    JAVA_KEYSTORE = "java-keystore"
    BINARY = "binary"


def sniff(head: bytes) -> Content:
    """Classify a file from its first :data:`HEAD_BYTES`.

    PEM (RFC 7468) is text, so a head with a NUL byte and no PEM boundary is binary
    junk and the rest of the file is never read. DER structures that can hold
    certificates all start with a SEQUENCE tag (RFC 5280 §4.1, RFC 7292 §4, RFC 5652
    §3)."""
    if head.startswith(_JAVA_KEYSTORE_MAGICS):
        return Content.JAVA_KEYSTORE
    if head[:1] == b"\x30" and _der_length(head) is not None:
        return Content.DER
    if _PEM_BEGIN in head or b"\x00" not in head:
        return Content.TEXT
    return Content.BINARY


def _der_length(data: bytes) -> tuple[int, int | None] | None:
    """(header length, content length or ``None`` for BER indefinite length) of the
    outer TLV, or ``None`` if the header is not a plausible one."""
    if len(data) < 2:
        return None
    first = data[1]
    if first < 0x80:
        return 2, first
    if first == 0x80:
        return 2, None
    count = first & 0x7F
    if count > 4 or len(data) < 2 + count:
        return None
    return 2 + count, int.from_bytes(data[2:2 + count], "big")


def pem_blocks(data: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(label, whole block, base64 body) of every well-formed PEM block (RFC 7468 §2),
    in order. Explanatory text between blocks is skipped, as §2 allows; a block whose
    end line is missing or carries another label is skipped too.

    Every search starts where the previous one of its kind stopped (an end line found
    once serves every unterminated block before it), so the pass is linear in the size
    of the data whatever the data is."""
    position, end = 0, -1
    while (begin := data.find(_PEM_BEGIN, position)) != -1:
        label_start = begin + len(_PEM_BEGIN)
        label_end = data.find(_DASHES, label_start, label_start + _MAX_LABEL + 1)
        if label_end == -1:
            position = label_start
            continue
        label = data[label_start:label_end]
        body_start = label_end + len(_DASHES)
        if end < body_start:
            end = data.find(_PEM_END, body_start)
            if end == -1:
                return
        next_begin = data.find(_PEM_BEGIN, body_start, end)
        if next_begin != -1:  # this block never ends: start again at the next one
            position = next_begin
            continue
        end_label_start = end + len(_PEM_END)
        end_label_end = data.find(_DASHES, end_label_start, end_label_start + _MAX_LABEL + 1)
        if end_label_end == -1:
            position = end_label_start
            continue
        position = end_label_end + len(_DASHES)
        if data[end_label_start:end_label_end] == label:
            yield label, data[begin:position], data[body_start:end]


class _Collector:
    """Certificates and keys of one file, matched to each other once all are read."""

    def __init__(self, format: str, passwords: Sequence[bytes]) -> None:
        self.format = format
        self.passwords = passwords
        self.certificates: list[tuple[int, x509.Certificate, str]] = []
        self.key_spkis: list[str] = []
        self.problems: list[tuple[ProblemKind, str]] = []
        self.used_password = False
        self.position = 0
        self.malformed_count = 0

    def certificate(self, certificate: x509.Certificate, format: str | None = None) -> None:
        self.certificates.append((self.position, certificate, format or self.format))
        self.position += 1

    def malformed(self, what: str, error: Exception) -> None:
        self.malformed_count += 1
        if self.malformed_count <= MAX_PROBLEMS_PER_FILE:
            self.problems.append((ProblemKind.MALFORMED,
                                  f"{what} at position {self.position} cannot be parsed: {error}"))
        self.position += 1

    def result(self) -> ParsedFile:
        if self.malformed_count > MAX_PROBLEMS_PER_FILE:
            self.problems.append((ProblemKind.MALFORMED, f"{self.malformed_count - MAX_PROBLEMS_PER_FILE}"
                                  " more certificates in this file cannot be parsed"))
        keys = set(self.key_spkis)
        facts = []
        for position, certificate, format in self.certificates:
            try:
                described = certificate_facts(certificate, position=position, format=format)
            except ValueError as exc:  # dates or serial that do not decode
                self.problems.append((ProblemKind.MALFORMED, f"certificate at position {position}: {exc}"))
                continue
            facts.append(_with_key(described, described.spki_sha256 in keys))
        return ParsedFile(certificates=tuple(facts), key_spkis=tuple(sorted(keys)), problems=tuple(self.problems),
                          passwords_digest=digest_passwords(self.passwords) if self.used_password else None)


def _with_key(facts: CertificateFacts, key_in_file: bool) -> CertificateFacts:
    return msgspec.structs.replace(facts, key_in_file=True) if key_in_file else facts


def _load_key(block: bytes, *, der: bool, passwords: Sequence[bytes], collector: _Collector) -> None:
    """Record the public half of a private key (PKCS#8, RFC 5958; PKCS#1; SEC 1),
    trying each password when it is encrypted. The key object is dropped at once.

    A block this library cannot read as a key is ignored: it matches no certificate,
    and a file is never a problem merely for holding something that is not one."""
    load = serialization.load_der_private_key if der else serialization.load_pem_private_key
    # Only the public half is needed, so the costly RSA consistency check (which guards
    # signing with a damaged key) is skipped.
    try:
        key = load(block, None, unsafe_skip_rsa_key_validation=True)
    except TypeError:  # encrypted
        key = None
    except (ValueError, UnsupportedAlgorithm):
        return
    if key is None:
        collector.used_password = True
        for password in passwords:
            try:
                key = load(block, password, unsafe_skip_rsa_key_validation=True)
                break
            except (ValueError, TypeError, UnsupportedAlgorithm):
                continue
    if key is None:
        collector.problems.append((ProblemKind.ENCRYPTED, "encrypted private key, no matching password"))
        return
    collector.key_spkis.append(spki_sha256(key.public_key()))


def _trusted_certificate(der: bytes) -> bytes:
    """OpenSSL's ``TRUSTED CERTIFICATE`` is a certificate followed by trust settings:
    keep the first DER element only."""
    header = _der_length(der)
    if header is None or header[1] is None:
        return der
    return der[:header[0] + header[1]]


def _parse_pem(data: bytes, passwords: Sequence[bytes]) -> _Collector:
    collector = _Collector("pem", passwords)
    for label, block, body in pem_blocks(data):
        if label in _CERTIFICATE_LABELS:
            try:
                der = binascii.a2b_base64(body)
                if label == b"TRUSTED CERTIFICATE":
                    der = _trusted_certificate(der)
                collector.certificate(x509.load_der_x509_certificate(der))
            except (ValueError, binascii.Error) as exc:
                collector.malformed("certificate", exc)
        elif label in _PKCS7_LABELS:
            try:
                for certificate in pkcs7.load_pem_pkcs7_certificates(block):
                    collector.certificate(certificate)
            except ValueError:
                pass  # a signed message without certificates, or one in a form we do not read
        elif label in _KEY_LABELS:
            _load_key(block, der=False, passwords=passwords, collector=collector)
    return collector


def _parse_der(data: bytes, passwords: Sequence[bytes]) -> _Collector | None:
    header = _der_length(data)
    if header is None:
        return None
    start, length = header
    if length is not None:
        if data[start + length:].strip():
            return None  # a DER file is one structure (some tools add a newline); this is something else
        data = data[:start + length]
    inner = data[start:start + 16]
    if inner[:3] == b"\x02\x01\x03":  # PFX version 3, RFC 7292 §4
        return _parse_pkcs12(data, passwords)
    if length is None:
        return None
    if inner[:1] == b"\x30":
        collector = _Collector("der", passwords)
        try:
            collector.certificate(x509.load_der_x509_certificate(data))
        except ValueError:
            return None  # a CRL, a CSR, a public key: not a certificate
        return collector
    if inner.startswith(_SIGNED_DATA_OID):
        collector = _Collector("der", passwords)
        try:
            for certificate in pkcs7.load_der_pkcs7_certificates(data):
                collector.certificate(certificate)
        except ValueError:
            return None
        return collector
    if inner[:3] in (b"\x02\x01\x00", b"\x02\x01\x01"):  # PKCS#8 / PKCS#1 / SEC 1 key
        collector = _Collector("der", passwords)
        _load_key(data, der=True, passwords=passwords, collector=collector)
        return collector
    return None


def _parse_pkcs12(data: bytes, passwords: Sequence[bytes]) -> _Collector:
    """Open a PFX (RFC 7292) without a password, then with each given one. The MAC
    covers everything, so a file that opens with no password is also complete."""
    collector = _Collector("pkcs12", passwords)
    for password in (None, *passwords):
        collector.used_password = collector.used_password or password is not None
        try:
            loaded = pkcs12.load_pkcs12(data, password)
        except (ValueError, UnsupportedAlgorithm):
            continue
        if loaded.key is not None:
            collector.key_spkis.append(spki_sha256(loaded.key.public_key()))
        held = ([loaded.cert] if loaded.cert is not None else []) + list(loaded.additional_certs)
        for entry in held:
            collector.certificate(entry.certificate)
        return collector
    collector.used_password = True
    collector.problems.append((ProblemKind.ENCRYPTED, "PKCS#12 file is encrypted, no matching password"))
    return collector


def parse_content(data: bytes, *, passwords: Sequence[bytes] = ()) -> ParsedFile:
    """Everything certificate-like in a file's bytes (not a Java keystore: see
    :func:`sniff`). A file that holds none gives an empty :class:`ParsedFile`."""
    kind = sniff(data[:HEAD_BYTES])
    collector = _parse_der(data, passwords) if kind is Content.DER else None
    # A text file may start with "0" (0x30, a SEQUENCE tag) and still hold PEM blocks.
    if collector is None and kind is not Content.BINARY and _PEM_BEGIN in data:
        collector = _parse_pem(data, passwords)
    return collector.result() if collector is not None else ParsedFile()
