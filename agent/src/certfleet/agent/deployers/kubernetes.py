"""The ``kubernetes-secret`` target: a ``kubernetes.io/tls`` Secret written through the
Kubernetes API (core/v1 Secrets: ``GET``, ``POST``, ``PUT``, ``DELETE`` on
``/api/v1/namespaces/{namespace}/secrets/{name}``), for an Ingress controller or any
pod that mounts it.

The same rules as the file pipeline, over the API instead of a filesystem:

1. a per-Secret lock, so two orders never interleave on one Secret;
2. a snapshot of the Secret as it was (its type, data and labels, or its absence) in
   the agent's state, once per order, before anything is written;
3. idempotency: a Secret that already holds this ``tls.crt`` (leaf and chain) and
   ``tls.key`` is left alone;
4. an optimistic write: ``PUT`` with the ``resourceVersion`` that was read (so a
   concurrent change makes it fail with 409 instead of being overwritten), or ``POST``
   for a Secret that does not exist yet;
5. on a failed write, rollback: if the new data did land (a timeout or a 5xx after the
   commit) the previous data is put back, or the Secret this order created is deleted;
   a Secret that someone else changed meanwhile is left as they wrote it.

Credentials come from a kubeconfig file or, without one, from the pod's service
account (parsed in :mod:`.kubeconfig`). Tokens and keys are never logged nor put in
an error. Proxies and other environment settings are ignored (``trust_env=False``):
the API server is reached directly.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from certfleet.shared.targets import KubernetesSecretTarget

from ..secrets import Secrets
from ..state import AgentState, Snapshot
from .base import Bundle, DeployError, DeployOutcome
from .kubeconfig import SERVICE_ACCOUNT_DIR, Credentials, CredentialsError, load_credentials

__all__ = ["SERVICE_ACCOUNT_DIR", "CredentialsError", "Credentials", "KubernetesDeployer", "load_credentials"]

log = logging.getLogger("certfleet.agent.deploy")

REQUEST_TIMEOUT = 30.0
"""Seconds for each API call (connect, send, answer)."""

TLS_TYPE = "kubernetes.io/tls"
MANAGED_BY = {"app.kubernetes.io/managed-by": "certfleet"}

_locks: dict[str, trio.Lock] = {}


class ApiError(Exception):
    """An API call failed: ``status`` is the HTTP status, ``None`` when there was no
    answer (connection, TLS, timeout)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --- the Secrets API -------------------------------------------------------------------

