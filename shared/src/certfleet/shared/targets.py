"""Deployment targets: where an agent puts a certificate, and how it proves it is served.

A target is declared on the coordinator, travels inside the signed work order, and is
validated on both sides (the coordinator on creation, the agent again before acting),
so a database edit cannot smuggle a hostile setting past the agent.

Rules every kind follows:

* paths are absolute, normalized, and made of a conservative character set: no shell
  metacharacters, no whitespace, no ``..``; nothing is ever run through a shell, and a
  path that would need quoting is refused rather than quoted;
* commands are argv lists. Their arguments obey the same character rule (plus ``=``,
  ``,`` and ``:``, which options need); the program is run directly;
* secrets (keystore passwords, Kubernetes tokens, SSH keys, F5 passwords) are never part
  of a target: a target names a secret, and the agent resolves the name from its own
  secret file;
* a remote target (``ssh``, ``f5``) pins the identity of the device it talks to (the
  SSH host key, the management interface's TLS certificate or CA), so a secret is
  never sent to a device the target did not name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import struct
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

import msgspec

__all__ = [
    "ApacheTarget",
    "CaddyTarget",
    "DEFAULT_CHECK_HOST",
    "DovecotTarget",
    "EnvoyTarget",
    "F5Target",
    "FileTarget",
    "HaproxyTarget",
    "KINDS",
    "KeystoreTarget",
    "KubernetesSecretTarget",
    "NginxTarget",
    "PostfixTarget",
    "SshTarget",
    "Target",
    "TlsCheck",
    "TraefikTarget",
    "kind_of",
    "normalize_sha256_fingerprint",
    "parse_ssh_host_key",
    "unsafe_characters",
]

_SAFE = re.compile(r"[A-Za-z0-9._/@+=,:%-]*")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
                   r"|^[0-9.]+$|^[0-9A-Fa-f:]+$")


class _Message(msgspec.Struct, forbid_unknown_fields=True):
    pass


def unsafe_characters(value: str) -> str:
    """The characters of ``value`` outside the safe set, for an error message."""
    return "".join(sorted({c for c in value if not _SAFE.fullmatch(c)}))


def _check_safe(what: str, value: str) -> None:
    bad = unsafe_characters(value)
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise msgspec.ValidationError(
            f"{what} contains characters certfleet refuses in paths and commands ({shown}):"
            f" {value!r}; nothing is run through a shell, so no quoting is needed or allowed")


def check_path(what: str, path: str, *, directory: bool = False) -> None:
    """Absolute, normalized, safe characters; a trailing ``/`` only for a directory
    (for a file it would make two spellings of one path look different)."""
    _check_safe(what, path)
    if not os.path.isabs(path):
        raise msgspec.ValidationError(f"{what} must be an absolute path: {path!r}")
    spelled = path.rstrip("/") if directory else path
    if os.path.normpath(path) != spelled or ".." in path.split("/"):
        raise msgspec.ValidationError(f"{what} must be a normalized path (no '..', '//' or trailing '/'): {path!r}")


def check_argv(what: str, argv: list[str] | None) -> None:
    if not argv:
        return
    for argument in argv:
        _check_safe(what, argument)
    if argv[0].startswith("-"):
        raise msgspec.ValidationError(f"{what} must start with a program, not an option: {argv[0]!r}")


Path_ = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Argv = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]],
    msgspec.Meta(min_length=1, max_length=64),
]
Mode = Annotated[int, msgspec.Meta(ge=0, le=0o777)]
Account = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")]
SecretName = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]

DEFAULT_CHECK_HOST = "127.0.0.1"
"""Where a post-deploy check connects unless told otherwise: the agent's own host."""


class TlsCheck(_Message):
    """Post-deploy verification: connect to ``host:port``, send ``server_name`` as SNI,
    read the served leaf and compare its SHA-256 with the one just deployed.

    ``protocol`` says how TLS starts: ``tls`` at once (HTTPS, IMAPS, SMTPS), ``smtp``
    with STARTTLS (RFC 3207), ``imap`` with STARTTLS (RFC 9051 §6.2.1).
    """

    port: Port
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)] = DEFAULT_CHECK_HOST
    server_name: Annotated[str, msgspec.Meta(min_length=1, max_length=253)] | None = None
    """Default: the certificate's first name."""
    protocol: Literal["tls", "smtp", "imap"] = "tls"
    attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5
    """Tries, with doubling delays from 0.2 s, while the server finishes reloading."""

    def validate(self) -> None:
        if not _HOST.match(self.host):
            raise msgspec.ValidationError(f"verify.host is not a host name or address: {self.host!r}")
        if self.server_name is not None and not _HOST.match(self.server_name.rstrip(".")):
            raise msgspec.ValidationError(f"verify.server_name is not a host name: {self.server_name!r}")


