"""A generated tree of certificate files, junk and traps for the discovery tests,
with the records a correct scan must report for it.

Everything is made here with ``cryptography`` (and keytool for the Java keystore, when
it is installed), so the expected fields come from the objects that were written,
not from the code under test.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import NameOID

KNOWN_PASSWORD = "site-store-secret"
UNKNOWN_PASSWORD = "nobody-told-the-agent"
SITES = 400
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _utc(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Issued:
    certificate: x509.Certificate
    key: object
    fields: dict


@dataclass
class Tree:
    root: Path
    expected: dict[tuple[str, int], dict] = field(default_factory=dict)
    problems: set[tuple[str, str]] = field(default_factory=set)
    junk: list[str] = field(default_factory=list)
    uncacheable: set[str] = field(default_factory=set)
    """Files whose parse depends on the passwords, so every scan reads them again."""
    changeable: str = ""
    """A lone certificate file (no key beside it) that tests may replace."""
    changeable_key: bytes = b""
    """The private key of the certificate in ``changeable``, PEM."""

    def expect(self, path: Path, position: int, issued: Issued, *, format: str, has_private_key: bool) -> None:
        self.expected[(str(path), position)] = {**issued.fields, "path": str(path), "position": position,
                                                "format": format, "has_private_key": has_private_key}


class Factory:
    def __init__(self, *, with_rsa: bool = True) -> None:
        self.serial = 1000
        self.rsa_keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048)
                         for _ in range(2 if with_rsa else 0)]
        self.ca = self.issue("Discovery Test Root", ca=True)
        self.intermediate = self.issue("Discovery Test Intermediate", ca=True, issuer=self.ca)

    def issue(self, name: str, *, ca: bool = False, issuer: Issued | None = None, key=None,
              ip: str | None = None) -> Issued:
        self.serial += 1
        key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfleet tests"),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_name = issuer.certificate.subject if issuer else subject
        signer = issuer.key if issuer else key
        not_before = NOW - datetime.timedelta(days=self.serial % 30)
        not_after = not_before + datetime.timedelta(days=90 + self.serial % 7)
        sans: list[x509.GeneralName] = []
        san_strings: list[str] = []
        if not ca:
            sans.append(x509.DNSName(name))
            san_strings.append(f"DNS:{name}")
            if ip:
                sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
                san_strings.append(f"IP:{ip}")
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
                   .public_key(key.public_key()).serial_number(self.serial)
                   .not_valid_before(not_before).not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        certificate = builder.sign(signer, algorithm)
        public = key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            key_algorithm, key_size = "RSA", public.key_size
        elif isinstance(public, ec.EllipticCurvePublicKey):
            key_algorithm, key_size = "EC", public.curve.key_size
        else:
            key_algorithm, key_size = "Ed25519", None
        fields = {
            "fingerprint_sha256": hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest(),
            "subject": f"CN={name},O=certfleet tests",
            "sans": san_strings,
            "issuer": issuer_name.rfc4514_string(),
            "serial": f"{self.serial:x}",
            "not_before": _utc(not_before),
            "not_after": _utc(not_after),
            "key_algorithm": key_algorithm,
            "key_size": key_size,
            "is_ca": ca,
        }
        return Issued(certificate, key, fields)


def pem(issued: Issued) -> bytes:
    return issued.certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key, *, traditional: bool = False, password: str | None = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    form = serialization.PrivateFormat.TraditionalOpenSSL if traditional else serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, form, encryption)


def _site(tree: Tree, factory: Factory, index: int, directory: Path) -> None:
    name = f"site{index:04d}.example.test"
    kind = index % 12
    leaf = factory.issue(name, issuer=factory.intermediate, ip=f"10.0.{index // 250}.{index % 250 + 1}",
                         key=factory.rsa_keys[index % 2] if kind == 3 else
                         (ed25519.Ed25519PrivateKey.generate() if kind == 4 else None))
    if kind in (0, 3, 4):  # certbot-style: fullchain + privkey beside it
        (directory / "fullchain.pem").write_bytes(pem(leaf) + pem(factory.intermediate))
        (directory / "privkey.pem").write_bytes(key_pem(leaf.key))
        tree.expect(directory / "fullchain.pem", 0, leaf, format="pem", has_private_key=True)
        tree.expect(directory / "fullchain.pem", 1, factory.intermediate, format="pem", has_private_key=False)
    elif kind == 1:  # .crt in DER with a traditional-format .key
        (directory / "site.crt").write_bytes(leaf.certificate.public_bytes(serialization.Encoding.DER))
        (directory / "site.key").write_bytes(key_pem(leaf.key, traditional=True))
        tree.expect(directory / "site.crt", 0, leaf, format="der", has_private_key=True)
    elif kind == 2:  # a key that belongs to another certificate
        (directory / "cert.pem").write_bytes(pem(leaf))
        (directory / "cert-key.pem").write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1())))
        tree.expect(directory / "cert.pem", 0, leaf, format="pem", has_private_key=False)
    elif kind == 5:  # key and certificate in one file, explanatory text around them
        (directory / "combined.pem").write_bytes(
            b"Subject: " + name.encode() + b"\n" + key_pem(leaf.key) + b"\nissued by the test CA\n" + pem(leaf))
        tree.expect(directory / "combined.pem", 0, leaf, format="pem", has_private_key=True)
    elif kind == 6:  # PKCS#12 without a password
        (directory / "store.p12").write_bytes(pkcs12.serialize_key_and_certificates(
            b"site", leaf.key, leaf.certificate, [factory.intermediate.certificate], serialization.NoEncryption()))
        tree.expect(directory / "store.p12", 0, leaf, format="pkcs12", has_private_key=True)
        tree.expect(directory / "store.p12", 1, factory.intermediate, format="pkcs12", has_private_key=False)
    elif kind == 7:  # PKCS#12 with a password the agent holds
        path = directory / "store.pfx"
        path.write_bytes(pkcs12.serialize_key_and_certificates(
            b"site", leaf.key, leaf.certificate, None,
            serialization.BestAvailableEncryption(KNOWN_PASSWORD.encode())))
        tree.expect(path, 0, leaf, format="pkcs12", has_private_key=True)
        tree.uncacheable.add(str(path))
    elif kind == 8:  # PKCS#12 with a password the agent does not hold
        path = directory / "locked.p12"
        path.write_bytes(pkcs12.serialize_key_and_certificates(
            b"site", leaf.key, leaf.certificate, None,
            serialization.BestAvailableEncryption(UNKNOWN_PASSWORD.encode())))
        tree.problems.add((str(path), "encrypted"))
        tree.uncacheable.add(str(path))
    elif kind == 9:  # a bundle of three, and an encrypted key the agent can open
        extra = factory.issue(f"extra.{name}", issuer=factory.ca)
        (directory / "bundle.pem").write_bytes(pem(leaf) + b"# next\n" + pem(extra) + pem(factory.ca))
        (directory / "bundle.key").write_bytes(key_pem(leaf.key, password=KNOWN_PASSWORD))
        tree.expect(directory / "bundle.pem", 0, leaf, format="pem", has_private_key=True)
        tree.expect(directory / "bundle.pem", 1, extra, format="pem", has_private_key=False)
        tree.expect(directory / "bundle.pem", 2, factory.ca, format="pem", has_private_key=False)
        tree.uncacheable.add(str(directory / "bundle.key"))
    elif kind == 10:  # an encrypted key the agent cannot open: the match is unknown
        (directory / "cert.pem").write_bytes(pem(leaf))
        (directory / "cert.key").write_bytes(key_pem(leaf.key, password=UNKNOWN_PASSWORD))
        tree.expect(directory / "cert.pem", 0, leaf, format="pem", has_private_key=False)
        tree.problems.add((str(directory / "cert.key"), "encrypted"))
        tree.uncacheable.add(str(directory / "cert.key"))
    else:  # PKCS#7 bundles, PEM and DER, and a PKCS#12 holding certificates only
        (directory / "chain.p7b").write_bytes(pkcs7.serialize_certificates(
            [leaf.certificate, factory.intermediate.certificate], serialization.Encoding.PEM))
        (directory / "chain.p7c").write_bytes(pkcs7.serialize_certificates(
            [leaf.certificate], serialization.Encoding.DER))
        (directory / "trust.p12").write_bytes(pkcs12.serialize_key_and_certificates(
            None, None, None, [factory.ca.certificate], serialization.NoEncryption()))
        # PKCS#7 holds a SET OF certificates, which DER sorts: the file's order is
        # whatever the serialiser wrote.
        for position, certificate in enumerate(pkcs7.load_pem_pkcs7_certificates((directory / "chain.p7b").read_bytes())):
            issued = leaf if certificate == leaf.certificate else factory.intermediate
            tree.expect(directory / "chain.p7b", position, issued, format="pem", has_private_key=False)
        tree.expect(directory / "chain.p7c", 0, leaf, format="der", has_private_key=False)
        tree.expect(directory / "trust.p12", 0, factory.ca, format="pkcs12", has_private_key=False)
    _junk(tree, directory, index)


def _junk(tree: Tree, directory: Path, index: int) -> None:
    files = {
        "README": b"Certificates for this site are managed elsewhere.\n",
        "nginx.conf": b"server {\n  ssl_certificate /etc/ssl/site.pem;\n}\n",
        "random.bin": hashlib.sha512(str(index).encode()).digest() * 40 + b"\x00",
        "empty.pem": b"",
        "mentions.txt": b"paste the -----BEGIN CERTIFICATE----- line here, but this is not one\n",
        "zero.der": b"0 is a text file that starts with the SEQUENCE tag\n",
    }
    if index % 3 == 0:
        files["unterminated.pem"] = b"-----BEGIN CERTIFICATE-----\nMIIB\n" * 3
    for name, content in files.items():
        (directory / name).write_bytes(content)
        tree.junk.append(str(directory / name))


def build_tree(root: Path, *, with_keystore: bool) -> Tree:
    """About 3,000 files under ``root``; relative symlinks only, so a copy keeps them."""
    tree = Tree(root)
    factory = Factory()
    sites = root / "sites"
    for index in range(SITES):
        directory = sites / f"site{index:04d}"
        directory.mkdir(parents=True)
        _site(tree, factory, index, directory)
    # A lone certificate for tests that replace a file.
    lone = factory.issue("lone.example.test", issuer=factory.intermediate)
    (root / "lone.pem").write_bytes(pem(lone))
    tree.expect(root / "lone.pem", 0, lone, format="pem", has_private_key=False)
    tree.changeable = str(root / "lone.pem")
    tree.changeable_key = key_pem(lone.key)
    # Deep, but within the depth limit.
    deep = root.joinpath("deep", *"abcdefgh")
    deep.mkdir(parents=True)
    bottom = factory.issue("deep.example.test", issuer=factory.intermediate)
    (deep / "bottom.pem").write_bytes(pem(bottom))
    tree.expect(deep / "bottom.pem", 0, bottom, format="pem", has_private_key=False)
    # Symlinks: to a file (reported where found, too), dangling, and two loops.
    links = root / "links"
    links.mkdir()
    (links / "current.pem").symlink_to("../sites/site0002/cert.pem")
    tree.expected[(str(links / "current.pem"), 0)] = {
        **tree.expected[(str(sites / "site0002" / "cert.pem"), 0)], "path": str(links / "current.pem")}
    (links / "gone.pem").symlink_to("missing.pem")
    tree.problems.add((str(links / "gone.pem"), "broken-symlink"))
    (sites / "site0000" / "up").symlink_to("..")
    tree.problems.add((str(sites / "site0000" / "up"), "symlink-loop"))
    (links / "self").symlink_to(".")
    tree.problems.add((str(links / "self"), "symlink-loop"))
    # Things that must never be opened or read.
    special = root / "special"
    special.mkdir()
    os.mkfifo(special / "pipe.pem")
    big = special / "huge.pem"
    _huge(big, pem(factory.issue("huge.example.test", issuer=factory.ca)))
    tree.problems.add((str(big), "too-large"))
    if with_keystore:
        _java_keystore(tree, factory, root / "java")
    return tree


def _huge(path: Path, certificate_pem: bytes) -> None:
    """50 MB that begin with a valid certificate: found only if the scan read it.
    Sparse after the certificate, so it is made at once and takes no space."""
    with path.open("wb") as handle:
        handle.write(certificate_pem)
        handle.truncate(50 * 1024 * 1024)


def _java_keystore(tree: Tree, factory: Factory, directory: Path) -> None:
    """A JKS store with one key entry (leaf + intermediate) made by keytool from a
    PKCS#12 file, as an operator would convert one."""
    directory.mkdir()
    leaf = factory.issue("jks.example.test", issuer=factory.intermediate)
    source = directory / "source.p12.tmp"
    source.write_bytes(pkcs12.serialize_key_and_certificates(
        b"site", leaf.key, leaf.certificate, [factory.intermediate.certificate],
        serialization.BestAvailableEncryption(KNOWN_PASSWORD.encode())))
    store = directory / "keystore.jks"
    completed = subprocess.run(
        ["keytool", "-importkeystore", "-noprompt", "-srckeystore", str(source), "-srcstoretype", "PKCS12",
         "-srcstorepass:env", "PASS", "-destkeystore", str(store), "-deststoretype", "JKS",
         "-deststorepass:env", "PASS"],
        env={**os.environ, "PASS": KNOWN_PASSWORD}, capture_output=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    source.unlink()
    tree.expect(store, 0, leaf, format="jks", has_private_key=True)
    tree.expect(store, 1, factory.intermediate, format="jks", has_private_key=False)


def copy_tree(tree: Tree, destination: Path) -> Tree:
    """The same tree at another place (FIFO included), with the expectations moved."""
    shutil.copytree(tree.root, destination, symlinks=True, ignore=shutil.ignore_patterns("pipe.pem", "huge.pem"))
    os.mkfifo(destination / "special" / "pipe.pem")
    with (tree.root / "special" / "huge.pem").open("rb") as original:
        _huge(destination / "special" / "huge.pem", original.read(4096).rstrip(b"\0"))

    def moved(path: str) -> str:
        return str(destination / Path(path).relative_to(tree.root))

    copy = Tree(destination, changeable=moved(tree.changeable), changeable_key=tree.changeable_key)
    copy.expected = {(moved(path), position): {**record, "path": moved(path)}
                     for (path, position), record in tree.expected.items()}
    copy.problems = {(moved(path), kind) for path, kind in tree.problems}
    copy.junk = [moved(path) for path in tree.junk]
    copy.uncacheable = {moved(path) for path in tree.uncacheable}
    return copy
