"""The ``keystore`` target: the key and chain under one alias in a PKCS#12 or JKS file,
for Java servers (Tomcat, Jetty, Kafka, Elasticsearch) and anything else that reads one.

PKCS#12 is built here with ``cryptography`` (PBES2 with AES-256-CBC and an HMAC-SHA256
MAC, which Java reads since 8u301 and 11.0.12). JKS is Java's own format: the PKCS#12
is converted by ``keytool -importkeystore`` in a private temp dir. The password comes
from the agent's secret file and reaches keytool through its environment
(``-storepass:env``), never its command line.

Neither format is byte-identical twice (random salts, a creation date), so the plan
carries an ``equivalent`` check: the file already there is current when it opens with
the password and holds exactly this key, leaf and chain under the alias. JKS is read
for that with the small reader below (the layout of ``sun.security.provider.
JavaKeyStore`` and ``KeyProtector``). A file that is already current is planned as it
is, so an order that changes nothing writes nothing and starts no JVM.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certfleet.shared.targets import KeystoreTarget

from ..commands import run_argv
from ..secrets import SecretError, Secrets
from .base import Bundle, DeployError
from .pipeline import Plan, PlannedFile, read_nofollow

__all__ = ["MIN_PASSWORD_LENGTH", "jks_private_key_entries", "plan"]

MIN_PASSWORD_LENGTH = 6
"""keytool refuses shorter store passwords; PKCS#12 is held to the same rule."""

KDF_ROUNDS = 10_000
"""PBKDF2 iterations, as in the PKCS#12 files Java writes itself."""

KEYTOOL_TIMEOUT = 120.0

_SOURCE_PASSWORD_VARIABLE = "CERTFLEET_KEYTOOL_SRCSTOREPASS"
_DESTINATION_PASSWORD_VARIABLE = "CERTFLEET_KEYTOOL_DESTSTOREPASS"

_JKS_MAGIC = 0xFEEDFEED
_JKS_WHITENER = b"Mighty Aphrodite"
_JKS_KEY_PROTECTOR_OID = bytes.fromhex("2b060104012a02110101")  # 1.3.6.1.4.1.42.2.17.1.1


class _Material:
    """The bundle, parsed once: what a keystore must hold to be current."""

    def __init__(self, bundle: Bundle) -> None:
        try:
            self.key = serialization.load_pem_private_key(bundle.private_key, password=None)
            self.leaf = x509.load_pem_x509_certificate(bundle.certificate)
            self.chain = x509.load_pem_x509_certificates(bundle.chain) if bundle.chain.strip() else []
        except ValueError as exc:
            raise DeployError(f"the certificate bundle cannot be read: {exc}", step="prepare") from exc
        self.key_der = _pkcs8(self.key)
        self.chain_der = [c.public_bytes(serialization.Encoding.DER) for c in [self.leaf, *self.chain]]


def _pkcs8(key) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pkcs12_bytes(material: _Material, alias: str, password: str) -> bytes:
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .kdf_rounds(KDF_ROUNDS)
                  .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                  .hmac_hash(hashes.SHA256())
                  .build(password.encode()))
    return pkcs12.serialize_key_and_certificates(alias.encode(), material.key, material.leaf, material.chain,
                                                 encryption)


def _pkcs12_holds(data: bytes, material: _Material, alias: str, password: str) -> bool:
    try:
        loaded = pkcs12.load_pkcs12(data, password.encode())
    except ValueError:
        return False
    if loaded.key is None or loaded.cert is None or loaded.cert.friendly_name != alias.encode():
        return False
    held = [loaded.cert.certificate, *(c.certificate for c in loaded.additional_certs)]
    return (_pkcs8(loaded.key) == material.key_der
            and [c.public_bytes(serialization.Encoding.DER) for c in held] == material.chain_der)


# --- reading JKS -----------------------------------------------------------------------

class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.position + size > len(self.data):
            raise ValueError("truncated keystore")
        chunk = self.data[self.position:self.position + size]
        self.position += size
        return chunk

    def int32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def utf(self) -> str:
        # Java's DataOutput.writeUTF: a two-byte length, then modified UTF-8 (the same as
        # UTF-8 for the characters an alias may hold).
        return self.take(struct.unpack(">H", self.take(2))[0]).decode("utf-8", errors="replace")


def _der_element(data: bytes, position: int) -> tuple[int, bytes, int]:
    """One DER TLV at ``position``: (tag, value, position after it)."""
    tag, length = data[position], data[position + 1]
    position += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[position:position + count], "big")
        position += count
    if position + length > len(data):
        raise ValueError("truncated DER")
    return tag, data[position:position + length], position + length


def _jks_unprotect(encrypted_private_key_info: bytes, password_bytes: bytes) -> bytes:
    """The PKCS#8 key inside a JKS key entry (Sun's ``KeyProtector``: a SHA-1 keystream
    seeded with a 20-byte salt, and a SHA-1 check over the plain key)."""
    tag, outer, _ = _der_element(encrypted_private_key_info, 0)
    _, algorithm, position = _der_element(outer, 0)
    _, encrypted, _ = _der_element(outer, position)
    _, oid, _ = _der_element(algorithm, 0)
    if tag != 0x30 or oid != _JKS_KEY_PROTECTOR_OID or len(encrypted) < 40:
        raise ValueError("not a JKS-protected key")
    salt, body, check = encrypted[:20], encrypted[20:-20], encrypted[-20:]
    stream, digest = b"", salt
    while len(stream) < len(body):
        digest = hashlib.sha1(password_bytes + digest).digest()
        stream += digest
    plain = bytes(a ^ b for a, b in zip(body, stream, strict=False))
    if not hmac.compare_digest(hashlib.sha1(password_bytes + plain).digest(), check):
        raise ValueError("the key does not open with this password")
    return plain


