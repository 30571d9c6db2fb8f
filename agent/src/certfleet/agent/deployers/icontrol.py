"""The iControl REST calls the ``f5`` deployer makes on a BIG-IP, and how the device
is authenticated before any of them is sent.

The calls, as F5 documents them (iControl REST API User Guide; "Demystifying iControl
REST" parts 5 and 6 on DevCentral):

* ``POST /mgmt/shared/authn/login`` (``loginProviderName``, default ``tmos``) returns
  a token, sent as ``X-F5-Auth-Token`` on every later call and deleted at the end with
  ``DELETE /mgmt/shared/authz/tokens/{token}``;
* ``POST /mgmt/shared/file-transfer/uploads/{file}`` with ``Content-Range:
  start-end/size`` (at most 1 MiB per request) puts a file in
  ``/var/config/rest/downloads``; ``POST /mgmt/tm/util/unix-rm`` removes it again;
* ``POST /mgmt/tm/sys/crypto/cert`` and ``/key`` with ``command: install`` and
  ``from-local-file`` make certificate and key objects; ``GET`` and ``DELETE`` on
  ``…/~Partition~name`` read and remove one;
* ``POST /mgmt/tm/transaction`` opens a transaction; a request carrying
  ``X-F5-REST-Coordination-Id`` is queued in it instead of applied; ``PATCH
  /mgmt/tm/transaction/{id}`` with ``state: VALIDATING`` — sent *without* that header,
  or it would be queued too — validates and applies the queue all or nothing;
* ``GET``/``PATCH /mgmt/tm/ltm/profile/client-ssl/~Partition~name`` read and change a
  profile's ``certKeyChain``.

The management interface proves its identity first (:class:`Trust`): its TLS
certificate must have the pinned SHA-256 fingerprint — compared right after the
handshake, through httpx's ``trace`` request extension, before the first byte of a
request, so a device that is not the pinned one never sees the password — or chain to
the configured CA bundle, with the host name checked.

Every failure leaves as :class:`F5Error` (a certificate that is not the pinned one as
:class:`DeviceRefused`); passwords and tokens are never put in either.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certfleet.shared.targets import F5Target, normalize_sha256_fingerprint

from .base import DeployError

__all__ = ["COORDINATION_HEADER", "DOWNLOADS", "REQUEST_TIMEOUT", "TRANSACTION_TIMEOUT", "UPLOAD_CHUNK", "BigIp",
           "DeviceRefused", "F5Error", "Trust"]

log = logging.getLogger("certfleet.agent.deploy")

REQUEST_TIMEOUT = 30.0
"""Seconds for each call (connect, send, answer)."""
TRANSACTION_TIMEOUT = 120.0
"""Seconds a transaction may take to validate and apply (F5's default limit)."""
UPLOAD_CHUNK = 512 * 1024
"""Bytes per upload request; the file-transfer worker refuses more than 1 MiB."""
DOWNLOADS = "/var/config/rest/downloads"
"""Where the file-transfer worker puts uploads."""
COORDINATION_HEADER = "X-F5-REST-Coordination-Id"


class F5Error(Exception):
    """A call failed: ``status`` is the HTTP status, ``None`` without an answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DeviceRefused(Exception):
    """The management interface's TLS certificate is not the pinned one."""

    def __init__(self, url: str, expected: str, seen: str) -> None:
        super().__init__(f"refused {url}: its TLS certificate has SHA-256 fingerprint {seen}, but the target pins"
                         f" {expected}; if the device's certificate really changed, update the target")


# --- trust --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Trust:
    """How the management interface is authenticated: the TLS context, and the
    fingerprint its certificate must have (``None`` when a CA bundle decides)."""

    context: ssl.SSLContext
    fingerprint: str | None

    @classmethod
    def of(cls, target: F5Target) -> Trust:
        """Raises :class:`DeployError` (step ``prepare``) for an unreadable CA bundle."""
        if target.ca_bundle is not None:
            try:
                context = ssl.create_default_context(cafile=target.ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                raise DeployError(f"cannot load the CA bundle {target.ca_bundle}: {exc}", step="prepare") from None
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            return cls(context, None)
        if target.server_certificate is not None:
            certificate = x509.load_pem_x509_certificate(target.server_certificate.encode())
            fingerprint = hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()
        else:
            fingerprint = normalize_sha256_fingerprint(target.server_fingerprint or "")
        # A device's own certificate is usually self-signed and names no host: the pin,
        # checked in :meth:`check_connection`, is the authentication.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return cls(context, fingerprint)

    async def check_connection(self, event: str, info: Mapping[str, Any]) -> None:
        """httpx's ``trace`` request extension, called by httpcore as each new
        connection is set up: right after the TLS handshake, before any byte of the
        request, compare the certificate with the pin and drop the connection if it
        differs."""
        if event != "connection.start_tls.complete" or self.fingerprint is None:
            return
        stream = info["return_value"]
        ssl_object = stream.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        seen = hashlib.sha256(der).hexdigest() if der else "(no certificate)"
        if seen != self.fingerprint:
            await stream.aclose()
            raise _PinMismatch(self.fingerprint, seen)


class _PinMismatch(Exception):
    def __init__(self, expected: str, seen: str) -> None:
        super().__init__(expected, seen)
        self.expected, self.seen = expected, seen


# --- the iControl REST calls --------------------------------------------------------------

def _reason(exc: BaseException) -> str:
    """The first message along an exception's chain: httpx over trio wraps a failed
    TLS handshake as an empty ``ConnectError`` caused by the ``SSLError`` that says why."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if str(seen):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


def _item(partition: str, name: str) -> str:
    """``~Partition~name``, how iControl REST spells a full path in a URL."""
    return f"~{partition}~{name}"


class BigIp:
    """The calls this deployer makes; every failure leaves as :class:`F5Error`, and a
    certificate that is not the pinned one as :class:`DeviceRefused`."""

    def __init__(self, client: httpx.AsyncClient, target: F5Target, trust: Trust) -> None:
        self.client, self.target, self.trust = client, target, trust
        self.token: str | None = None
        self.profile_path = f"/mgmt/tm/ltm/profile/client-ssl/{_item(target.partition, target.profile)}"

    async def _call(self, method: str, path: str, *, body: Any = None, content: bytes | None = None,
                    headers: Mapping[str, str] | None = None) -> httpx.Response:
        sent = dict(headers or {})
        if self.token is not None:
            sent["X-F5-Auth-Token"] = self.token
        try:
            with trio.fail_after(REQUEST_TIMEOUT + 5):
                return await self.client.request(method, path, json=body, content=content, headers=sent,
                                                 extensions={"trace": self.trust.check_connection})
        except _PinMismatch as exc:
            raise DeviceRefused(self.target.url, exc.expected, exc.seen) from None
        except trio.TooSlowError:
            raise F5Error(f"no answer from {self.target.url} within {REQUEST_TIMEOUT:.0f}s") from None
        except httpx.HTTPError as exc:
            raise F5Error(f"cannot reach {self.target.url}: {_reason(exc)}") from None

    @staticmethod
    def _message(response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return response.reason_phrase
        if isinstance(body, dict):
            return str(body.get("message") or body.get("failureReason") or response.reason_phrase)
        return response.reason_phrase

    def _fail(self, response: httpx.Response, action: str) -> F5Error:
        status = response.status_code
        if status == 401:
            return F5Error(f"{action}: the device no longer accepts the session token (401)", status)
        return F5Error(f"{action} failed with HTTP {status}: {self._message(response)}", status)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise F5Error("the device's answer is not JSON", response.status_code) from None
        if not isinstance(body, dict):
            raise F5Error("the device's answer is not an object", response.status_code)
        return body

    # --- session ------------------------------------------------------------------------

    async def login(self, username: str, password: str, secret_name: str) -> None:
        response = await self._call("POST", "/mgmt/shared/authn/login", body={
            "username": username, "password": password, "loginProviderName": self.target.login_provider})
        if response.status_code in (400, 401, 403):
            raise F5Error(f"{self.target.url} refused the credentials in the agent's secret {secret_name!r}"
                          f" (HTTP {response.status_code}: {self._message(response)})", response.status_code)
        if response.status_code != 200:
            raise self._fail(response, "logging in")
        token = (self._json(response).get("token") or {}).get("token")
        if not isinstance(token, str) or not token:
            raise F5Error("the device's login answer holds no token")
        self.token = token

    async def logout(self) -> None:
        """Delete the token (each user may hold only 100); a failure only costs a token
        that expires by itself."""
        if self.token is None:
            return
        try:
            await self._call("DELETE", f"/mgmt/shared/authz/tokens/{self.token}")
        except (F5Error, DeviceRefused):
            log.warning("could not delete the iControl REST token on %s; it expires by itself", self.target.url)
        self.token = None

    # --- objects ------------------------------------------------------------------------

    async def get_profile(self) -> dict[str, Any] | None:
        response = await self._call("GET", self.profile_path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, "reading the client-ssl profile")
        return self._json(response)

    async def patch_profile(self, chain: list[dict[str, Any]], transaction: int | None = None) -> None:
        headers = {COORDINATION_HEADER: str(transaction)} if transaction is not None else None
        response = await self._call("PATCH", self.profile_path, body={"certKeyChain": chain}, headers=headers)
        if response.status_code != 200:
            raise self._fail(response, "changing the client-ssl profile")

    async def get_object(self, kind: str, name: str) -> dict[str, Any] | None:
        response = await self._call("GET", f"/mgmt/tm/sys/crypto/{kind}/{_item(self.target.partition, name)}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, f"reading the {kind} object {name}")
        return self._json(response)

    async def upload(self, file_name: str, data: bytes) -> None:
        """The file in chunks, each with its ``Content-Range: start-end/size``."""
        total = len(data)
        for start in range(0, max(total, 1), UPLOAD_CHUNK):
            chunk = data[start:start + UPLOAD_CHUNK]
            response = await self._call(
                "POST", f"/mgmt/shared/file-transfer/uploads/{file_name}", content=chunk,
                headers={"Content-Type": "application/octet-stream",
                         "Content-Range": f"{start}-{start + len(chunk) - 1}/{total}"})
            if response.status_code != 200:
                raise self._fail(response, f"uploading {file_name}")

    async def remove_upload(self, file_name: str) -> None:
        response = await self._call("POST", "/mgmt/tm/util/unix-rm",
                                    body={"command": "run", "utilCmdArgs": f"{DOWNLOADS}/{file_name}"})
        if response.status_code != 200:
            raise self._fail(response, f"removing the uploaded {file_name}")

    async def install(self, kind: str, name: str, file_name: str) -> None:
        response = await self._call("POST", f"/mgmt/tm/sys/crypto/{kind}", body={
            "command": "install", "name": f"/{self.target.partition}/{name}",
            "from-local-file": f"{DOWNLOADS}/{file_name}"})
        if response.status_code != 200:
            raise self._fail(response, f"installing the {kind} object {name}")

    async def delete_object(self, kind: str, name: str) -> None:
        response = await self._call("DELETE", f"/mgmt/tm/sys/crypto/{kind}/{_item(self.target.partition, name)}")
        if response.status_code not in (200, 404):
            raise self._fail(response, f"deleting the {kind} object {name}")

    # --- transactions -------------------------------------------------------------------

    async def begin(self) -> int:
        response = await self._call("POST", "/mgmt/tm/transaction", body={})
        if response.status_code != 200:
            raise self._fail(response, "opening a transaction")
        transaction = self._json(response).get("transId")
        if not isinstance(transaction, int):
            raise F5Error("the device's transaction answer holds no transId")
        return transaction

    async def commit(self, transaction: int) -> None:
        """Validate and apply the queued commands. Raises :class:`F5Error` unless the
        device reports ``COMPLETED``; waits while it reports ``VALIDATING``."""
        path = f"/mgmt/tm/transaction/{transaction}"
        response = await self._call("PATCH", path, body={"state": "VALIDATING"})
        with trio.move_on_after(TRANSACTION_TIMEOUT):
            while True:
                if response.status_code != 200:
                    raise self._fail(response, f"committing transaction {transaction}")
                state = self._json(response).get("state")
                if state == "COMPLETED":
                    return
                if state not in ("VALIDATING", "STARTED"):
                    raise F5Error(f"transaction {transaction} ended {state}: {self._message(response)}")
                await trio.sleep(1.0)
                response = await self._call("GET", path)
        raise F5Error(f"transaction {transaction} was still validating after {TRANSACTION_TIMEOUT:.0f}s")

    async def abandon(self, transaction: int) -> None:
        try:
            await self._call("DELETE", f"/mgmt/tm/transaction/{transaction}")
        except (F5Error, DeviceRefused):
            log.warning("could not delete transaction %s on %s; the device drops it when it times out",
                        transaction, self.target.url)
