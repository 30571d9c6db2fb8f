"""First start: everything a coordinator needs before it can serve.

In an empty data dir and database this creates the master key (0600), a root CA and
an issuing CA (P-256, keys sealed under the master key), the Ed25519 work-order
signing key (sealed), the one-time bootstrap token (stored as a hash), and the
coordinator's TLS certificate from the issuing CA. On later starts it loads them and
proves the master key opens what the database holds; a wrong key stops the start.

Several coordinators may share one PostgreSQL database: the first to commit the
``initialized`` marker wins and the others load what it created.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from certfleet.shared import jws, wire
from certfleet.shared.pki import KeyType, generate_private_key, load_private_key, private_key_pem

from . import audit
from .auth import credentials
from .ca.authority import CertificateAuthority, IssuerLinks, create_root
from .secretbox import MasterKey, MasterKeyError, audit_chain_key
from .settings import Settings
from .storage import BootstrapTokens, Conflict, Database, Issuers, Meta, Profiles, SigningKeys, Tx, migrate

__all__ = ["CoordinatorKeys", "InitializationError", "initialize"]

ROOT_NAME = "root"
ISSUING_NAME = "issuing"
WORK_ORDER_PURPOSE = "work-order"
DEFAULT_PROFILE_ID = "prf_default"
_CHECK_PLAINTEXT = b"certfleet master key check"


class InitializationError(Exception):
    """The coordinator cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class CoordinatorKeys:
    root: x509.Certificate
    issuing: CertificateAuthority
    issuing_id: str
    work_order_kid: str
    work_order_key: ed25519.Ed25519PrivateKey
    bootstrap_token: str | None
    """Set only on the start that created it and when it was not preset: print it."""
    master: MasterKey


def _seal_pem(master: MasterKey, key: object, context: str) -> str:
    return master.seal(private_key_pem(key), context=context)  # type: ignore[arg-type]


def _create(tx: Tx, master: MasterKey, settings: Settings, now: int, pki_base: str) -> str | None:
    meta = Meta(tx)
    if meta.get("initialized") is not None:
        return None
    root = create_root("certfleet root CA", now=now)
    # The same CRL, OCSP and CA-issuer links as every CA created later through the API.
    issuing = root.create_subordinate("certfleet issuing CA", now=now,
                                      links=IssuerLinks.under(pki_base, "iss_root"))
    issuers = Issuers(tx)
    for id, name, kind, parent, authority, chain in (
        ("iss_root", ROOT_NAME, "root", None, root, ""),
        ("iss_issuing", ISSUING_NAME, "intermediate", "iss_root", issuing, issuing.certificate_pem.decode()),
    ):
        issuers.insert(
            id=id, name=name, kind=kind, status="active", parent_id=parent,
            certificate_pem=authority.certificate_pem.decode(), chain_pem=chain,
            sealed_key=_seal_pem(master, authority.key, f"issuer:{id}"), now=now,
        )
    order_key = ed25519.Ed25519PrivateKey.generate()
    kid = jws.key_id(order_key.public_key())
    SigningKeys(tx).insert(
        kid=kid,
        purpose=WORK_ORDER_PURPOSE,
        public_key=jws.public_key_raw(order_key.public_key()),
        sealed_key=_seal_pem(master, order_key, f"signing-key:{kid}"),
        now=now,
    )
    Profiles(tx).insert(id=DEFAULT_PROFILE_ID, name="default", issuer_id="iss_issuing",
                        policy=wire.encode(wire.ProfilePolicy()).decode(), now=now)
    token = settings.bootstrap_token or credentials.mint(credentials.BOOTSTRAP).token
    BootstrapTokens(tx).insert(id="bootstrap", secret_hash=credentials.hash_secret(token), now=now)
    meta.insert("master_key_check", master.seal(_CHECK_PLAINTEXT, context="master-key-check"))
    meta.insert("initialized", str(now))
    return None if settings.bootstrap_token else token


class WrongMasterKey(InitializationError):
    """The master key does not open the database's key check value: it is another key."""


def check_master_key(tx: Tx, master: MasterKey) -> None:
    """Prove ``master`` is the key this database was initialized with, by opening the
    key check value sealed under it at first start.

    Raises :class:`WrongMasterKey` if it is not, :class:`InitializationError` if the
    database was never initialized."""
    check = Meta(tx).get("master_key_check")
    if check is None:
        raise InitializationError("the database is not initialized")
    try:
        if master.open(check, context="master-key-check") != _CHECK_PLAINTEXT:
            raise MasterKeyError("master key check failed")
    except MasterKeyError as exc:
        raise WrongMasterKey(
            "the master key does not open this database's secrets: start with the data dir"
            " (master.key) or CERTFLEET_MASTER_KEY that initialized it"
        ) from exc


def _load(tx: Tx, master: MasterKey) -> tuple[x509.Certificate, CertificateAuthority, str, str, ed25519.Ed25519PrivateKey]:
    check_master_key(tx, master)
    issuers = Issuers(tx)
    root_row = issuers.get_by_name(ROOT_NAME)
    issuing_row = issuers.get_by_name(ISSUING_NAME)
    issuing_key = load_private_key(master.open(issuing_row["sealed_key"], context=f"issuer:{issuing_row['id']}"))
    issuing = CertificateAuthority(x509.load_pem_x509_certificate(issuing_row["certificate_pem"].encode()), issuing_key)
    root = x509.load_pem_x509_certificate(root_row["certificate_pem"].encode())
    key_row = SigningKeys(tx).active(WORK_ORDER_PURPOSE)[-1]
    order_key = load_private_key(master.open(key_row["sealed_key"], context=f"signing-key:{key_row['kid']}"))
    if not isinstance(order_key, ed25519.Ed25519PrivateKey):
        raise InitializationError("the work-order key is not Ed25519")
    return root, issuing, issuing_row["id"], key_row["kid"], order_key


