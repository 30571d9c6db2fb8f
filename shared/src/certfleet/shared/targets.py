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
* secrets (keystore passwords, Kubernetes tokens) are never part of a target: a target
  names a secret, and the agent resolves the name from its own secret file.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, ClassVar, Literal

import msgspec

__all__ = [
    "ApacheTarget",
    "CaddyTarget",
    "DovecotTarget",
    "EnvoyTarget",
    "FileTarget",
    "HaproxyTarget",
    "KINDS",
    "KeystoreTarget",
    "KubernetesSecretTarget",
    "NginxTarget",
    "PostfixTarget",
    "Target",
    "TlsCheck",
    "TraefikTarget",
    "kind_of",
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


class TlsCheck(_Message):
    """Post-deploy verification: connect to ``host:port``, send ``server_name`` as SNI,
    read the served leaf and compare its SHA-256 with the one just deployed.

    ``protocol`` says how TLS starts: ``tls`` at once (HTTPS, IMAPS, SMTPS), ``smtp``
    with STARTTLS (RFC 3207), ``imap`` with STARTTLS (RFC 9051 §6.2.1).
    """

    port: Port
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)] = "127.0.0.1"
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
    """Write ``cert.pem``, ``chain.pem``, ``fullchain.pem`` and ``privkey.pem``
    into ``directory``, the layout certbot users expect, then run the optional
    ``reload_command`` (a hook) if anything changed."""

    directory: Path_
    reload_command: Argv | None = None

    def validate(self) -> None:
        check_path("directory", self.directory, directory=True)
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


Target = (FileTarget | NginxTarget | ApacheTarget | HaproxyTarget | PostfixTarget | DovecotTarget | CaddyTarget
          | TraefikTarget | EnvoyTarget | KeystoreTarget | KubernetesSecretTarget)

KINDS: tuple[str, ...] = tuple(sorted(str(cls.__struct_config__.tag) for cls in Target.__args__))
"""Every target kind, as settings name it (``"kind": "nginx"``)."""


def kind_of(target: Target) -> str:
    """The kind a target's settings declare (``nginx``, ``file``…)."""
    return str(target.__struct_config__.tag)
