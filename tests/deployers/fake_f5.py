"""A FAKE BIG-IP: the iControl REST calls the ``f5`` deployer makes, served over HTTPS
(TLS 1.3 only) on 127.0.0.1, because no BIG-IP, virtual edition or official simulator
can run here. It is not F5 software and proves nothing about a real device beyond the
documented behaviour it copies:

* token authentication: ``POST /mgmt/shared/authn/login`` checks username and password
  and answers ``{"token": {"token": …}}``; every other call needs ``X-F5-Auth-Token``
  (401 otherwise); ``DELETE /mgmt/shared/authz/tokens/{token}`` ends the session;
* ``POST /mgmt/shared/file-transfer/uploads/{file}`` assembles a file from chunks of at
  most 1 MiB, each with ``Content-Range: start-end/size``, into the fake's
  ``/var/config/rest/downloads``; ``POST /mgmt/tm/util/unix-rm`` removes it;
* ``POST /mgmt/tm/sys/crypto/cert`` and ``/key`` with ``command: install`` and
  ``from-local-file`` make objects from an uploaded PEM (a certificate object reports
  its ``fingerprint`` as ``SHA256/AB:…``); ``GET``/``DELETE`` on ``…/~Partition~name``;
  deleting an object a profile uses is refused (400);
* ``GET``/``PATCH /mgmt/tm/ltm/profile/client-ssl/~Partition~name``, ``certKeyChain``
  checked as BIG-IP does on commit: the objects exist and each key matches its
  certificate;
* transactions: ``POST /mgmt/tm/transaction`` → ``transId``; a request carrying
  ``X-F5-REST-Coordination-Id`` is queued, not applied; ``PATCH
  /mgmt/tm/transaction/{id}`` with ``state: VALIDATING`` (refused if it carries that
  header itself) replays the queue on a copy of the configuration and keeps the copy
  only if every command succeeds: all or nothing. ``fail_next_commit`` makes the next
  commit fail validation the way a device rejects a configuration.

Every request is recorded in ``requests`` as (method, path, coordination id or None).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import re
import secrets
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypercorn.config import Config
from hypercorn.trio import serve

from tests.deployers.fake_kubernetes import TestPki

DOWNLOADS = "/var/config/rest/downloads/"
MAX_CHUNK = 1 << 20
_CRYPTO_ITEM = re.compile(r"^/mgmt/tm/sys/crypto/(cert|key)/~([A-Za-z0-9_.-]+)~([A-Za-z0-9_.-]+)$")
_PROFILE_ITEM = re.compile(r"^/mgmt/tm/ltm/profile/client-ssl/~([A-Za-z0-9_.-]+)~([A-Za-z0-9_.-]+)$")
_TRANSACTION_ITEM = re.compile(r"^/mgmt/tm/transaction/(\d+)$")
_CONTENT_RANGE = re.compile(r"^(\d+)-(\d+)/(\d+)$")


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Configuration:
    """What a commit changes, copied whole so a failed transaction leaves no trace."""

    certificates: dict[str, bytes] = field(default_factory=dict)
    keys: dict[str, bytes] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class FakeBigIp:
    username: str
    password: str
    config: Configuration = field(default_factory=Configuration)
    downloads: dict[str, bytes] = field(default_factory=dict)
    """``/var/config/rest/downloads``: complete uploads by file name."""
    tokens: set[str] = field(default_factory=set)
    transactions: dict[int, dict[str, Any]] = field(default_factory=dict)
    fail_next_commit: str | None = None
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    _partial: dict[str, bytearray] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1618000000000001))
    url: str = ""
    tls_fingerprint: str = ""
    """SHA-256 (hex) of the management interface's TLS certificate."""

    # --- what tests set up and look at --------------------------------------------------

    def add_profile(self, partition: str, name: str, *, certificate: str, key: str, chain: str = "none") -> None:
        self.config.profiles[f"/{partition}/{name}"] = {
            "kind": "tm:ltm:profile:client-ssl:client-sslstate", "name": name, "partition": partition,
            "fullPath": f"/{partition}/{name}",
            "certKeyChain": [{"name": "default", "cert": certificate, "key": key, "chain": chain}]}

    def add_objects(self, partition: str, name: str, certificate: bytes, key: bytes) -> tuple[str, str]:
        """Install a certificate and key the way an administrator would have."""
        full = f"/{partition}/{name}"
        self.config.certificates[f"{full}.crt"] = certificate
        self.config.keys[f"{full}.key"] = key
        return f"{full}.crt", f"{full}.key"

    def chain_of(self, partition: str, name: str) -> list[dict[str, Any]]:
        return self.config.profiles[f"/{partition}/{name}"]["certKeyChain"]

    def paths(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path, _ in self.requests]

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
        try:
            status, answer = self._handle(scope["method"], scope["path"], headers, body)
        except _Refused as refused:
            status, answer = refused.status, {"code": refused.status, "message": refused.message, "errorStack": [],
                                              "apiError": 3}
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json; charset=UTF-8")]})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        coordination = headers.get("x-f5-rest-coordination-id")
        self.requests.append((method, path, coordination))
        if (method, path) == ("POST", "/mgmt/shared/authn/login"):
            return self._login(json.loads(body or b"{}"))
        if headers.get("x-f5-auth-token") not in self.tokens:
            raise _Refused(401, "X-F5-Auth-Token does not exist.")
        if path.startswith("/mgmt/shared/authz/tokens/") and method == "DELETE":
            self.tokens.discard(path.rsplit("/", 1)[1])
            return 200, {}
        if path.startswith("/mgmt/shared/file-transfer/uploads/") and method == "POST":
            return self._upload(path.rsplit("/", 1)[1], headers, body)
        if path == "/mgmt/tm/util/unix-rm" and method == "POST":
            return self._unix_rm(json.loads(body))
        if path == "/mgmt/tm/transaction" or _TRANSACTION_ITEM.match(path):
            if coordination is not None:
                raise _Refused(400, "a transaction cannot be changed from inside a transaction")
            return self._transaction(method, path, json.loads(body) if body else None)
        parsed = json.loads(body) if body else None
        if coordination is not None and method != "GET":
            return self._queue(int(coordination), method, path, parsed)
        return self._apply(self.config, method, path, parsed)

    # --- sessions and files -------------------------------------------------------------

    def _login(self, body: dict[str, Any]) -> tuple[int, Any]:
        if body.get("loginProviderName", "tmos") != "tmos" or \
                (body.get("username"), body.get("password")) != (self.username, self.password):
            raise _Refused(401, "Authentication failed.")
        token = secrets.token_hex(13).upper()
        self.tokens.add(token)
        return 200, {"username": self.username, "loginProviderName": "tmos",
                     "token": {"token": token, "name": token, "userName": self.username, "timeout": 1200,
                               "selfLink": f"https://localhost/mgmt/shared/authz/tokens/{token}"}}

    def _upload(self, name: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        matched = _CONTENT_RANGE.match(headers.get("content-range", ""))
        if headers.get("content-type") != "application/octet-stream" or not matched:
            raise _Refused(400, "Content-Range and Content-Type: application/octet-stream are required")
        start, end, total = (int(g) for g in matched.groups())
        if len(body) > MAX_CHUNK or end - start + 1 != len(body) or end >= total:
            raise _Refused(400, f"Chunk size {len(body)} does not match Content-Range {start}-{end}/{total}")
        partial = self._partial.setdefault(name, bytearray())
        if start != len(partial):
            raise _Refused(400, f"Chunk starting at {start} does not follow the {len(partial)} bytes received")
        partial += body
        if len(partial) == total:
            self.downloads[name] = bytes(self._partial.pop(name))
        return 200, {"remainingByteCount": total - end - 1, "totalByteCount": total,
                     "localFilePath": f"{DOWNLOADS}{name}"}

    def _unix_rm(self, body: dict[str, Any]) -> tuple[int, Any]:
        target = str(body.get("utilCmdArgs", ""))
        if body.get("command") != "run" or not target.startswith(DOWNLOADS):
            raise _Refused(400, "unix-rm: this fake removes only uploaded files")
        self.downloads.pop(target.removeprefix(DOWNLOADS), None)
        return 200, {"kind": "tm:util:unix-rm:runstate", "command": "run", "utilCmdArgs": target}

    # --- transactions -------------------------------------------------------------------

    def _transaction(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "POST" and path == "/mgmt/tm/transaction":
            transaction = next(self._ids)
            self.transactions[transaction] = {"state": "STARTED", "commands": []}
            return 200, self._transaction_state(transaction)
        matched = _TRANSACTION_ITEM.match(path)
        transaction = int(matched.group(1)) if matched else -1
        if transaction not in self.transactions:
            raise _Refused(404, f"Transaction {transaction} not found")
        if method == "GET":
            return 200, self._transaction_state(transaction)
        if method == "DELETE":
            del self.transactions[transaction]
            return 200, {}
        if method == "PATCH" and (body or {}).get("state") == "VALIDATING":
            return self._commit(transaction)
        raise _Refused(400, f"{method} of a transaction with {body!r} is not supported by this fake")

    def _transaction_state(self, transaction: int) -> dict[str, Any]:
        state = self.transactions[transaction]
        return {"transId": transaction, "state": state["state"], "timeoutSeconds": 120, "asyncExecution": False,
                "validateOnly": False, "executionTimeout": 300, "failureReason": state.get("failure", ""),
                "kind": "tm:transactionstate"}

    def _queue(self, transaction: int, method: str, path: str, body: Any) -> tuple[int, Any]:
        state = self.transactions.get(transaction)
        if state is None or state["state"] != "STARTED":
            raise _Refused(400, f"Transaction {transaction} is not open")
        state["commands"].append((method, path, body))
        return 200, {"method": method, "uri": f"https://localhost{path}", "body": body,
                     "evalOrder": len(state["commands"]), "commandId": len(state["commands"])}

    def _commit(self, transaction: int) -> tuple[int, Any]:
        state = self.transactions[transaction]
        if state["state"] != "STARTED":
            raise _Refused(400, f"Transaction {transaction} is {state['state']}")
        if not state["commands"]:
            raise _Refused(400, "there is no command to commit in the transaction")
        candidate = copy.deepcopy(self.config)
        try:
            for method, path, body in state["commands"]:
                self._apply(candidate, method, path, body)
            if self.fail_next_commit is not None:
                message, self.fail_next_commit = self.fail_next_commit, None
                raise _Refused(400, message)
        except _Refused as refused:
            state.update(state="FAILED", failure=refused.message)
            raise _Refused(400, f"transaction failed:{refused.message}") from None
        self.config = candidate
        state["state"] = "COMPLETED"
        return 200, self._transaction_state(transaction)

    # --- configuration ------------------------------------------------------------------

    def _apply(self, config: Configuration, method: str, path: str, body: Any) -> tuple[int, Any]:
        if path in ("/mgmt/tm/sys/crypto/cert", "/mgmt/tm/sys/crypto/key") and method == "POST":
            return self._install(config, path.rsplit("/", 1)[1], body or {})
        if matched := _CRYPTO_ITEM.match(path):
            kind, partition, name = matched.groups()
            store = config.certificates if kind == "cert" else config.keys
            full = f"/{partition}/{name}"
            if full not in store:
                raise _Refused(404, f"01020036:3: The requested {kind} ({full}) was not found.")
            if method == "GET":
                return 200, self._object(kind, full, store[full])
            if method == "DELETE":
                users = [p for p, profile in config.profiles.items()
                         if any(full in (e.get("cert"), e.get("key"), e.get("chain")) for e in profile["certKeyChain"])]
                if users:
                    raise _Refused(400, f"01070621:3: {full} is in use by client-ssl profile {users[0]}")
                del store[full]
                return 200, {}
        if matched := _PROFILE_ITEM.match(path):
            full = f"/{matched.group(1)}/{matched.group(2)}"
            if full not in config.profiles:
                raise _Refused(404, f"01020036:3: The requested ClientSSL Profile ({full}) was not found.")
            if method == "GET":
                return 200, copy.deepcopy(config.profiles[full])
            if method == "PATCH":
                chain = (body or {}).get("certKeyChain")
                self._check_chain(config, full, chain)
                config.profiles[full]["certKeyChain"] = copy.deepcopy(chain)
                return 200, copy.deepcopy(config.profiles[full])
        raise _Refused(404, f"URI path {path} not registered in this fake")

    def _install(self, config: Configuration, kind: str, body: dict[str, Any]) -> tuple[int, Any]:
        source, name = str(body.get("from-local-file", "")), str(body.get("name", ""))
        if body.get("command") != "install" or not re.match(r"^/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", name):
            raise _Refused(400, "install needs command: install, a full /Partition/name and from-local-file")
        data = self.downloads.get(source.removeprefix(DOWNLOADS)) if source.startswith(DOWNLOADS) else None
        if data is None:
            raise _Refused(400, f"01070712:3: Local file {source} does not exist")
        try:
            if kind == "cert":
                x509.load_pem_x509_certificates(data)
            else:
                serialization.load_pem_private_key(data, password=None)
        except ValueError:
            raise _Refused(400, f"01070712:3: {source} is not a valid PEM {kind}") from None
        (config.certificates if kind == "cert" else config.keys)[name] = data
        return 200, self._object(kind, name, data)

    @staticmethod
    def _object(kind: str, full: str, data: bytes) -> dict[str, Any]:
        partition, name = full.strip("/").split("/")
        answer = {"kind": f"tm:sys:crypto:{kind}:{kind}state", "name": name, "partition": partition,
                  "fullPath": full}
        if kind == "cert":
            leaf = x509.load_pem_x509_certificates(data)[0]
            digest = hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest().upper()
            answer["fingerprint"] = "SHA256/" + ":".join(digest[i:i + 2] for i in range(0, 64, 2))
        return answer

    @staticmethod
    def _check_chain(config: Configuration, profile: str, chain: Any) -> None:
        if not isinstance(chain, list) or not chain:
            raise _Refused(400, f"01070315:3: profile {profile} requires a key")
        for entry in chain:
            certificate, key = entry.get("cert"), entry.get("key")
            if certificate not in config.certificates or key not in config.keys:
                raise _Refused(400, f"010717e3:3: Client SSL profile ({profile}): certificate ({certificate}) or"
                                    f" key ({key}) does not exist")
            chain_object = entry.get("chain") or "none"
            if chain_object != "none" and chain_object not in config.certificates:
                raise _Refused(400, f"010717e3:3: Client SSL profile ({profile}): chain ({chain_object}) does not"
                                    " exist")
            leaf_key = x509.load_pem_x509_certificates(config.certificates[certificate])[0].public_key()
            private = serialization.load_pem_private_key(config.keys[key], password=None)
            if leaf_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) != \
                    private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo):
                raise _Refused(400, f"01070313:3: Error reading key PEM file {key} for profile {profile}: key and"
                                    " certificate do not match")


