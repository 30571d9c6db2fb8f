"""A fake of the Kubernetes API's core/v1 Secrets endpoints, because no cluster runs
here: ``GET``, ``POST``, ``PUT`` and ``DELETE`` on
``/api/v1/namespaces/{namespace}/secrets[/{name}]``, served over HTTPS on 127.0.0.1
with a test CA, behind bearer-token (or client-certificate) authentication.

What it copies from the real API server, and the deployer relies on: ``Status``
objects for errors; 401 without valid credentials; 404 for a missing Secret; 409 for a
``PUT`` whose ``resourceVersion`` is stale and for a ``POST`` of a name that exists;
``DeleteOptions`` preconditions; a Secret's ``type`` is immutable (422); every write
bumps ``resourceVersion``. Tests can make the next call of a method fail
(``fail_next``), after applying it or not, or have another writer change the Secret
just before it (``interfere_next``). Every request is recorded in ``requests``.

:class:`TestPki` makes the CA, the server's certificate and the certificates the
deployer puts in Secrets, with ``cryptography``, fresh for each test.
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import itertools
import json
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypercorn.config import Config
from hypercorn.trio import serve

from certfleet.agent.deployers import Bundle

_ITEM = re.compile(r"^/api/v1/namespaces/([a-z0-9-]+)/secrets(?:/([a-z0-9.-]+))?$")


def _pem(value) -> bytes:
    if isinstance(value, x509.Certificate):
        return value.public_bytes(serialization.Encoding.PEM)
    return value.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())


class TestPki:
    """A CA and what it issues: TLS server and client certificates, and bundles."""

    __test__ = False

    def __init__(self) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = self._certificate("Fake Kubernetes CA", self.ca_key.public_key(), ca=True)

    def _certificate(self, common_name: str, public_key, *, ca: bool = False,
                     extensions: tuple = ()) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake Kubernetes CA")]))
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(days=7))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(self.ca_key, hashes.SHA256())

    @property
    def ca_pem(self) -> bytes:
        return _pem(self.ca)

    def server(self) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self._certificate("127.0.0.1", key.public_key(), extensions=(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])))
        return _pem(certificate), _pem(key)

    def client(self, user: str) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self._certificate(user, key.public_key(),
                                        extensions=(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),))
        return _pem(certificate), _pem(key)

    def bundle(self, common_name: str = "shop.example.test") -> Bundle:
        """A leaf for the Secret, with the CA standing in for an intermediate."""
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = self._certificate(common_name, key.public_key())
        return Bundle(certificate=_pem(leaf), chain=self.ca_pem, private_key=_pem(key),
                      fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex())


@dataclass
class Failure:
    status: int
    apply: bool = False
    """Carry out the call before answering with the error (a write that landed)."""


@dataclass
class FakeKubernetes:
    token: str | None
    """The bearer token it accepts; ``None``: the TLS layer requires a client certificate."""
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    fail_next: dict[str, Failure] = field(default_factory=dict)
    interfere_next: dict[str, Callable[[dict[str, Any]], None]] = field(default_factory=dict)
    """Method → a change another writer makes to the stored Secret just before that call."""
    _versions: itertools.count = field(default_factory=lambda: itertools.count(100))
    url: str = ""

    def put_secret(self, namespace: str, name: str, *, data: dict[str, bytes], type_: str = "kubernetes.io/tls",
                   labels: dict[str, str] | None = None) -> None:
        """Store a Secret as if someone had created it."""
        import base64

        self.secrets[(namespace, name)] = {
            "apiVersion": "v1", "kind": "Secret", "type": type_,
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {},
                         "resourceVersion": str(next(self._versions)), "uid": f"uid-{name}"},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }

    def methods(self) -> list[str]:
        return [method for method, _ in self.requests]

    # --- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, answer = self._handle(scope["method"], scope["path"], headers, body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

    @staticmethod
    def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                      "reason": reason, "code": code}

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        self.requests.append((method, path))
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return self._status(401, "Unauthorized", "Unauthorized")
        matched = _ITEM.match(path)
        if not matched:
            return self._status(404, "NotFound", f"the server could not find the requested resource ({path})")
        namespace, name = matched.groups()
        if method in self.interfere_next and (namespace, name) in self.secrets:
            self.interfere_next.pop(method)(self.secrets[(namespace, name)])
            self.secrets[(namespace, name)]["metadata"]["resourceVersion"] = str(next(self._versions))
        failure = self.fail_next.pop(method, None)
        if failure is not None and not failure.apply:
            return self._status(failure.status, "InternalError", "injected failure")
        answer = self._apply(method, namespace, name, json.loads(body) if body else None)
        if failure is not None:
            return self._status(failure.status, "InternalError", "injected failure after the change")
        return answer

    def _apply(self, method: str, namespace: str, name: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        key = (namespace, name or "")
        current = self.secrets.get(key)
        if method == "GET" and name:
            if current is None:
                return self._status(404, "NotFound", f'secrets "{name}" not found')
            return 200, copy.deepcopy(current)
        if method == "POST" and name is None:
            name = body["metadata"]["name"]
            if (namespace, name) in self.secrets:
                return self._status(409, "AlreadyExists", f'secrets "{name}" already exists')
            stored = copy.deepcopy(body)
            stored["metadata"].update(namespace=namespace, resourceVersion=str(next(self._versions)),
                                      uid=f"uid-{name}")
            self.secrets[(namespace, name)] = stored
            return 201, copy.deepcopy(stored)
        if method == "PUT" and name:
            if current is None:
                return self._status(404, "NotFound", f'secrets "{name}" not found')
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return self._status(409, "Conflict", f'Operation cannot be fulfilled on secrets "{name}": the object'
                                    " has been modified; please apply your changes to the latest version and try"
                                    " again")
            if body.get("type") != current.get("type"):
                return self._status(422, "Invalid", f'Secret "{name}" is invalid: type: Invalid value:'
                                    f' "{body.get("type")}": field is immutable')
            stored = copy.deepcopy(body)
            stored["metadata"]["resourceVersion"] = str(next(self._versions))
            self.secrets[key] = stored
            return 200, copy.deepcopy(stored)
        if method == "DELETE" and name:
            if current is None:
                return self._status(404, "NotFound", f'secrets "{name}" not found')
            wanted = ((body or {}).get("preconditions") or {}).get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                return self._status(409, "Conflict", "Precondition failed: resourceVersion")
            del self.secrets[key]
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return self._status(405, "MethodNotAllowed", f"{method} is not supported here")


async def start_fake(nursery: trio.Nursery, directory: Path, pki: TestPki, *, token: str | None) -> FakeKubernetes:
    """Serve a fake API server on 127.0.0.1 (a free port) until ``nursery`` ends."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = pki.server()
    (directory / "server.crt").write_bytes(certificate)
    (directory / "server.key").write_bytes(key)
    fake = FakeKubernetes(token=token)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.certfile, config.keyfile = str(directory / "server.crt"), str(directory / "server.key")
    config.alpn_protocols = ["http/1.1"]
    config.accesslog = None
    config.errorlog = logging.getLogger("fake-kubernetes")
    config.graceful_timeout = 0.1
    if token is None:
        (directory / "clients.crt").write_bytes(pki.ca_pem)
        config.ca_certs = str(directory / "clients.crt")
        config.verify_mode = ssl.CERT_REQUIRED
    binds = await nursery.start(serve, fake, config)
    fake.url = binds[0].replace("http://", "https://")
    return fake