def _write_private(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def ensure_tls(settings: Settings, keys: CoordinatorKeys, now: int) -> tuple[Path, Path]:
    """The coordinator's serving certificate and key; issued on first start.

    Existing files are kept (an operator may put their own there) but must load as
    a matching pair, or the coordinator refuses to start.
    """
    tls_dir = settings.tls_dir
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
    (tls_dir / "ca.pem").write_bytes(keys.root.public_bytes(serialization.Encoding.PEM))
    if not cert_path.exists() and not key_path.exists():
        key = generate_private_key(KeyType.EC_P256)
        names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), *settings.tls_sans]
        unique: list[str] = []
        for name in names:
            try:
                name = str(ipaddress.ip_address(name))
            except ValueError:
                name = name.lower()
            if name and name not in unique:
                unique.append(name)
        issued = keys.issuing.issue(key.public_key(), unique, lifetime_seconds=365 * 86400, now=now)
        _write_private(key_path, private_key_pem(key), 0o600)
        chain = issued.pem.encode() + keys.issuing.certificate_pem
        _write_private(cert_path, chain, 0o644)
    check_tls_pair(cert_path, key_path)
    return cert_path, key_path


def check_tls_pair(cert_path: Path, key_path: Path) -> None:
    """Refuse an unusable serving certificate: unreadable, mismatched or expired."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        leaf = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise InitializationError(f"unusable TLS certificate or key in {cert_path.parent}: {exc}") from exc
    if leaf.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        raise InitializationError(f"the TLS certificate {cert_path} has expired")


async def initialize(settings: Settings, database: Database, *, now: int, pki_base: str) -> CoordinatorKeys:
    """``pki_base``: where relying parties reach the PKI endpoints (``Coordinator.pki_base()``),
    written into the issuing CA's certificate when this start creates it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        master = MasterKey.load_or_create(settings.data_dir / "master.key", settings.master_key)
    except MasterKeyError as exc:
        raise InitializationError(str(exc)) from exc
    await migrate(database, now=now)
    try:
        bootstrap_token = await database.transact(lambda tx: _create(tx, master, settings, now, pki_base))
    except Conflict:
        bootstrap_token = None  # another coordinator initialized the database first
    root, issuing, issuing_id, kid, order_key = await database.transact(lambda tx: _load(tx, master))
    if settings.bootstrap_token:
        await database.transact(lambda tx: _replace_bootstrap_token(
            tx, settings.bootstrap_token, master, now=now, how="preset at a later start", quiet=True))
    return CoordinatorKeys(root, issuing, issuing_id, kid, order_key, bootstrap_token, master)


def _replace_bootstrap_token(tx: Tx, token: str, master: MasterKey, *, now: int, how: str,
                             quiet: bool = False) -> None:
    """Make ``token`` the bootstrap token while it has not been exchanged, recorded in
    the audit trail. Raises :class:`InitializationError` once an admin exists, unless
    ``quiet`` (then it leaves things as they are)."""
    row = BootstrapTokens(tx).current()
    if row is None or row["used_at"] is not None:
        if quiet:
            return
        raise InitializationError("the bootstrap token was already exchanged for an admin API key;"
                                  " an admin creates further keys with `certfleet keys create`")
    secret_hash = credentials.hash_secret(token)
    if secret_hash == row["secret_hash"]:
        return
    tx.execute("UPDATE bootstrap_tokens SET secret_hash = ?, created_at = ? WHERE id = ? AND used_at IS NULL",
               (secret_hash, now, row["id"]))
    audit.append(tx, audit.AuditRecord(
        at_ms=now * 1000, actor_type="host", actor_id="coordinator-host", action="auth.bootstrap-token.replace",
        resource_type="bootstrap-token", resource_id=row["id"], details={"how": how}),
        key=audit_chain_key(master))


async def bootstrap_pending(database: Database) -> bool:
    """Whether the bootstrap token is still waiting to be exchanged (no admin yet)."""
    row = await database.transact(lambda tx: BootstrapTokens(tx).current())
    return row is not None and row["used_at"] is None


async def reissue_bootstrap_token(settings: Settings, database: Database, *, now: int) -> str:
    """A new one-time bootstrap token in place of one that was printed but never
    exchanged (lost with a terminal, or never shown because the start failed).

    Run on the coordinator's host: it needs the master key (the replacement is
    recorded in the audit trail). Raises :class:`InitializationError` when there is
    nothing to reissue or the key is not this database's."""
    try:
        master = MasterKey.load(settings.data_dir / "master.key", settings.master_key)
    except MasterKeyError as exc:
        raise InitializationError(str(exc)) from exc
    token = credentials.mint(credentials.BOOTSTRAP).token

    def replace(tx: Tx) -> None:
        check_master_key(tx, master)
        _replace_bootstrap_token(tx, token, master, now=now, how="reissued on the host")

    await database.transact(replace)
    return token


def announce_bootstrap_token(token: str) -> None:
    print(
        "certfleet: first start. One-time bootstrap token (exchange it for an admin API key"
        f" with `certfleet bootstrap`):\n\n    {token}\n\n"
        "Lost before it was used? `certfleet bootstrap --reissue` on this host prints a new one.\n",
        file=sys.stderr,
        flush=True,
    )
