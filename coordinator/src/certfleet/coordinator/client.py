"""The operator's API client, driven by the operation catalogue."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
import msgspec

from certfleet.shared import wire
from certfleet.shared.api import operation

__all__ = ["ApiClient", "ApiError", "tls_context"]


class ApiError(Exception):
    """The coordinator answered with a problem document (RFC 9457)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        detail = problem.get("detail") or problem.get("title") or "error"
        super().__init__(f"{status} {problem.get('type', '')}: {detail}")


def tls_context(ca_bundle: Path | str | None) -> ssl.SSLContext:
    """TLS 1.3 only, trusting ``ca_bundle`` (the coordinator's root) if given."""
    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


class ApiClient:
    def __init__(self, base_url: str, *, api_key: str | None, ca_bundle: Path | str | None,
                 timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers,
                                         verify=tls_context(ca_bundle), timeout=timeout)

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def call(self, name: str, body: msgspec.Struct | None = None, *, result: Any = None,
                   query: dict[str, Any] | None = None, **params: str) -> Any:
        op = operation(name)
        content = wire.encode(body) if body is not None else None
        response = await self._client.request(
            op.method, op.url_path(**params), content=content, params=query,
            headers={"Content-Type": "application/json"} if content is not None else None,
        )
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.text[:200]}
            raise ApiError(response.status_code, problem)
        if op.content_type != "application/json":
            return response.text
        return msgspec.json.decode(response.content, type=result or op.output or Any)
