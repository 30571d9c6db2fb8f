"""What every notification channel shares: the event, the one error, config checks,
and the one place an HTTP notification meets the network.

Channel modules build their request as a pure function of (settings, secrets, event)
and hand it to :func:`post`, which translates transport failures and status codes
into :class:`DeliveryError` once. Messages never carry secret values: Slack and Teams
webhook URLs, keys and passwords stay out of every exception this package raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

__all__ = ["SEVERITIES", "DeliveryError", "Event", "HttpRequest", "post"]

SEVERITIES = ("info", "warning", "critical")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})

DetailValue = str | int | float | bool | None


class DeliveryError(Exception):
    """A notification did not reach its channel.

    ``retryable`` is True for failures that may pass on a later attempt (network
    errors, timeouts, HTTP 5xx and 429, SMTP 4xx) and False for ones that will not
    (other HTTP 4xx, SMTP 5xx, invalid configuration, a server refusing STARTTLS).
    """

    def __init__(self, kind: str, message: str, *, retryable: bool, status_code: int | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.retryable = retryable
        self.status_code = status_code


@dataclass(frozen=True)
class Event:
    """One thing that happened, as every channel renders it.

    Raises ValueError on an unknown severity, an empty text field, a ``dedup_key``
    longer than 255 characters (PagerDuty's limit) or a detail value that is not a
    string, finite number, bool or None.
    """

    kind: str
    severity: str
    summary: str
    subject: str
    occurred_at: int
    details: Mapping[str, DetailValue]
    dedup_key: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
        for name in ("kind", "summary", "subject", "dedup_key"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string")
        if len(self.dedup_key) > 255:
            raise ValueError("dedup_key must be at most 255 characters")
        if not isinstance(self.occurred_at, int) or isinstance(self.occurred_at, bool):
            raise ValueError("occurred_at must be unix seconds as an int")
        for key, value in self.details.items():
            if not isinstance(key, str):
                raise ValueError("detail keys must be strings")
            if value is not None and not isinstance(value, str | int | float | bool):
                raise ValueError(f"detail {key!r} must be a string, number, bool or None")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"detail {key!r} must be a finite number")
        # A read-only copy, so a frozen event cannot change behind a channel's back.
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def as_json(self) -> dict[str, Any]:
        """The event as a JSON object with the dataclass field names."""
        return {
            "kind": self.kind,
            "severity": self.severity,
            "summary": self.summary,
            "subject": self.subject,
            "occurred_at": self.occurred_at,
            "details": dict(self.details),
            "dedup_key": self.dedup_key,
        }


@dataclass(frozen=True)
class HttpRequest:
    """A JSON POST a channel wants sent; built without I/O so tests can inspect it."""

    url: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def require_str(kind: str, where: str, config: Mapping[str, Any], key: str) -> str:
    """``config[key]`` as a non-empty string; ValueError naming the key (never the value)."""
    value = config.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{kind}: {where}[{key!r}] is required")
    return value


def check_header_value(kind: str, name: str, value: str) -> None:
    """Refuse CR, LF and NUL, which would let a value start a new header."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{kind}: {name} must not contain CR, LF or NUL")


def check_url(kind: str, name: str, url: str) -> None:
    """https only; plain http only to 127.0.0.1 or localhost (local receivers and tests)."""
    check_header_value(kind, name, url)
    if any(c.isspace() for c in url):
        raise ValueError(f"{kind}: {name} must not contain whitespace")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ValueError(f"{kind}: {name} is not a valid URL") from None
    if not host:
        raise ValueError(f"{kind}: {name} must be an absolute URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{kind}: {name} must not carry credentials")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and host in _LOOPBACK_HOSTS:
        return
    raise ValueError(f"{kind}: {name} must use https (http only to 127.0.0.1 or localhost)")


async def post(kind: str, request: HttpRequest, *, client: httpx.AsyncClient, timeout: float) -> httpx.Response:
    """Send ``request``; return the response if its status is 2xx.

    Raises DeliveryError: retryable on a network error, a timeout, 429 or 5xx; not
    retryable on any other status. Redirects are not followed, so a secret header or
    body never travels to a host the operator did not configure.
    """
    headers = {"Content-Type": "application/json", **request.headers}
    try:
        with trio.fail_after(timeout):
            response = await client.post(
                request.url, content=request.body, headers=headers, timeout=timeout, follow_redirects=False
            )
    except trio.TooSlowError:
        raise DeliveryError(kind, "timed out", retryable=True) from None
    except httpx.TransportError as exc:
        # The httpx message can quote the URL, which is a secret for Slack and Teams.
        raise DeliveryError(kind, f"network error ({type(exc).__name__})", retryable=True) from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    retryable = status == 429 or status >= 500
    raise DeliveryError(kind, f"HTTP {status}", retryable=retryable, status_code=status)