class _SecretsApi:
    """The four calls on one Secret; every failure leaves as :class:`ApiError`."""

    def __init__(self, client: httpx.AsyncClient, credentials: Credentials, namespace: str, name: str) -> None:
        self.client, self.credentials = client, credentials
        self.namespace, self.name = namespace, name
        self.collection = f"/api/v1/namespaces/{namespace}/secrets"
        self.item = f"{self.collection}/{name}"

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> httpx.Response:
        try:
            with trio.fail_after(REQUEST_TIMEOUT + 5):
                return await self.client.request(method, path, json=body)
        except trio.TooSlowError:
            raise ApiError(f"no answer from {self.credentials.server} within {REQUEST_TIMEOUT:.0f}s") from None
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach {self.credentials.server}: {str(exc) or type(exc).__name__}") from None

    def _fail(self, response: httpx.Response, action: str) -> ApiError:
        try:
            message = str(response.json().get("message") or "")
        except (ValueError, AttributeError):
            message = ""
        status = response.status_code
        if status == 401:
            text = (f"the API server refused the credentials from {self.credentials.source}"
                    " (401 Unauthorized): the token or client certificate is not valid for this cluster")
        elif status == 403:
            text = (f"{action} is forbidden (403): {message or 'no reason given'}; the account needs get, create,"
                    " update and delete on secrets in this namespace")
        elif status == 409:
            text = f"{action} conflicted with a concurrent change (409): {message}"
        else:
            text = f"{action} failed with HTTP {status}: {message or response.reason_phrase}"
        return ApiError(text, status)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise ApiError("the API server's answer is not JSON", response.status_code) from None
        if not isinstance(body, dict):
            raise ApiError("the API server's answer is not an object", response.status_code)
        return body

    async def get(self) -> dict[str, Any] | None:
        response = await self._call("GET", self.item)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, "reading the Secret")
        return self._json(response)

    async def create(self, secret: Mapping[str, Any]) -> None:
        response = await self._call("POST", self.collection, secret)
        if response.status_code not in (200, 201, 202):
            raise self._fail(response, "creating the Secret")

    async def replace(self, secret: Mapping[str, Any]) -> None:
        response = await self._call("PUT", self.item, secret)
        if response.status_code not in (200, 201):
            raise self._fail(response, "replacing the Secret")

    async def delete(self, resource_version: str) -> None:
        response = await self._call("DELETE", self.item, {
            "apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"resourceVersion": resource_version}})
        if response.status_code not in (200, 202, 404):
            raise self._fail(response, "deleting the Secret")


# --- Secret contents -------------------------------------------------------------------

def tls_data(bundle: Bundle) -> dict[str, str]:
    """``tls.crt`` (leaf then intermediates) and ``tls.key``, base64 as the API wants."""
    return {"tls.crt": base64.b64encode(bundle.certificate + bundle.chain).decode(),
            "tls.key": base64.b64encode(bundle.private_key).decode()}


def _decoded(data: Any) -> dict[str, bytes] | None:
    if not isinstance(data, Mapping):
        return None
    try:
        return {str(k): base64.b64decode(str(v), validate=True) for k, v in data.items()}
    except binascii.Error:
        return None


def _holds(secret: Mapping[str, Any] | None, data: Mapping[str, str]) -> bool:
    """Whether ``secret`` already carries ``data`` (other keys it has, such as
    ``ca.crt``, do not matter)."""
    if secret is None or secret.get("type") != TLS_TYPE:
        return False
    present = _decoded(secret.get("data") or {})
    return present is not None and {key: present.get(key) for key in data} == _decoded(data)


def _metadata(secret: Mapping[str, Any]) -> dict[str, Any]:
    return dict(secret.get("metadata") or {})


def _with(current: Mapping[str, Any], *, type_: str, data: Mapping[str, str],
          labels: Mapping[str, str]) -> dict[str, Any]:
    """``current`` (its metadata, with its ``resourceVersion``) carrying new contents."""
    metadata = _metadata(current)
    metadata.pop("managedFields", None)
    metadata["labels"] = dict(labels)
    secret = {k: v for k, v in current.items() if k not in ("data", "stringData", "type", "metadata")}
    return {**secret, "apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": type_, "data": dict(data)}


@dataclass(frozen=True)
class _Previous:
    """The Secret as it was before an order, as kept in the snapshot."""

    existed: bool
    type: str = TLS_TYPE
    data: Mapping[str, str] = field(default_factory=dict, repr=False)
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, secret: Mapping[str, Any] | None) -> _Previous:
        if secret is None:
            return cls(False)
        return cls(True, str(secret.get("type") or "Opaque"), dict(secret.get("data") or {}),
                   dict(_metadata(secret).get("labels") or {}))

    def to_snapshot(self, name: str) -> Snapshot:
        content = json.dumps({"type": self.type, "data": dict(self.data), "labels": dict(self.labels)}).encode() \
            if self.existed else b""
        return Snapshot(name, self.existed, content, 0, 0, 0)

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> _Previous:
        if not snapshot.existed:
            return cls(False)
        saved = json.loads(snapshot.content)
        return cls(True, saved["type"], saved["data"], saved["labels"])

    def matches(self, secret: Mapping[str, Any] | None) -> bool:
        if secret is None or not self.existed:
            return secret is None and not self.existed
        return secret.get("type") == self.type and _decoded(secret.get("data") or {}) == _decoded(self.data)


# --- the deployer ----------------------------------------------------------------------

class KubernetesDeployer:
    def __init__(self, state: AgentState, secrets: Secrets) -> None:
        self.state = state
        self.secrets = secrets

    @staticmethod
    def snapshot_name(target: KubernetesSecretTarget) -> str:
        return f"kubernetes-secret:{target.namespace}/{target.name}"

    @staticmethod
    def describe(target: KubernetesSecretTarget) -> list[str]:
        """The plan in words, for ``certfleet-agent deploy --dry-run``; reads nothing."""
        source = (f"kubeconfig {target.kubeconfig}" + (f" (context {target.context})" if target.context
                                                       else " (its current-context)")
                  if target.kubeconfig else f"the pod's service account ({SERVICE_ACCOUNT_DIR})")
        return [
            "kind: kubernetes-secret",
            f"API credentials: {source}",
            f"write Secret {target.namespace}/{target.name} (type {TLS_TYPE}; tls.crt: leaf and chain;"
            " tls.key: private key material; label app.kubernetes.io/managed-by=certfleet)",
            "unchanged if it already holds this certificate and key; replaced with its resourceVersion,"
            " so a concurrent change fails the write instead of being lost",
            "on failure: put the previous data back, or delete the Secret if it did not exist",
        ]

    @staticmethod
    def _credentials(target: KubernetesSecretTarget) -> tuple[Credentials, ssl.SSLContext]:
        try:
            credentials = load_credentials(target)
            return credentials, credentials.ssl_context()
        except CredentialsError as exc:
            raise DeployError(str(exc), step="prepare") from None

    @staticmethod
    def _client(credentials: Credentials, context: ssl.SSLContext) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=credentials.server, verify=context, headers=credentials.headers(),
                                 timeout=httpx.Timeout(REQUEST_TIMEOUT), follow_redirects=False, trust_env=False)

    def _previous(self, order_id: str, target: KubernetesSecretTarget, current: Mapping[str, Any] | None,
                  ) -> _Previous:
        """The snapshot of this order, taken now if this is its first attempt."""
        name = self.snapshot_name(target)
        for snapshot in self.state.snapshots(order_id) or []:
            if snapshot.name == name:
                return _Previous.from_snapshot(snapshot)
        previous = _Previous.of(current)
        self.state.save_snapshots(order_id, [previous.to_snapshot(name)])
        return previous

    async def deploy(self, order_id: str, target: KubernetesSecretTarget, bundle: Bundle) -> DeployOutcome:
        """Make the Secret hold ``bundle``. Raises :class:`DeployError`: step ``prepare``
        for credentials or a Secret of another type, ``apply`` for a failed API call
        (with the rollback outcome)."""
        credentials, context = self._credentials(target)
        where = f"Secret {target.namespace}/{target.name}"
        wanted = tls_data(bundle)
        async with _locks.setdefault(f"{credentials.server} {target.namespace}/{target.name}", trio.Lock()), \
                self._client(credentials, context) as client:
            api = _SecretsApi(client, credentials, target.namespace, target.name)
            try:
                current = await api.get()
            except ApiError as exc:
                raise DeployError(f"cannot read {where}: {exc}; nothing changed", step="apply") from None
            if current is not None and current.get("type") != TLS_TYPE:
                raise DeployError(f"{where} exists with type {current.get('type')!r}; a Secret's type cannot be"
                                  f" changed to {TLS_TYPE}: delete it or name another Secret", step="prepare")
            previous = self._previous(order_id, target, current)
            if previous.existed and _holds(current, wanted) and previous.matches(current):
                log.info("%s already holds this certificate: nothing written", where)
                return DeployOutcome((), False, bundle.fingerprint_sha256)
            try:
                if current is None:
                    await api.create({"apiVersion": "v1", "kind": "Secret", "type": TLS_TYPE, "data": wanted,
                                      "metadata": {"name": target.name, "namespace": target.namespace,
                                                   "labels": dict(MANAGED_BY)}})
                elif not _holds(current, wanted):
                    labels = {**(_metadata(current).get("labels") or {}), **MANAGED_BY}
                    # Keys certfleet does not write (``ca.crt``…) stay as they are.
                    data = {**(current.get("data") or {}), **wanted}
                    await api.replace(_with(current, type_=TLS_TYPE, data=data, labels=labels))
            except ApiError as exc:
                log.warning("writing %s failed (%s); undoing", where, exc)
                outcome, restored = await self._undo(api, previous, wanted)
                raise DeployError(f"cannot write {where}: {exc}; {outcome}", step="apply",
                                  rolled_back=restored) from None
            log.info("deployed %s", where)
            return DeployOutcome((self.snapshot_name(target),), False, bundle.fingerprint_sha256)

    async def _undo(self, api: _SecretsApi, previous: _Previous, wanted: Mapping[str, str]) -> tuple[str, bool]:
        """After a failed write: put the previous Secret back only if the new data landed."""
        try:
            current = await api.get()
            if _holds(current, wanted):
                return await self._put_back(api, previous, current), True
            if previous.matches(current):
                return "the previous Secret is unchanged", True
            return "the Secret was changed by someone else meanwhile and is left as they wrote it", False
        except ApiError as exc:
            return f"rollback FAILED: {exc}", False

    @staticmethod
    async def _put_back(api: _SecretsApi, previous: _Previous, current: Mapping[str, Any] | None) -> str:
        if not previous.existed:
            if current is None:
                return "the Secret did not exist before and does not now"
            await api.delete(str(_metadata(current).get("resourceVersion") or ""))
            return "the Secret, which did not exist before, was deleted"
        if current is None:
            await api.create({"apiVersion": "v1", "kind": "Secret", "type": previous.type, "data": dict(previous.data),
                              "metadata": {"name": api.name, "namespace": api.namespace,
                                           "labels": dict(previous.labels)}})
            return "the previous Secret was created again"
        await api.replace(_with(current, type_=previous.type, data=previous.data, labels=previous.labels))
        return "the previous Secret data restored"

    async def roll_back_order(self, order_id: str, target: KubernetesSecretTarget) -> str:
        """Put the Secret back as it was before ``order_id`` ran (an operator's
        ``certfleet-agent rollback``). Raises :class:`DeployError`."""
        name = self.snapshot_name(target)
        snapshot = next((s for s in self.state.snapshots(order_id) or [] if s.name == name), None)
        if snapshot is None:
            raise DeployError(f"work order {order_id} left no snapshot of {name}", step="prepare")
        previous = _Previous.from_snapshot(snapshot)
        credentials, context = self._credentials(target)
        async with _locks.setdefault(f"{credentials.server} {target.namespace}/{target.name}", trio.Lock()), \
                self._client(credentials, context) as client:
            api = _SecretsApi(client, credentials, target.namespace, target.name)
            try:
                current = await api.get()
                if previous.matches(current):
                    return "the Secret is already as it was before the order"
                return await self._put_back(api, previous, current)
            except ApiError as exc:
                raise DeployError(f"rollback of Secret {target.namespace}/{target.name} FAILED: {exc}",
                                  step="apply") from None