class _Ownership(_Message, kw_only=True):
    mode: Mode = 0o644
    """Mode of new certificate files; existing files keep their owner, group and mode."""
    key_mode: Mode = 0o600
    """Mode of a new private-key file; must not grant group or other access."""
    owner: Account | None = None
    group: Account | None = None

    def _validate_ownership(self) -> None:
        if self.key_mode & 0o077:
            raise msgspec.ValidationError("key_mode must not grant group or other access")


class FileTarget(_Ownership, tag="file", tag_field="kind", kw_only=True):
    """Plain files, then the optional ``reload_command`` (a hook) if anything changed.

    Either ``directory``: ``cert.pem``, ``chain.pem``, ``fullchain.pem`` and
    ``privkey.pem`` in it, the layout certbot users expect. Or ``certificate_path``
    (the leaf followed by the intermediates) and ``key_path``: the files an application
    already reads, such as a certificate found by discovery and claimed where it lies."""

    directory: Path_ | None = None
    certificate_path: Path_ | None = None
    key_path: Path_ | None = None
    reload_command: Argv | None = None

    def validate(self) -> None:
        if (self.directory is None) == (self.certificate_path is None):
            raise msgspec.ValidationError("a file target sets either directory, or certificate_path and key_path")
        if self.directory is not None:
            if self.key_path is not None:
                raise msgspec.ValidationError("key_path goes with certificate_path; a directory gets privkey.pem")
            check_path("directory", self.directory, directory=True)
        else:
            if self.key_path is None:
                raise msgspec.ValidationError("certificate_path needs key_path: where the private key goes")
            check_path("certificate_path", self.certificate_path)  # type: ignore[arg-type]
            check_path("key_path", self.key_path)
            if self.key_path == self.certificate_path:
                raise msgspec.ValidationError("certificate_path and key_path must differ")
        check_argv("reload_command", self.reload_command)
        self._validate_ownership()


class _ServerTarget(_Ownership, kw_only=True):
    """A server that reads a certificate and key from files and is told to reload.

    ``certificate_path`` receives the leaf followed by the intermediates (what nginx,
    Apache ≥ 2.4.8, Postfix and Dovecot expect); ``chain_path``, if given, receives the
    intermediates alone. ``test_command`` and ``reload_command`` default to the kind's
    usual commands; tests and unusual installs override them.
    """

    certificate_path: Path_
    key_path: Path_
    chain_path: Path_ | None = None
    test_command: Argv | None = None
    reload_command: Argv | None = None
    verify: TlsCheck | None = None

    DEFAULT_TEST: ClassVar[tuple[str, ...] | None] = None
    DEFAULT_RELOAD: ClassVar[tuple[str, ...] | None] = None

    def validate(self) -> None:
        paths = [("certificate_path", self.certificate_path), ("key_path", self.key_path)]
        if self.chain_path is not None:
            paths.append(("chain_path", self.chain_path))
        for what, path in paths:
            check_path(what, path)
        if len({p for _, p in paths}) != len(paths):
            raise msgspec.ValidationError("certificate_path, key_path and chain_path must differ")
        check_argv("test_command", self.test_command)
        check_argv("reload_command", self.reload_command)
        self._validate_ownership()
        if self.verify is not None:
            self.verify.validate()

    def effective_test(self) -> tuple[str, ...] | None:
        return tuple(self.test_command) if self.test_command else self.DEFAULT_TEST

    def effective_reload(self) -> tuple[str, ...] | None:
        return tuple(self.reload_command) if self.reload_command else self.DEFAULT_RELOAD


class NginxTarget(_ServerTarget, tag="nginx", tag_field="kind", kw_only=True):
    DEFAULT_TEST = ("nginx", "-t")
    DEFAULT_RELOAD = ("nginx", "-s", "reload")


class ApacheTarget(_ServerTarget, tag="apache", tag_field="kind", kw_only=True):
    DEFAULT_TEST = ("apachectl", "-t")
    DEFAULT_RELOAD = ("apachectl", "-k", "graceful")


class PostfixTarget(_ServerTarget, tag="postfix", tag_field="kind", kw_only=True):
    DEFAULT_TEST = ("postfix", "check")
    DEFAULT_RELOAD = ("postfix", "reload")


class DovecotTarget(_ServerTarget, tag="dovecot", tag_field="kind", kw_only=True):
    DEFAULT_TEST = ("doveconf", "-n")
    DEFAULT_RELOAD = ("doveadm", "reload")