class _Tls13Config(Config):
    def create_ssl_context(self) -> ssl.SSLContext | None:
        context = super().create_ssl_context()
        if context is not None:
            context.minimum_version = ssl.TLSVersion.TLSv1_3
        return context


async def start_fake_f5(nursery: trio.Nursery, directory: Path, pki: TestPki, *, username: str,
                        password: str) -> FakeBigIp:
    """Serve a fake BIG-IP on 127.0.0.1 (a free port) until ``nursery`` ends."""
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = pki.server()
    (directory / "server.crt").write_bytes(certificate)
    (directory / "server.key").write_bytes(key)
    fake = FakeBigIp(username=username, password=password)
    fake.tls_fingerprint = hashlib.sha256(
        x509.load_pem_x509_certificate(certificate).public_bytes(Encoding.DER)).hexdigest()
    config = _Tls13Config()
    config.bind = ["127.0.0.1:0"]
    config.certfile, config.keyfile = str(directory / "server.crt"), str(directory / "server.key")
    config.alpn_protocols = ["http/1.1"]
    config.accesslog = None
    config.errorlog = logging.getLogger("fake-f5")
    config.graceful_timeout = 0.1
    binds = await nursery.start(serve, fake, config)
    fake.url = binds[0].replace("http://", "https://")
    return fake
