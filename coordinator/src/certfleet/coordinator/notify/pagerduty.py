"""PagerDuty Events API v2: one ``trigger`` event per notification.

PagerDuty merges triggers that share a ``dedup_key`` into one open alert, so a
certificate that keeps failing to renew pages once, not once per attempt. The API
answers 202 Accepted on success, 400 on a malformed event and 429 when rate-limited.

settings: ``url`` (default the public endpoint). secrets: ``routing_key``.
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

__all__ = ["SECRETS", "SETTINGS", "DEFAULT_URL", "build_payload", "build_request", "deliver", "validate"]

KIND = "pagerduty"
SETTINGS = frozenset({"url"})
SECRETS = frozenset({"routing_key"})
DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
MAX_SUMMARY = 1024
# PagerDuty also knows "error"; certfleet's three severities map onto their namesakes.
_SEVERITIES = {"info": "info", "warning": "warning", "critical": "critical"}


def validate(settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    """Raise ValueError unless the endpoint URL and routing key are usable."""
    if "url" in settings:
        check_url(KIND, "settings['url']", require_str(KIND, "settings", settings, "url"))
    key = require_str(KIND, "secrets", secrets, "routing_key")
    check_header_value(KIND, "secrets['routing_key']", key)
    if any(c.isspace() for c in key):
        raise ValueError(f"{KIND}: secrets['routing_key'] must not contain whitespace")


def build_payload(routing_key: str, event: Event) -> dict[str, Any]:
    """The Events API v2 ``trigger`` body for ``event``."""
    summary = " ".join(event.summary.split())
    if len(summary) > MAX_SUMMARY:
        summary = summary[: MAX_SUMMARY - 1] + "…"
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": event.dedup_key,
        "payload": {
            "summary": summary,
            "source": "certfleet",
            "severity": _SEVERITIES[event.severity],
            "timestamp": datetime.fromtimestamp(event.occurred_at, UTC).isoformat(),
            "component": event.subject,
            "class": event.kind,
            "custom_details": dict(event.details),
        },
        "client": "certfleet",
    }


def build_request(settings: Mapping[str, Any], secrets: Mapping[str, str], event: Event) -> HttpRequest:
    body = json.dumps(build_payload(secrets["routing_key"], event), allow_nan=False).encode()
    return HttpRequest(url=settings.get("url", DEFAULT_URL), body=body)


async def deliver(
    settings: Mapping[str, Any],
    secrets: Mapping[str, str],
    event: Event,
    *,
    client: httpx.AsyncClient,
    timeout: float,
) -> None:
    """Enqueue the event; raises DeliveryError unless PagerDuty answers 2xx (202)."""
    await post(KIND, build_request(settings, secrets, event), client=client, timeout=timeout)
