"""The operator's API client, driven by the operation catalogue.

It speaks only to ``https://`` URLs (it sends an API key with every request), and a
connection that fails raises :class:`ConnectionFailure` with one line naming the URL,
what failed and what to do.
"""

from __future__ import annotations

import ssl
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import msgspec

from certfleet.shared import wire
from certfleet.shared.api import operation
from certfleet.shared.connection import InsecureUrl, describe_failure, display_url, require_https

__all__ = ["ApiClient", "ApiError", "ConnectionFailure", "tls_context"]

TRUST_HINT = ("pass --ca-bundle (or set CERTFLEET_CA_BUNDLE) to the coordinator's CA certificate,"
              " which it writes to DATA_DIR/tls/ca.pem")


class ApiError(Exception):
    """The coordinator answered with a problem document (RFC 9457)."""

    def __init__(self, status: int, problem: dict[str, Any], *, request_id: str | None = None) -> None:
        self.status = status
        self.problem = problem
        detail = problem.get("detail") or problem.get("title")
        if detail:
            super().__init__(f"{status} {problem.get('type', '')}: {detail}")
            return
        # No problem document (a proxy's error page, a crash before the handler):
        # say what is known and where the cause is.
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "error"
        where = f" (request id {request_id})" if request_id and request_id != "-" else ""
        advice = ("the coordinator's log has the cause" if status >= 500
                  else "check the command's arguments")
        super().__init__(f"{status} {phrase} with no detail{where}: {advice}")


class ConnectionFailure(Exception):
    """No answer from the coordinator: a bad URL, DNS, a refused connection, TLS
    verification, a protocol mismatch, or an unusable CA bundle. The message is one
    line saying what failed and what to do."""


def tls_context(ca_bundle: Path | str | None) -> ssl.SSLContext:
    """TLS 1.3 only, trusting ``ca_bundle`` (the coordinator's root) if given; raises
    :class:`ConnectionFailure` if that file is missing or holds no certificate."""
    if ca_bundle:
        path = Path(ca_bundle)
        if not path.is_file():
            raise ConnectionFailure(f"the CA bundle {path} does not exist: {TRUST_HINT}")
    try:
        context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    except ssl.SSLError as exc:
        raise ConnectionFailure(f"the CA bundle {ca_bundle} holds no PEM certificate ({exc.reason}):"
                                f" {TRUST_HINT}") from None
    except OSError as exc:
        raise ConnectionFailure(f"cannot read the CA bundle {ca_bundle}: {exc.strerror}: {TRUST_HINT}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


class ApiClient:
    def __init__(self, base_url: str, *, api_key: str | None, ca_bundle: Path | str | None,
                 timeout: float = 30.0, url_setting: str = "the coordinator URL") -> None:
        """Raises :class:`ConnectionFailure` for a URL that is not ``https://`` (before
        anything is sent) or an unusable ``ca_bundle``. ``url_setting`` names where the
        URL came from, for that message."""
        try:
            base_url = require_https(base_url, setting=url_setting)
        except InsecureUrl as exc:
            raise ConnectionFailure(str(exc)) from None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers,
                                         verify=tls_context(ca_bundle), timeout=timeout)

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def call(self, name: str, body: msgspec.Struct | None = None, *, result: Any = None,
                   query: dict[str, Any] | None = None, **params: str) -> Any:
        """Call a catalogue operation; raises :class:`ApiError` when the coordinator
        refuses and :class:`ConnectionFailure` when it cannot be reached."""
        op = operation(name)
        content = wire.encode(body) if body is not None else None
        response = await self._send(op, op.url_path(**params), query=query, content=content)
        if op.content_type != "application/json":
            return response.text
        decoded = msgspec.json.decode(response.content, type=result or op.output or Any)
        next_page = response.links.get("next", {}).get("url")
        if op.paged and next_page and not (query and {"after", "limit"} & set(query)):
            # The whole list unless the caller asked for one page: follow the next links.
            # The link carries the whole query, ``after`` moved on (RFC 8288).
            while next_page:
                response = await self._send(op, next_page)
                decoded.extend(msgspec.json.decode(response.content, type=result or op.output or Any))
                next_page = response.links.get("next", {}).get("url")
        return decoded

    async def _send(self, op: Any, path: str, *, query: dict[str, Any] | None = None,
                    content: bytes | None = None) -> httpx.Response:
        """One request; a refusal becomes :class:`ApiError`, a failure to connect
        :class:`ConnectionFailure`."""
        url = str(self._client.base_url)
        try:
            response = await self._client.request(
                op.method, path, content=content, params=query,
                headers={"Content-Type": "application/json"} if content is not None else None,
            )
        except httpx.TimeoutException:
            raise ConnectionFailure(f"no answer from {display_url(url)} within {self._client.timeout.read:.0f} s:"
                                    " check the address, and that the coordinator is not overloaded") from None
        except httpx.TransportError as exc:
            raise ConnectionFailure(describe_failure(url, exc, trust_hint=TRUST_HINT)) from None
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.text[:200].strip()}
            if not isinstance(problem, dict):
                problem = {}
            raise ApiError(response.status_code, problem, request_id=response.headers.get("X-Request-Id"))
        return response