class CaddyTarget(_ServerTarget, tag="caddy", tag_field="kind", kw_only=True):
    DEFAULT_TEST = ("caddy", "validate", "--config", "/etc/caddy/Caddyfile")
    # --force: certfleet changes the files the Caddyfile names, not the Caddyfile, and
    # without it `caddy reload` sees an unchanged config and loads nothing.
    DEFAULT_RELOAD = ("caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--force")


class HaproxyTarget(_ServerTarget, tag="haproxy", tag_field="kind", kw_only=True):
    """HAProxy reads one PEM holding the leaf, the intermediates and the key:
    ``certificate_path`` receives that combined file and ``key_path`` must be left out.

    Reload through the master CLI (``master_socket``, HAProxy in master-worker mode) or
    with ``reload_command`` (for example ``systemctl reload haproxy``, which uses
    ``-sf``)."""

    key_path: Path_ | None = None  # type: ignore[assignment]
    master_socket: Path_ | None = None

    DEFAULT_TEST = ("haproxy", "-c", "-f", "/etc/haproxy/haproxy.cfg")
    DEFAULT_RELOAD = ("systemctl", "reload", "haproxy")

    def validate(self) -> None:
        if self.key_path is not None:
            raise msgspec.ValidationError("haproxy targets write one combined PEM: set certificate_path only")
        check_path("certificate_path", self.certificate_path)
        if self.chain_path is not None:
            raise msgspec.ValidationError("haproxy targets write one combined PEM: chain_path is not used")
        if self.master_socket is not None:
            check_path("master_socket", self.master_socket)
            if self.reload_command:
                raise msgspec.ValidationError("set master_socket or reload_command, not both")
            if self.verify is None:
                # The master CLI answers nothing when a reload fails (HAProxy 2.6): only
                # the served certificate shows whether the new file was loaded.
                raise msgspec.ValidationError("a master_socket reload needs verify: HAProxy does not report a"
                                              " failed reload there, only the served certificate shows it")
        check_argv("test_command", self.test_command)
        check_argv("reload_command", self.reload_command)
        self._validate_ownership()
        if self.verify is not None:
            self.verify.validate()

    def effective_reload(self) -> tuple[str, ...] | None:
        return None if self.master_socket else super().effective_reload()


class TraefikTarget(_Ownership, tag="traefik", tag_field="kind", kw_only=True):
    """Traefik's file provider: the certificate and key files, plus a dynamic
    configuration file listing them under ``tls.certificates``. Traefik watches that
    file, so there is no reload."""

    certificate_path: Path_
    key_path: Path_
    dynamic_config_path: Path_
    verify: TlsCheck | None = None

    def validate(self) -> None:
        paths = {self.certificate_path, self.key_path, self.dynamic_config_path}
        for what, path in (("certificate_path", self.certificate_path), ("key_path", self.key_path),
                           ("dynamic_config_path", self.dynamic_config_path)):
            check_path(what, path)
        if len(paths) != 3:
            raise msgspec.ValidationError("certificate_path, key_path and dynamic_config_path must differ")
        if not self.dynamic_config_path.endswith((".yml", ".yaml", ".toml")):
            raise msgspec.ValidationError("dynamic_config_path must end in .yml, .yaml or .toml")
        self._validate_ownership()
        if self.verify is not None:
            self.verify.validate()


class EnvoyTarget(_Ownership, tag="envoy", tag_field="kind", kw_only=True):
    """An SDS secret file (a ``DiscoveryResponse`` holding one ``tls_certificate``
    Secret) that Envoy's ``path_config_source`` watches; it is replaced by rename, the
    move Envoy's watcher reacts to."""

    sds_path: Path_
    secret_name: Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_.:-]+$")]
    key_mode: Mode = 0o600
    verify: TlsCheck | None = None

    def validate(self) -> None:
        check_path("sds_path", self.sds_path)
        if not self.sds_path.endswith((".json", ".yaml", ".yml")):
            raise msgspec.ValidationError("sds_path must end in .json, .yaml or .yml")
        self._validate_ownership()
        if self.verify is not None:
            self.verify.validate()


class KeystoreTarget(_Message, tag="keystore", tag_field="kind", kw_only=True):
    """A Java keystore (``jks``) or PKCS#12 file holding the key and chain under
    ``alias``, protected by the password stored on the agent as ``password_secret``."""

    path: Path_
    format: Literal["pkcs12", "jks"] = "pkcs12"
    alias: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")] = "certfleet"
    password_secret: SecretName
    mode: Mode = 0o600
    owner: Account | None = None
    group: Account | None = None
    reload_command: Argv | None = None
    verify: TlsCheck | None = None

    def validate(self) -> None:
        check_path("path", self.path)
        check_argv("reload_command", self.reload_command)
        if self.mode & 0o007:
            raise msgspec.ValidationError("a keystore holds a private key: mode must not grant other access")
        if self.verify is not None:
            self.verify.validate()


