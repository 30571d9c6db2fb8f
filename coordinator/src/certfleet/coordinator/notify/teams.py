"""Microsoft Teams incoming webhook (connector or Workflows): one Adaptive Card.

The card has a headline coloured by severity and a FactSet with the subject, event
kind, time and details. Teams webhooks accept Adaptive Cards up to schema 1.4 on
legacy connectors, so the card stays within 1.4. The webhook URL is the credential:
it lives in secrets and never appears in an error.

settings: none. secrets: ``webhook_url`` (https).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from certfleet.coordinator.notify.channels import Event, HttpRequest, check_url, post, require_str

__all__ = ["SECRETS", "SETTINGS", "CARD_CONTENT_TYPE", "build_request", "deliver", "validate"]

KIND = "teams"
SETTINGS = frozenset()
SECRETS = frozenset({"webhook_url"})
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_VERSION = "1.4"
MAX_FACTS = 40
_COLOURS = {"info": "Accent", "warning": "Warning", "critical": "Attention"}


def validate(settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    """Raise ValueError unless ``secrets['webhook_url']`` is a usable URL."""
    check_url(KIND, "secrets['webhook_url']", require_str(KIND, "secrets", secrets, "webhook_url"))


def _render(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def build_card(event: Event) -> dict[str, Any]:
    """The Adaptive Card (the attachment's ``content``) for ``event``."""
    when = datetime.fromtimestamp(event.occurred_at, UTC).isoformat()
    facts = [
        {"title": "Severity", "value": event.severity},
        {"title": "Event", "value": event.kind},
        {"title": "Subject", "value": event.subject},
        {"title": "Occurred", "value": when},
    ]
    items = list(event.details.items())
    facts += [{"title": key, "value": _render(value)} for key, value in items[:MAX_FACTS]]
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": " ".join(event.summary.split()),
            "weight": "Bolder",
            "size": "Medium",
            "color": _COLOURS[event.severity],
            "wrap": True,
        },
        {"type": "FactSet", "facts": facts},
    ]
    if len(items) > MAX_FACTS:
        body.append(
            {"type": "TextBlock", "text": f"{len(items) - MAX_FACTS} more details not shown", "isSubtle": True}
        )
    return {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
        "msteams": {"width": "Full"},
    }


def build_payload(event: Event) -> dict[str, Any]:
    """The webhook body: a message carrying the card as its only attachment."""
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": build_card(event)}],
    }


def build_request(settings: Mapping[str, Any], secrets: Mapping[str, str], event: Event) -> HttpRequest:
    body = json.dumps(build_payload(event), allow_nan=False).encode()
    return HttpRequest(url=secrets["webhook_url"], body=body)


async def deliver(
    settings: Mapping[str, Any],
    secrets: Mapping[str, str],
    event: Event,
    *,
    client: httpx.AsyncClient,
    timeout: float,
) -> None:
    """POST the card; raises DeliveryError (status only, never the URL) unless 2xx."""
    await post(KIND, build_request(settings, secrets, event), client=client, timeout=timeout)
