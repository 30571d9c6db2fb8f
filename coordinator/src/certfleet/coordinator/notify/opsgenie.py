"""Opsgenie Alert API: create an alert whose alias is the event's dedup key.

Opsgenie de-duplicates open alerts by ``alias``, so a repeated event raises the
existing alert's count instead of opening a new one. Creating an alert is
asynchronous: the API answers 202 Accepted with a request id. Field limits from the
API: ``message`` 130 characters, ``alias`` 512, ``description`` 15,000, ``details``
values are strings.

settings: ``api_url`` (default ``https://api.opsgenie.com``; the EU instance is
``https://api.eu.opsgenie.com``). secrets: ``api_key`` (an API integration key).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from certfleet.coordinator.notify.channels import (
    Event,
    HttpRequest,
    check_header_value,
    check_url,
    post,
    require_str,
)

__all__ = ["SECRETS", "SETTINGS", "DEFAULT_API_URL", "build_payload", "build_request", "deliver", "validate"]

KIND = "opsgenie"
SETTINGS = frozenset({"api_url"})
SECRETS = frozenset({"api_key"})
DEFAULT_API_URL = "https://api.opsgenie.com"
MAX_MESSAGE = 130
MAX_DESCRIPTION = 15000
_PRIORITIES = {"info": "P5", "warning": "P3", "critical": "P1"}


def validate(settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    """Raise ValueError unless the API URL and key are usable."""
    if "api_url" in settings:
        check_url(KIND, "settings['api_url']", require_str(KIND, "settings", settings, "api_url"))
    key = require_str(KIND, "secrets", secrets, "api_key")
    # The key travels in the Authorization header.
    check_header_value(KIND, "secrets['api_key']", key)
    if any(c.isspace() for c in key):
        raise ValueError(f"{KIND}: secrets['api_key'] must not contain whitespace")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _render(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_payload(event: Event) -> dict[str, Any]:
    """The create-alert body for ``event``."""
    when = datetime.fromtimestamp(event.occurred_at, UTC).isoformat()
    description = f"{event.summary}\n\nevent: {event.kind}\nsubject: {event.subject}\noccurred: {when}"
    details = {key: _render(value) for key, value in event.details.items()}
    details.update({"certfleet.kind": event.kind, "certfleet.subject": event.subject})
    return {
        "message": _clip(" ".join(event.summary.split()), MAX_MESSAGE),
        "alias": event.dedup_key,
        "description": _clip(description, MAX_DESCRIPTION),
        "priority": _PRIORITIES[event.severity],
        "entity": event.subject,
        "details": details,
        "source": "certfleet",
        "tags": ["certfleet", event.severity],
    }


def build_request(settings: Mapping[str, Any], secrets: Mapping[str, str], event: Event) -> HttpRequest:
    url = settings.get("api_url", DEFAULT_API_URL).rstrip("/") + "/v2/alerts"
    body = json.dumps(build_payload(event), allow_nan=False).encode()
    return HttpRequest(url=url, body=body, headers={"Authorization": f"GenieKey {secrets['api_key']}"})


async def deliver(
    settings: Mapping[str, Any],
    secrets: Mapping[str, str],
    event: Event,
    *,
    client: httpx.AsyncClient,
    timeout: float,
) -> None:
    """Create the alert; raises DeliveryError unless Opsgenie answers 2xx (202)."""
    await post(KIND, build_request(settings, secrets, event), client=client, timeout=timeout)