_DNS1123 = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class KubernetesSecretTarget(_Message, tag="kubernetes-secret", tag_field="kind", kw_only=True):
    """A ``kubernetes.io/tls`` Secret, written through the Kubernetes API with the
    in-cluster service account or a kubeconfig file."""

    namespace: Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern=_DNS1123)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=253,
                                      pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")]
    kubeconfig: Path_ | None = None
    """Default: the in-cluster service account."""
    context: Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_.@:/-]+$")] | None = None

    def validate(self) -> None:
        if self.kubeconfig is not None:
            check_path("kubeconfig", self.kubeconfig)


# --- remote targets (a proxy agent deploys to a device that cannot run an agent) --------

SSH_HOST_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
_SSH_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")


def parse_ssh_host_key(value: str) -> tuple[str | None, str]:
    """The key type (``None`` for a bare fingerprint) and the OpenSSH SHA-256
    fingerprint (``SHA256:`` and unpadded base64 of the key blob, as ``ssh-keygen -l``
    prints it) of a pinned host key, given either as a public key line
    (``ssh-ed25519 AAAA… [comment]``, RFC 4253 §6.6 blob in base64) or as that
    fingerprint. Raises ``msgspec.ValidationError``."""
    value = value.strip()
    if _SSH_FINGERPRINT.match(value):
        padded = value.removeprefix("SHA256:") + "="
        try:
            if len(base64.b64decode(padded, validate=True)) == 32:
                return None, value
        except binascii.Error:
            pass
        raise msgspec.ValidationError(f"host_key is not a valid SHA256 fingerprint: {value!r}")
    words = value.split()
    if len(words) not in (2, 3) or words[0] not in SSH_HOST_KEY_TYPES:
        raise msgspec.ValidationError(
            "host_key must be the server's public host key (\"ssh-ed25519 AAAA…\", as in"
            " /etc/ssh/ssh_host_ed25519_key.pub or `ssh-keyscan` output without the host name) or its"
            f" fingerprint (\"SHA256:…\", as `ssh-keygen -l` prints it); key types: {', '.join(SSH_HOST_KEY_TYPES)}")
    try:
        blob = base64.b64decode(words[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        embedded = blob[4:4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise msgspec.ValidationError("host_key is not a valid public key: its base64 blob cannot be read") from None
    if embedded != words[0]:
        raise msgspec.ValidationError(f"host_key says {words[0]} but its blob holds a {embedded or 'malformed'} key")
    fingerprint = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return words[0], f"SHA256:{fingerprint}"


_HEX_FINGERPRINT = re.compile(r"^(?:[0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f]{64}$")


def normalize_sha256_fingerprint(value: str) -> str:
    """A SHA-256 certificate fingerprint as 64 lowercase hex digits, from that or the
    colon-separated form browsers and ``openssl x509 -fingerprint`` show (an optional
    ``sha256:`` prefix is allowed). Raises ``msgspec.ValidationError``."""
    spelled = value.strip()
    if spelled.lower().startswith(("sha256:", "sha256=")):
        spelled = spelled[7:]
    if not _HEX_FINGERPRINT.match(spelled):
        raise msgspec.ValidationError(f"not a SHA-256 fingerprint (64 hex digits, colons allowed): {value!r}")
    return spelled.replace(":", "").lower()


class SshTarget(_Message, tag="ssh", tag_field="kind", kw_only=True):
    """A device reached over SSH: the certificate and key are uploaded over SFTP to
    ``certificate_path`` (leaf + intermediates), ``key_path`` and optionally
    ``chain_path`` (intermediates), each renamed into place atomically; then
    ``test_command`` and ``reload_command`` run on the device.

    ``host_key`` pins the server (its public key line or its ``SHA256:`` fingerprint):
    the agent refuses any other key before authenticating. ``auth_secret`` names the
    agent's secret holding a private key (OpenSSH or PEM) or a password. Commands are
    argv lists; the remote shell receives them joined with POSIX shell quoting, so it
    sees exactly those words. ``verify.host`` left at its default checks ``host``.
    """

    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    port: Port = 22
    username: Account
    host_key: Annotated[str, msgspec.Meta(min_length=1, max_length=16384)]
    auth_secret: SecretName
    certificate_path: Path_
    key_path: Path_
    chain_path: Path_ | None = None
    mode: Mode = 0o644
    """Mode of a new certificate file; an existing file keeps its own."""
    key_mode: Mode = 0o600
    """Mode of a new key file; an existing one keeps its own, minus any access for others."""
    test_command: Argv | None = None
    reload_command: Argv | None = None
    verify: TlsCheck | None = None

    def validate(self) -> None:
        if not _HOST.match(self.host):
            raise msgspec.ValidationError(f"host is not a host name or address: {self.host!r}")
        parse_ssh_host_key(self.host_key)
        paths = [("certificate_path", self.certificate_path), ("key_path", self.key_path)]
        if self.chain_path is not None:
            paths.append(("chain_path", self.chain_path))
        for what, path in paths:
            check_path(what, path)
        if len({p for _, p in paths}) != len(paths):
            raise msgspec.ValidationError("certificate_path, key_path and chain_path must differ")
        if self.key_mode & 0o077:
            raise msgspec.ValidationError("key_mode must not grant group or other access")
        check_argv("test_command", self.test_command)
        check_argv("reload_command", self.reload_command)
        if self.verify is not None:
            self.verify.validate()


F5Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")]


class F5Target(_Message, tag="f5", tag_field="kind", kw_only=True):
    """A BIG-IP client-ssl profile, through iControl REST on the management address
    ``url`` (``https://host[:port]``).

    The certificate, its key and its chain are installed as new objects named after
    ``object_name`` and the certificate's fingerprint in ``partition``; the profile's
    first ``certKeyChain`` entry is switched to them inside an iControl REST
    transaction. ``credentials_secret`` names the agent's secret holding
    ``username:password``.

    The management interface is authenticated before the credentials are sent, by
    exactly one of: ``server_fingerprint`` (SHA-256 of its TLS certificate, the usual
    choice for a device's self-signed certificate), ``server_certificate`` (that
    certificate as PEM) or ``ca_bundle`` (a CA file on the agent's host; the name in
    ``url`` is checked too). ``verify`` checks the virtual server that uses the
    profile: set ``verify.host`` to its address.
    """

    url: Annotated[str, msgspec.Meta(min_length=9, max_length=2048)]
    credentials_secret: SecretName
    partition: F5Name = "Common"
    profile: F5Name
    object_name: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")]
    server_fingerprint: Annotated[str, msgspec.Meta(min_length=64, max_length=110)] | None = None
    server_certificate: Annotated[str, msgspec.Meta(min_length=1, max_length=65536)] | None = None
    ca_bundle: Path_ | None = None
    login_provider: F5Name = "tmos"
    verify: TlsCheck | None = None

    def validate(self) -> None:
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - raises ValueError on a port out of range
        except ValueError:
            raise msgspec.ValidationError(f"url is not a URL: {self.url!r}") from None
        if parts.scheme != "https" or not parts.hostname:
            raise msgspec.ValidationError(f"url must be https://host[:port]: {self.url!r}")
        if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
            raise msgspec.ValidationError(f"url must be https://host[:port], nothing more: {self.url!r}")
        if not _HOST.match(parts.hostname):
            raise msgspec.ValidationError(f"url's host is not a host name or address: {parts.hostname!r}")
        pins = [self.server_fingerprint, self.server_certificate, self.ca_bundle]
        if sum(pin is not None for pin in pins) != 1:
            raise msgspec.ValidationError("set exactly one of server_fingerprint, server_certificate and ca_bundle:"
                                          " the agent authenticates the device before it sends the password")
        if self.server_fingerprint is not None:
            normalize_sha256_fingerprint(self.server_fingerprint)
        if self.server_certificate is not None:
            from cryptography import x509

            try:
                x509.load_pem_x509_certificate(self.server_certificate.encode())
            except ValueError:
                raise msgspec.ValidationError("server_certificate is not a PEM certificate") from None
        if self.ca_bundle is not None:
            check_path("ca_bundle", self.ca_bundle)
        if self.verify is not None:
            self.verify.validate()


Target = (FileTarget | NginxTarget | ApacheTarget | HaproxyTarget | PostfixTarget | DovecotTarget | CaddyTarget
          | TraefikTarget | EnvoyTarget | KeystoreTarget | KubernetesSecretTarget | SshTarget | F5Target)

KINDS: tuple[str, ...] = tuple(sorted(str(cls.__struct_config__.tag) for cls in Target.__args__))
"""Every target kind, as settings name it (``"kind": "nginx"``)."""


def kind_of(target: Target) -> str:
    """The kind a target's settings declare (``nginx``, ``file``…)."""
    return str(target.__struct_config__.tag)
