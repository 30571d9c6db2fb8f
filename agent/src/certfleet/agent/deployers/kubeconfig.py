"""Credentials for the Kubernetes API: the server to reach, the CA that vouches for it,
and how to authenticate, parsed from a kubeconfig or from the pod's service account.

A kubeconfig (``clusters``, ``users``, ``contexts``) is read with the target's
``context`` or its ``current-context``; the user authenticates with a token, a token
file or a client certificate, and relative paths are taken from the kubeconfig's
directory. Without a kubeconfig, a pod's service account is used
(``KUBERNETES_SERVICE_HOST``/``_PORT`` and :data:`SERVICE_ACCOUNT_DIR`).

Insecure or unsupported settings raise :class:`CredentialsError` instead of being
ignored: a server that is not ``https://``, ``insecure-skip-tls-verify``,
``tls-server-name``, ``proxy-url``, exec plugins, auth providers, basic auth and
impersonation. Tokens and keys are never logged nor put in an error or a ``repr``.

No network and no logging here: the only I/O is reading the files named, and the
private temp file :meth:`Credentials.ssl_context` needs to load a client key.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from certfleet.shared.targets import KubernetesSecretTarget

__all__ = ["SERVICE_ACCOUNT_DIR", "CredentialsError", "Credentials", "in_cluster_credentials",
           "kubeconfig_credentials", "load_credentials"]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where a pod's service account token and cluster CA are mounted."""

_UNSUPPORTED_CLUSTER = ("tls-server-name", "proxy-url")
_UNSUPPORTED_USER = ("exec", "auth-provider", "username", "password", "as", "as-groups", "as-user-extra")


class CredentialsError(Exception):
    """No usable way to reach and authenticate to the API server."""


@dataclass(frozen=True)
class Credentials:
    server: str
    source: str
    """Where they came from, for messages: a kubeconfig and context, or the pod."""
    ca_pem: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    client_certificate: bytes | None = field(default=None, repr=False)
    client_key: bytes | None = field(default=None, repr=False)

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the server with ``ca_pem`` (the system's CAs without one) and
        presents the client certificate, if any. Raises :class:`CredentialsError`."""
        try:
            context = ssl.create_default_context(cadata=self.ca_pem.decode() if self.ca_pem else None)
        except (ssl.SSLError, ValueError) as exc:
            raise CredentialsError(f"the cluster CA from {self.source} cannot be loaded: {exc}") from None
        if self.client_certificate is not None and self.client_key is not None:
            # The ssl module loads a client key only from a file: a private temp dir, gone at once.
            directory = Path(tempfile.mkdtemp(prefix="certfleet-kubernetes-"))
            try:
                certificate, key = directory / "client.crt", directory / "client.key"
                certificate.write_bytes(self.client_certificate)
                key.write_bytes(self.client_key)
                context.load_cert_chain(certificate, key)
            except ssl.SSLError:
                raise CredentialsError(f"the client certificate or key from {self.source} cannot be loaded")\
                    from None
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        return context

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _token(text: bytes, where: str) -> str:
    token = text.decode(errors="replace").strip()
    if not token or any(c in token for c in "\r\n\0"):
        raise CredentialsError(f"the token in {where} is empty or not a single line")
    return token


def in_cluster_credentials() -> Credentials:
    """The pod's service account (``KUBERNETES_SERVICE_HOST``/``_PORT``, and the token
    and CA under :data:`SERVICE_ACCOUNT_DIR`). The token is read again every time:
    bound service account tokens are rotated by the kubelet."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise CredentialsError("the target names no kubeconfig and the agent is not running in a pod"
                               " (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set)")
    directory = SERVICE_ACCOUNT_DIR
    token = _token(_read(directory / "token", "the service account token"), str(directory / "token"))
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return Credentials(server, "the pod's service account", _read(directory / "ca.crt", "the cluster CA"),
                       token=token)


def _named(config: Mapping[str, Any], section: str, name: Any, path: Path) -> Mapping[str, Any]:
    entries = config.get(section) or []
    if not isinstance(entries, list):
        raise CredentialsError(f"{path}: {section} is not a list")
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            body = entry.get(section[:-1])
            return body if isinstance(body, Mapping) else {}
    raise CredentialsError(f"{path} has no {section[:-1]} named {name!r}")


def _material(section: Mapping[str, Any], key: str, base: Path, what: str, path: Path) -> bytes | None:
    """``key-data`` (base64, inline) or ``key`` (a file, relative to the kubeconfig)."""
    inline = section.get(f"{key}-data")
    if inline:
        try:
            return base64.b64decode(str(inline), validate=True)
        except binascii.Error:
            raise CredentialsError(f"{path}: {key}-data is not base64") from None
    if section.get(key):
        return _read(base / str(section[key]), what)
    return None


def kubeconfig_credentials(path: Path, context_name: str | None = None) -> Credentials:
    """The server and user of ``context_name`` (default: ``current-context``) in the
    kubeconfig at ``path``. Raises :class:`CredentialsError` for anything missing or
    not supported (exec plugins, auth providers, basic auth, skipping TLS checks)."""
    try:
        config = yaml.safe_load(_read(path, "the kubeconfig"))
    except yaml.YAMLError as exc:
        # The YAML error's own text quotes the offending line, which may hold a token.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise CredentialsError(f"{path} is not valid YAML{where}") from None
    if not isinstance(config, Mapping):
        raise CredentialsError(f"{path} is not a kubeconfig")
    name = context_name or config.get("current-context")
    if not name:
        raise CredentialsError(f"{path} has no current-context and the target names no context")
    context = _named(config, "contexts", name, path)
    cluster = _named(config, "clusters", context.get("cluster"), path)
    user = _named(config, "users", context.get("user"), path) if context.get("user") else {}
    source = f"kubeconfig {path} (context {name})"
    base = path.parent

    server = str(cluster.get("server") or "")
    if not server.startswith("https://"):
        raise CredentialsError(f"{source}: the server must be an https:// URL, not {server!r}")
    if cluster.get("insecure-skip-tls-verify"):
        raise CredentialsError(f"{source}: insecure-skip-tls-verify is refused; give the cluster's"
                               " certificate-authority instead")
    for key in _UNSUPPORTED_CLUSTER:
        if cluster.get(key):
            raise CredentialsError(f"{source}: the cluster setting {key} is not supported")
    for key in _UNSUPPORTED_USER:
        if user.get(key):
            raise CredentialsError(f"{source}: the user setting {key} is not supported;"
                                   " use a token, a token file or a client certificate")
    ca = _material(cluster, "certificate-authority", base, "the cluster CA", path)

    token = None
    if user.get("token"):
        token = _token(str(user["token"]).encode(), source)
    elif user.get("tokenFile"):
        token_path = base / str(user["tokenFile"])
        token = _token(_read(token_path, "the token file"), str(token_path))
    certificate = _material(user, "client-certificate", base, "the client certificate", path)
    key = _material(user, "client-key", base, "the client key", path)
    if (certificate is None) != (key is None):
        raise CredentialsError(f"{source}: a client certificate needs its key, and a key its certificate")
    if token is None and certificate is None:
        raise CredentialsError(f"{source}: the user has no token, token file or client certificate")
    return Credentials(server.rstrip("/"), source, ca, token=token, client_certificate=certificate,
                       client_key=key)


def load_credentials(target: KubernetesSecretTarget) -> Credentials:
    if target.kubeconfig is None:
        return in_cluster_credentials()
    return kubeconfig_credentials(Path(target.kubeconfig), target.context)
