"""The agent's HTTPS client: pinned coordinator CA, TLS 1.3, every request signed,
``https://`` URLs only (checked before anything is sent)."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import httpx
import msgspec
import trio
from cryptography.hazmat.primitives.asymmetric import ed25519

from certfleet.shared import wire
from certfleet.shared.agent_token import AUTH_SCHEME, sign_request_token
from certfleet.shared.api import operation
from certfleet.shared.connection import require_https

__all__ = ["TIMEOUTS", "TRUST_HINT", "CoordinatorClient", "CoordinatorError", "pinned_context"]

TIMEOUTS: tuple[type[BaseException], ...] = (httpx.TimeoutException, trio.TooSlowError)
"""What a request to the coordinator raises when no answer comes in time."""
TRUST_HINT = ("the coordinator's certificate must chain to the CA pinned at enrollment (ca_fingerprint);"
              " if the coordinator's CA changed, enroll again with its new fingerprint")


class CoordinatorError(Exception):
    """The coordinator refused the request (4xx): retrying the same request won't help."""

    def __init__(self, status: int, problem: dict[str, Any], *, request_id: str | None = None) -> None:
        self.status = status
        self.problem = problem
        self.slug = str(problem.get("type", "")).rsplit(":", 1)[-1]
        detail = problem.get("detail") or problem.get("title")
        if not detail:
            # No problem document (a proxy's error page, a crash before the handler):
            # say what is known and where the cause is.
            try:
                detail = HTTPStatus(status).phrase
            except ValueError:
                detail = "error"
            detail += " with no detail"
            if request_id and request_id != "-":
                detail += f" (request id {request_id})"
            if status >= 500:
                detail += "; the coordinator's log has the cause"
        self.detail = detail
        super().__init__(f"{status} {self.slug}: {detail}" if self.slug else f"{status} {detail}")


def pinned_context(ca_pem: bytes) -> ssl.SSLContext:
    """Trust only the coordinator's pinned CA; TLS 1.3 only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cadata=ca_pem.decode())
    return context


class CoordinatorClient:
    def __init__(self, base_url: str, *, ca_pem: bytes, agent_id: str | None = None,
                 identity: ed25519.Ed25519PrivateKey | None = None, timeout: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        """Raises :class:`certfleet.shared.connection.InsecureUrl` (before anything is
        sent) unless ``base_url`` is ``https://``."""
        base_url = require_https(base_url, setting="the coordinator URL")
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), verify=pinned_context(ca_pem),
                                         timeout=httpx.Timeout(timeout, read=timeout + 35))
        self._agent_id = agent_id
        self._identity = identity
        self._clock = clock

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(self, name: str, body: msgspec.Struct | None = None, *,
                   query: dict[str, Any] | None = None, **params: str) -> Any:
        """Call a catalogue operation; raises :class:`CoordinatorError` on 4xx and
        ``httpx.HTTPError`` (or :class:`CoordinatorError` with status ≥ 500) otherwise."""
        op = operation(name)
        path = op.url_path(**params)
        headers = {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._identity is not None and self._agent_id is not None:
            token = sign_request_token(self._identity, agent_id=self._agent_id, method=op.method,
                                       path=path, now=int(self._clock()))
            headers["Authorization"] = f"{AUTH_SCHEME} {token}"
        response = await self._client.request(
            op.method, path, params=query, headers=headers,
            content=wire.encode(body) if body is not None else None,
        )
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.text[:200].strip()}
            if not isinstance(problem, dict):
                problem = {}
            raise CoordinatorError(response.status_code, problem, request_id=response.headers.get("X-Request-Id"))
        return msgspec.json.decode(response.content, type=op.output)