def jks_private_key_entries(data: bytes, password: str) -> dict[str, tuple[bytes, list[bytes]]]:
    """The private key entries of a JKS file: alias → (PKCS#8 key, DER chain).

    Raises ``ValueError`` if the data is not JKS, its integrity check fails with
    ``password`` (a wrong password or a modified file), or a key does not open."""
    password_bytes = password.encode("utf-16-be")
    if len(data) < 32:
        raise ValueError("not a JKS keystore")
    body, digest = data[:-20], data[-20:]
    expected = hashlib.sha1(password_bytes + _JKS_WHITENER + body).digest()
    if not hmac.compare_digest(expected, digest):
        raise ValueError("the keystore's integrity check fails with this password")
    reader = _Reader(body)
    if reader.int32() != _JKS_MAGIC or reader.int32() != 2:
        raise ValueError("not a version 2 JKS keystore")
    entries: dict[str, tuple[bytes, list[bytes]]] = {}
    for _ in range(reader.int32()):
        tag, alias = reader.int32(), reader.utf()
        reader.take(8)  # creation date
        if tag == 1:
            protected = reader.take(reader.int32())
            chain = []
            for _ in range(reader.int32()):
                reader.utf()  # certificate type, "X.509"
                chain.append(reader.take(reader.int32()))
            entries[alias] = (_jks_unprotect(protected, password_bytes), chain)
        elif tag == 2:
            reader.utf()
            reader.take(reader.int32())
        else:
            raise ValueError(f"unknown JKS entry tag {tag}")
    if reader.position != len(body):
        raise ValueError("trailing data in keystore")
    return entries


def _jks_holds(data: bytes, material: _Material, alias: str, password: str) -> bool:
    try:
        entries = jks_private_key_entries(data, password)
        # JKS aliases are case-insensitive: keytool stores them in lower case.
        if set(entries) != {alias.lower()}:
            return False
        key, chain = entries[alias.lower()]
        # Java encodes a key its own way; compare the keys, not their encodings.
        return chain == material.chain_der and _pkcs8(serialization.load_der_private_key(key, None)) == material.key_der
    except (ValueError, IndexError, TypeError):
        return False


# --- the plan --------------------------------------------------------------------------

async def _convert_to_jks(p12: bytes, alias: str, password: str) -> bytes:
    directory = Path(tempfile.mkdtemp(prefix="certfleet-keystore-"))  # mode 0700
    try:
        source, destination = directory / "keystore.p12", directory / "keystore.jks"
        source.write_bytes(p12)
        result = await run_argv(
            ["keytool", "-importkeystore", "-noprompt",
             "-srckeystore", str(source), "-srcstoretype", "PKCS12", "-srcalias", alias,
             "-srcstorepass:env", _SOURCE_PASSWORD_VARIABLE,
             "-destkeystore", str(destination), "-deststoretype", "JKS", "-destalias", alias,
             "-deststorepass:env", _DESTINATION_PASSWORD_VARIABLE],
            timeout=KEYTOOL_TIMEOUT,
            env={_SOURCE_PASSWORD_VARIABLE: password, _DESTINATION_PASSWORD_VARIABLE: password})
        if not result.ok or not destination.exists():
            detail = result.describe().replace(password, "********")
            raise DeployError(f"keytool could not build the JKS keystore: {detail}", step="prepare")
        return destination.read_bytes()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def plan(target: KeystoreTarget, bundle: Bundle, secrets: Secrets) -> Plan:
    """The keystore file for ``target``.

    Raises :class:`DeployError` (step ``prepare``) when the password secret cannot be
    read, is too short or not printable ASCII, the bundle cannot be parsed, or keytool
    fails."""
    try:
        password = secrets.get(target.password_secret)
    except SecretError as exc:
        raise DeployError(f"the keystore password: {exc}", step="prepare") from exc
    if len(password) < MIN_PASSWORD_LENGTH:
        raise DeployError(f"the keystore password (secret {target.password_secret!r}) is shorter than"
                          f" {MIN_PASSWORD_LENGTH} characters, which keytool refuses", step="prepare")
    if not (password.isascii() and password.isprintable()):
        # Java and OpenSSL turn other characters into different PKCS#12 keys: Java would
        # report a wrong password for a file OpenSSL wrote with the right one.
        raise DeployError(f"the keystore password (secret {target.password_secret!r}) must be printable ASCII:"
                          " Java cannot open a PKCS#12 file made with other characters", step="prepare")
    material = _Material(bundle)
    holds: Callable[[bytes, _Material, str, str], bool] = _jks_holds if target.format == "jks" else _pkcs12_holds
    try:
        existing = read_nofollow(Path(target.path))
    except OSError:
        existing = None  # the pipeline reports what is wrong with the path
    if existing is not None and holds(existing, material, target.alias, password):
        # Planning the file as it is makes the pipeline's SHA-256 check see it as current.
        content = existing
    else:
        content = pkcs12_bytes(material, target.alias, password)
        if target.format == "jks":
            content = await _convert_to_jks(content, target.alias, password)

    def equivalent(planned: PlannedFile, existing: bytes) -> bool:
        return holds(existing, material, target.alias, password)

    return Plan(kind="keystore",
                files=(PlannedFile(Path(target.path), content, target.mode, private=True),),
                owner=target.owner, group=target.group,
                reload=tuple(target.reload_command) if target.reload_command else None,
                verify=target.verify, equivalent=equivalent)
